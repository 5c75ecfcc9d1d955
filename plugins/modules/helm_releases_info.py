#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
---
module: helm_releases_info
short_description: Read the status and values of several Helm releases of a namespace in one call
description:
  - Reads the releases named in O(release_names) with one C(helm list) of the namespace and one C(helm get values)
    per release found, in one module run. M(kubernetes.core.helm_info) reads one release per run and also reads its
    manifest, notes and hooks (five C(helm) calls); an upgrade's preflight needs only the status and values of
    three releases.
  - Each result has the shape of a loop of M(kubernetes.core.helm_info) over the names (C(item), and C(status) when
    the release exists), so the results can stand in for such a loop's C(results).
  - Read-only; runs in check mode.
version_added: "0.2.0"
author:
  - home-lab inference project (!UNKNOWN)
options:
  release_names:
    description:
      - Names of the releases to read. A name that is not installed (in the states of O(release_state)) gets a
        result without C(status).
    type: list
    elements: str
    required: true
  release_namespace:
    description:
      - Kubernetes namespace of the releases.
    type: str
    required: true
    aliases: [namespace]
  release_state:
    description:
      - Release states to list, as C(helm list) flags. Empty lists what C(helm list) lists by default (deployed
        and failed).
      - V(all) also finds a release stuck in C(pending-install), C(pending-upgrade) or C(pending-rollback).
    type: list
    elements: str
    choices: [all, deployed, failed, pending, superseded, uninstalled, uninstalling]
    default: []
  get_all_values:
    description:
      - Read the computed values (the chart's defaults merged with the user-supplied ones, C(helm get values --all))
        instead of the user-supplied values only.
    type: bool
    default: false
extends_documentation_fragment:
  - kubernetes.core.helm_common_options
  - homelab.inference.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - helm 3 (https://helm.sh), on PATH or at O(binary_path)
  - PyYAML
notes:
  - "Upstream: C(helm list --output yaml) and C(helm get values --output yaml)
    (https://helm.sh/docs/helm/helm_list/, https://helm.sh/docs/helm/helm_get_values/), run through
    kubernetes.core's C(AnsibleHelmModule), so the authentication options and their environment fallbacks are
    those of the kubernetes.core Helm modules."
  - In the C(homelab.inference.helm) action group, which extends C(kubernetes.core.helm), so one C(module_defaults)
    entry gives this module and the kubernetes.core Helm modules the same kubeconfig.
seealso:
  - module: kubernetes.core.helm_info
"""

EXAMPLES = r"""
- name: Read the tier's releases, a release stuck in a pending operation included
  homelab.inference.helm_releases_info:
    release_names: [ollama, vllm, litellm]
    release_namespace: inference
    release_state: [all]
  register: releases

- name: Show the status of each
  ansible.builtin.debug:
    msg: "{{ item.item }}: {{ item.status.status | default('not installed') }}"
  loop: "{{ releases.results }}"
"""

RETURN = r"""
results:
  description: One entry per name of O(release_names), in that order.
  returned: always
  type: list
  elements: dict
  contains:
    item:
      description: The release name.
      type: str
      sample: ollama
    status:
      description:
        - The release as C(helm list) gives it, plus its C(values); absent when the release is not installed.
        - The C(status) of M(kubernetes.core.helm_info) without C(manifest), C(notes) and C(hooks).
      type: dict
      returned: when the release is installed
      sample:
        name: ollama
        namespace: inference
        revision: "3"
        status: deployed
        chart: ollama-0.1.0
        app_version: "0.12.6"
        updated: "2026-12-07 10:29:15.000000000 +0000 UTC"
        values: {model: {name: "qwen2.5:14b"}}
"""

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.helm import AnsibleHelmModule
from ansible_collections.kubernetes.core.plugins.module_utils.helm_args_common import (
    HELM_AUTH_ARG_SPEC,
    HELM_AUTH_MUTUALLY_EXCLUSIVE,
)

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - reported by AnsibleHelmModule.run_helm_command
    HAS_YAML = False

RELEASE_STATES = ("all", "deployed", "failed", "pending", "superseded", "uninstalled", "uninstalling")


def module_args():
    """The kubernetes.core Helm authentication options, and the releases to read."""
    spec = copy.deepcopy(HELM_AUTH_ARG_SPEC)
    spec.update(
        release_names=dict(type="list", elements="str", required=True),
        release_namespace=dict(type="str", required=True, aliases=["namespace"]),
        release_state=dict(type="list", elements="str", choices=list(RELEASE_STATES), default=[]),
        get_all_values=dict(type="bool", default=False),
    )
    return spec


class HelmReleasesInfo:
    """One ``helm list`` of the namespace, then ``helm get values`` of each requested release it lists."""

    def __init__(self, module):
        self.module = module
        self.params = module.params

    def run(self):
        listed = {release.get("name"): release for release in self.list_releases()}
        results = []
        for name in self.params["release_names"]:
            release = listed.get(name)
            if release is None:
                results.append({"item": name})
                continue
            release = dict(release, values=self.module.get_values(name, self.params["get_all_values"]))
            results.append({"item": name, "status": release})
        self.module.exit_json(changed=False, results=results)

    def list_releases(self):
        """The namespace's releases in the requested states (``helm list --output yaml``; at most 256, Helm's page)."""
        command = self.module.get_helm_binary() + " list --output=yaml"
        for state in self.params["release_state"]:
            command += f" --{state}"
        _rc, out, _err = self.module.run_helm_command(command)
        return yaml.safe_load(out) or []


def main():
    module = AnsibleHelmModule(
        argument_spec=module_args(),
        mutually_exclusive=HELM_AUTH_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    HelmReleasesInfo(module).run()


if __name__ == "__main__":
    main()
