#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, annotations, division, print_function

DOCUMENTATION = r"""
module: llm_probe
short_description: Measure what clients see through the LiteLLM proxy while an upgrade or rollback runs
description:
  - Sends a short non-streaming chat completion (C(POST /v1/chat/completions), the OpenAI chat API the LiteLLM
    proxy serves) to every alias in O(aliases) every O(interval) seconds, one thread per alias, as a client would,
    and counts the requests that got no answer and the longest time each alias gave none.
  - Runs until O(stop_file) exists, the process O(owner_pid) is gone (a killed controller leaves no probe behind),
    or O(max_duration) seconds have passed. Start it with C(async) and C(poll=0) before the first change, create
    the stop file at the end, and wait for it with M(ansible.builtin.async_status) to get the figures.
  - A request fails when no answer comes back within O(timeout), that is an HTTP error status (LiteLLM answers 500 when
    the backend and every fallback failed), a refused or reset connection, a timeout. An answer from a fallback
    model group is an answer (counted in C(fallbacks)). A failed request is not retried.
  - Each request opens a connection of its own (no keep-alive), so it is routed as a new client's request is; the
    Service's proxy (kube-proxy) picks a ready endpoint for every new connection. A kept-alive connection stays with
    the Pod it was opened to, also while that Pod shuts down; closing it races with a request sent at that moment,
    which a pooling client retries (Paperless-AI's OpenAI SDK retries twice) and is not what this probe measures.
  - Read-only, C(changed) is always false. In check mode it returns at once without sending anything.
version_added: "0.1.0"
author: home-lab inference project (!UNKNOWN)
extends_documentation_fragment:
  - homelab.inference.openai_api
options:
  aliases:
    description:
      - The model aliases to request (C(model_name)s of the LiteLLM C(model_list)), for example
        C([vllm-qwen, ollama-qwen]).
    type: list
    elements: str
    required: true
  interval:
    description:
      - Seconds between the starts of two requests to one alias. Requests to one alias never overlap; a slower
        answer delays the next request.
    type: float
    default: 1.0
  timeout:
    description:
      - Seconds a request may take before it counts as failed. Use what the clients wait, for example 600 for
        Paperless-AI (the OpenAI Node SDK's default timeout).
    type: float
    default: 30
  max_tokens:
    description:
      - C(max_tokens) of each request, so a probe costs the model almost nothing.
    type: int
    default: 4
  stop_file:
    description:
      - The probe stops once this file exists (it is not removed).
    type: path
    required: true
  owner_pid:
    description:
      - PID of the process the probe belongs to (the C(ansible-playbook) process, C(controller_pid) of
        M(homelab.inference.inference_run)); the probe stops when it is gone.
    type: int
  max_duration:
    description:
      - Seconds after which the probe stops in any case. Keep the task's C(async) above it.
    type: float
    default: 7200
  pause_file:
    description:
      - While this file exists, the aliases it lists (one per line) are not requested, so that probe requests do
        not queue with a gate's on the runtime that serves them; the time is reported per alias (C(paused_s)).
    type: path
  events_file:
    description:
      - When set, every request is appended to this file as a JSON line (C(alias), C(start) in seconds since the
        epoch, C(duration) in seconds, C(ok), C(error), C(model_group), C(fallback)) as it happens.
    type: path
requirements:
  - httpx
notes:
  - The probe's load on the tier is one short request per alias and interval; on a CPU-only Ollama keep
    O(interval) at a second or more.
seealso:
  - module: homelab.inference.litellm_route_check
"""

EXAMPLES = r"""
- name: Start the client probe before the first change
  llm_probe:
    api_url: http://litellm.ml.svc.cluster.local:4000/v1
    api_key: "{{ litellm_master_key }}"
    aliases: [vllm-qwen, ollama-qwen]
    interval: 0.5
    stop_file: "{{ report_dir }}/probe.stop"
    owner_pid: "{{ inference_run_lock.controller_pid }}"
    max_duration: 7200
  async: 7260
  poll: 0
  register: probe_job

- name: Stop the probe
  ansible.builtin.file:
    path: "{{ report_dir }}/probe.stop"
    state: touch
    mode: "0640"

- name: Collect its figures
  ansible.builtin.async_status:
    jid: "{{ probe_job.ansible_job_id }}"
  register: probe
  until: probe.finished
  retries: 60
  delay: 1
"""

