#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
---
module: k8s_objects_info
short_description: Read several kinds of Kubernetes objects in one call
description:
  - Reads each entry of O(objects) (a kind, and optionally a namespace, a name and label selectors) with one API
    client, in one module run. Each result has the shape of a M(kubernetes.core.k8s_info) result (C(resources),
    C(api_found)), so a list of reads that a play made with one M(kubernetes.core.k8s_info) task each (one Python
    process, one API discovery and one client set-up each) is made at once.
  - The reads go through kubernetes.core's C(K8sService.find), the function behind M(kubernetes.core.k8s_info), with
    its authentication options and their environment fallbacks.
  - Read-only; runs in check mode.
version_added: "0.2.0"
author:
  - home-lab inference project (!UNKNOWN)
options:
  objects:
    description:
      - The reads, in order. The results come back in the same order.
    type: list
    elements: dict
    required: true
    suboptions:
      kind:
        description:
          - Kind of the objects (V(Node), V(ConfigMap), V(Deployment), ...).
        type: str
        required: true
      api_version:
        description:
          - API group and version of the kind (V(v1), V(apps/v1)).
        type: str
        default: v1
      namespace:
        description:
          - Namespace to read in; none for cluster-scoped kinds or every namespace.
        type: str
      name:
        description:
          - Name of one object; none reads all objects of the kind (in the namespace).
        type: str
      label_selectors:
        description:
          - Label selectors the objects must match (C(app.kubernetes.io/instance=ollama)).
        type: list
        elements: str
        default: []
      item:
        description:
          - Any value, returned unchanged as the result's C(item) (for example the inventory entry the read is
            for), as a loop's results carry the loop item.
        type: raw
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - homelab.inference.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - kubernetes >= 24.2.0 (the Python client)
notes:
  - "Upstream: the Kubernetes API's get and list of each kind
    (https://kubernetes.io/docs/reference/using-api/api-concepts/), through kubernetes.core's module_utils."
  - In the C(homelab.inference.k8s) action group, which extends C(kubernetes.core.k8s), so one C(module_defaults)
    entry gives this module and the kubernetes.core modules the same kubeconfig.
  - An object that does not exist gives C(resources=[]), as in M(kubernetes.core.k8s_info); an API error fails the
    module naming the read.
seealso:
  - module: kubernetes.core.k8s_info
"""

EXAMPLES = r"""
- name: Read the Nodes, LiteLLM's ConfigMap and the Deployments of the namespace at once
  homelab.inference.k8s_objects_info:
    objects:
      - kind: Node
      - {kind: ConfigMap, namespace: ml, name: litellm-config}
      - {kind: Deployment, api_version: apps/v1, namespace: ml}
  register: state

- name: Show the nodes
  ansible.builtin.debug:
    msg: "{{ state.results[0].resources | map(attribute='metadata.name') | list }}"
"""

RETURN = r"""
results:
  description: One entry per entry of O(objects), in that order.
  returned: always
  type: list
  elements: dict
  contains:
    item:
      description: The entry's O(objects[].item); null when it had none.
      type: raw
    object:
      description: The read (kind, api_version, namespace, name, label_selectors).
      type: dict
    resources:
      description: The objects found, each as the API returns it; empty when there are none.
      type: list
      elements: dict
    api_found:
      description: Whether the API server serves the kind.
      type: bool
"""

import copy

from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.service import K8sService

READ_KEYS = ("kind", "api_version", "namespace", "name", "label_selectors")


def module_args():
    """The kubernetes.core authentication options, and the reads."""
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        objects=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                kind=dict(type="str", required=True),
                api_version=dict(type="str", default="v1"),
                namespace=dict(type="str"),
                name=dict(type="str"),
                label_selectors=dict(type="list", elements="str", default=[]),
                item=dict(type="raw"),
            ),
        )
    )
    return spec


class K8sObjectsInfo:
    """Every read of ``objects`` with one client (kubernetes.core's K8sService.find, k8s_info's function)."""

    def __init__(self, module):
        self.module = module

    def run(self):
        try:
            service = K8sService(get_api_client(self.module), self.module)
        except CoreException as exc:
            self.module.fail_from_exception(exc)
        results = [self.read(service, index, entry) for index, entry in enumerate(self.module.params["objects"])]
        self.module.exit_json(changed=False, results=results)

    def read(self, service, index, entry):
        """One read, as a k8s_info result plus the entry's ``item`` and the read itself."""
        what = {key: entry.get(key) for key in READ_KEYS}
        try:
            found = service.find(
                entry["kind"],
                entry["api_version"],
                name=entry.get("name"),
                namespace=entry.get("namespace"),
                label_selectors=entry.get("label_selectors") or [],
            )
        except CoreException as exc:
            place = "/".join(p for p in (entry.get("namespace"), entry.get("name")) if p)
            self.module.fail_json(
                msg=f"objects[{index}]: cannot read {entry['kind']} {place or '(all)'}: {exc}", object=what
            )
        return dict(found, item=entry.get("item"), object=what)


def main():
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=module_args(), supports_check_mode=True)
    K8sObjectsInfo(module).run()


if __name__ == "__main__":
    main()