RETURN = r"""
probe:
  description: What clients saw, per alias and in total.
  returned: success
  type: dict
  contains:
    summary:
      description: >-
        One line for people, for example
        C(0 of 812 requests failed in 406 s; ollama-qwen: 0 of 406 failed, longest gap 0 s, ...).
      type: str
    started:
      description: When the probe started (ISO 8601, UTC).
      type: str
    finished:
      description: When it stopped (ISO 8601, UTC).
      type: str
    duration_s:
      description: Seconds it ran.
      type: float
    interval_s:
      description: O(interval), seconds.
      type: float
    stopped_by:
      description: Why it stopped, C(stop file), C(owner gone) or C(max duration).
      type: str
    failed:
      description: Requests without an answer, all aliases.
      type: int
    longest_gap_s:
      description: The longest time an alias gave no answer, seconds, all aliases.
      type: float
    aliases:
      description:
        - Alias -> C(requests), C(failed), C(fallbacks) (answers a fallback model group gave),
          C(longest_gap_s) (from the start of the first failed request of a run of failures to the end of the
          next answer, or the end of the probe; 0 without failures), C(slowest_s) (the slowest answer),
          C(errors) (C(message), C(count), C(first), C(last)), C(model_groups) (model group -> answers),
          C(paused_s) (seconds its requests were paused through O(pause_file)).
      type: dict
  sample:
    started: "2026-11-30T10:15:00.000+00:00"
    finished: "2026-11-30T10:21:40.000+00:00"
    duration_s: 400.0
    interval_s: 0.5
    stopped_by: stop file
    failed: 0
    longest_gap_s: 0.0
    aliases:
      ollama-qwen: {requests: 790, failed: 0, fallbacks: 0, longest_gap_s: 0.0, slowest_s: 2.1, errors: [],
                    model_groups: {ollama-qwen: 790}, paused_s: 0.0}
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.homelab.inference.plugins.module_utils.llm_probe import ClientProbe, paused_aliases, pid_alive
from ansible_collections.homelab.inference.plugins.module_utils.openai_client import (
    HAS_HTTPX,
    OpenAIClient,
    openai_api_argument_spec,
    verify_from_params,
)


def module_args() -> dict:
    spec = openai_api_argument_spec(timeout=30.0)
    spec.update(
        aliases=dict(type="list", elements="str", required=True),
        interval=dict(type="float", default=1.0),
        max_tokens=dict(type="int", default=4, no_log=False),
        stop_file=dict(type="path", required=True),
        owner_pid=dict(type="int"),
        max_duration=dict(type="float", default=7200.0),
        events_file=dict(type="path"),
        pause_file=dict(type="path"),
    )
    return spec


class Probe:
    """Check the options, then run a :class:`ClientProbe` until the stop file, the owner's end or the deadline."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        self.deadline = time.monotonic() + self.params["max_duration"]

    def run(self) -> None:
        p = self.params
        if not HAS_HTTPX:
            self.module.fail_json(msg=missing_required_lib("httpx"))
        for name in ("interval", "timeout", "max_duration"):
            if p[name] <= 0:
                self.module.fail_json(msg=f"{name} must be a positive number of seconds, got {p[name]}")
        if not p["aliases"]:
            self.module.fail_json(msg="aliases is empty: name at least one LiteLLM model alias to probe")
        if self.module.check_mode:
            self.module.exit_json(changed=False, probe={})
        probe = ClientProbe(
            self.client,
            p["aliases"],
            interval=p["interval"],
            timeout=p["timeout"],
            max_tokens=p["max_tokens"],
            should_stop=self.should_stop,
            events_file=p["events_file"],
            paused=self.paused,
        )
        self.module.exit_json(changed=False, probe=probe.run())

    def should_stop(self) -> str | None:
        """Why the probe stops now (stop file, owner gone, max duration), or None."""
        if os.path.exists(self.params["stop_file"]):
            return "stop file"
        if self.params["owner_pid"] and not pid_alive(self.params["owner_pid"]):
            return "owner gone"
        if time.monotonic() >= self.deadline:
            return "max duration"
        return None

    def paused(self, alias: str) -> bool:
        """Whether the pause file names ``alias`` (a gate measures the runtime behind it)."""
        return alias in paused_aliases(self.params["pause_file"])

    def client(self) -> OpenAIClient:
        """A new connection per request, routed afresh as a new client's: see the module's notes."""
        p = self.params
        return OpenAIClient(
            p["api_url"], api_key=p["api_key"], timeout=p["timeout"], verify=verify_from_params(p), keep_alive=False
        )


def main():
    module = AnsibleModule(argument_spec=module_args(), supports_check_mode=True)
    Probe(module).run()


if __name__ == "__main__":
    main()
