#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
---
module: ollama_model
short_description: Pull or remove a model on an Ollama server through its HTTP API
description:
  - Makes sure a model tag is present on (pulled to) or absent from an Ollama server.
  - Idempotent through C(GET /api/tags); a name without tag means C(:latest), so C(phi4-mini) and
    C(phi4-mini:latest) are the same model.
  - "Pulls with C(POST /api/pull) and reads the whole NDJSON progress stream. Ollama answers HTTP 200 first and
    reports failures later as an C(error) line of the stream (for example C(pull model manifest: file does not
    exist) for a tag that does not exist); the module fails on any such line with Ollama's text and the model name."
  - An interrupted pull resumes where it stopped when the module runs again (Ollama keeps completed bytes).
  - Removes with C(DELETE /api/delete).
  - Ansible modules cannot stream output. To watch a long pull, set O(progress_file) and run the task with
    C(async) and C(poll=0), then read the file while the pull runs (see EXAMPLES).
  - Supports check mode (reports what would change, pulls and deletes nothing) and diff mode (model list
    before/after).
version_added: "0.1.0"
author:
  - home-lab inference project (!UNKNOWN)
options:
  name:
    description:
      - Model tag as C(ollama pull) takes it, for example V(qwen2.5:14b) or V(phi4-mini).
    type: str
    required: true
    aliases: [model]
  state:
    description:
      - V(present) pulls the model when it is missing; V(absent) removes it when it is there.
    type: str
    choices: [present, absent]
    default: present
  progress_file:
    description:
      - Path of a JSON file the module rewrites while the pull streams (at most about four times a second), with
        C(model), C(status), C(completed) and C(total) (bytes), C(percent) (0-100), C(done) (bool), C(error),
        C(started_at) and C(updated_at) (epoch seconds).
      - Written also when nothing needs pulling (C(done=true), C(status=present)), so a watcher always ends.
      - Not written in check mode.
    type: path
  stop_with_pid:
    description:
      - PID of the C(ansible-playbook) process of the run (M(homelab.inference.inference_run) returns it as
        C(controller_pid)). While a pull streams, the module checks every second that this process still runs; when
        it is gone (the run was killed, stopped with Ctrl-C, or the controller lost), the module writes
        C(status=stopped) to O(progress_file) and exits at once, closing its connection, so Ollama cancels the pull
        (completed bytes stay; a later pull resumes).
      - Needed for pulls run with C(async), whose job outlives the playbook that started it.
    type: int
extends_documentation_fragment:
  - homelab.inference.attributes
  - homelab.inference.ollama
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - "Upstream API: https://github.com/ollama/ollama/blob/main/docs/api.md (C(/api/tags), C(/api/pull),
    C(/api/delete))."
  - O(timeout) bounds the silence between two progress lines, not the whole pull; a 9 GB model takes minutes.
  - Pulling through the API replaces the Ollama chart's postStart pull hook, which gives no logs and blocks
    readiness.
seealso:
  - name: Ollama API reference
    description: The HTTP API this module uses.
    link: https://github.com/ollama/ollama/blob/main/docs/api.md
"""

EXAMPLES = r"""
- name: Pull qwen2.5:14b on the CPU worker's Ollama
  ollama_model:
    api_url: http://ollama.ml.svc.cluster.local:11434
    name: qwen2.5:14b
    timeout: 120

- name: Remove the old model
  ollama_model:
    api_url: http://ollama.ml.svc.cluster.local:11434
    name: qwen2.5:3b
    state: absent

# Watch a long pull: start it in the background, then wait for it with ollama_pull_wait, which prints the
# progress file (percent, size, rate, ETA) as it goes and returns the pull's result.
- name: Start pulling phi4-mini in the background
  ollama_model:
    api_url: "{{ ollama_api_url }}"
    name: phi4-mini
    progress_file: /tmp/ollama-pull-phi4-mini.json
  async: 3600
  poll: 0
  register: pull_job

- name: Wait for the pull (fails with Ollama's error text if the pull failed)
  homelab.inference.ollama_pull_wait:
    jid: "{{ pull_job.ansible_job_id }}"
    model: phi4-mini
    progress_file: /tmp/ollama-pull-phi4-mini.json
  register: pull_result

- name: What would change (check mode, with diff)
  ollama_model:
    api_url: "{{ ollama_api_url }}"
    name: qwen2.5:14b
  check_mode: true
  diff: true
"""

RETURN = r"""
name:
  description: The normalized model name (with tag).
  returned: always
  type: str
  sample: phi4-mini:latest
digest:
  description: Manifest digest from C(/api/tags) (hex, no C(sha256:) prefix); null when the model is absent
    or not yet pulled in check mode.
  returned: always
  type: str
  sample: 4923ac2444ba08b5ba0b2d9f3ab5d8c1c5b1a3e9f0e7f4c6d3b2a1908f7e6d5c
size:
  description: Size on disk in bytes from C(/api/tags); null when the model is absent or in check mode
    before a pull.
  returned: always
  type: int
  sample: 2500000484
bytes_pulled:
  description: Bytes transferred by this run (a resumed pull counts only the rest; 0 when nothing was pulled).
  returned: always
  type: int
  sample: 2500000484
duration:
  description: Seconds spent pulling or deleting (0 when nothing changed).
  returned: always
  type: float
  sample: 51.2
models:
  description: Names of the models on the server after the task (what they would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [llama3.2:1b, phi4-mini:latest]
"""

import json
import os
import threading
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.homelab.inference.plugins.module_utils.files import write_atomic
from ansible_collections.homelab.inference.plugins.module_utils.llm_probe import pid_alive
from ansible_collections.homelab.inference.plugins.module_utils.model_names import normalize_name, same_model
from ansible_collections.homelab.inference.plugins.module_utils.ollama_client import (
    OllamaError,
    client_from_module,
    ollama_argument_spec,
)


def stop_with(pid, on_stop, interval=1.0):
    """Start a daemon thread that calls ``on_stop()`` once process ``pid`` is gone (checked every ``interval``
    seconds); the caller's ``on_stop`` ends the process, which closes the pull's connection."""

    def watch():
        while pid_alive(pid):
            time.sleep(interval)
        on_stop()

    thread = threading.Thread(target=watch, name=f"stop-with-{pid}", daemon=True)
    thread.start()
    return thread


class ProgressFile:
    """Rewrites ``path`` atomically with the pull progress (JSON), at most every ``interval`` seconds."""

    def __init__(self, path, model, interval=0.25):
        self.path = path
        self.model = model
        self.interval = interval
        self.started = time.time()
        self._last = 0.0
        self.state = {
            "model": model,
            "status": "starting",
            "completed": 0,
            "total": 0,
            "percent": 0.0,
            "done": False,
            "error": None,
            "started_at": self.started,
            "updated_at": self.started,
        }

    def write(self, force=False, **changes):
        self.state.update(changes)
        now = time.time()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self.state["updated_at"] = now
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        write_atomic(self.path, json.dumps(self.state))

    def on_progress(self, item):
        force = item.get("status") == "success"
        self.write(
            force=force,
            status=item.get("status", ""),
            completed=item.get("completed_bytes", 0),
            total=item.get("total_bytes", 0),
            percent=item.get("percent", 0.0),
        )


def find(models, name):
    for entry in models:
        if same_model(entry.get("name") or entry.get("model") or "", name):
            return entry
    return None


def names(models):
    return sorted(entry.get("name") or entry.get("model") for entry in models)


def module_args() -> dict:
    argument_spec = ollama_argument_spec()
    argument_spec.update(
        name={"type": "str", "required": True, "aliases": ["model"]},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        progress_file={"type": "path"},
        stop_with_pid={"type": "int"},
    )
    return argument_spec


class OllamaModel:
    """One call of the module: compare with ``/api/tags``, then pull or delete, then read ``/api/tags`` again."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.state = module.params["state"]
        try:
            self.name = normalize_name(module.params["name"])
        except ValueError as exc:
            module.fail_json(msg=str(exc))
        path = module.params["progress_file"]
        self.progress = ProgressFile(path, self.name) if path else None
        self.client = client_from_module(module)

    def run(self) -> dict:
        result, before = self._plan()
        if self.module.check_mode:
            return result
        if not result["changed"]:
            if self.progress is not None:
                size = result["size"] or 0
                self.progress.write(force=True, status=self.state, completed=size, total=size, percent=100.0, done=True)
            return result
        started = time.monotonic()
        if self.state == "present":
            result["bytes_pulled"] = self._pull(before)
        else:
            result["changed"] = self._remove()
        result["duration"] = round(time.monotonic() - started, 3)
        self._read_after(result)
        return result

    def _tags(self, what: str) -> list:
        try:
            return self.client.tags()
        except OllamaError as exc:
            self.module.fail_json(msg=f"cannot list the models {what}: {exc}", name=self.name, error=exc.message)

    def _plan(self) -> tuple[dict, list]:
        """The result before any change (what check mode returns) and the models present now."""
        before_models = self._tags(f"of {self.client.base_url}")
        entry = find(before_models, self.name)
        before = names(before_models)
        present = self.state == "present"
        changed = (entry is None) if present else (entry is not None)
        if present:
            after = sorted(set(before) | {self.name}) if changed else before
        else:
            after = [n for n in before if not same_model(n, self.name)]
        result = {
            "changed": changed,
            "name": self.name,
            "digest": entry.get("digest") if entry and present else None,
            "size": entry.get("size") if entry and present else None,
            "bytes_pulled": 0,
            "duration": 0.0,
            "models": after,
        }
        if self.module._diff:
            header = f"{self.client.base_url} models"
            result["diff"] = {
                "before_header": header,
                "after_header": header,
                "before": "".join(n + "\n" for n in before),
                "after": "".join(n + "\n" for n in after),
            }
        return result, before

    def _pull(self, before: list) -> int:
        """Pull the model (bytes actually transferred); the pull stops when the run's controller is gone."""
        progress = self.progress
        if progress is not None:
            progress.write(force=True, status="pulling manifest")
        if self.module.params["stop_with_pid"]:

            def controller_gone():
                if progress is not None:
                    progress.write(force=True, status="stopped", error="the run's controller is gone", done=True)
                os._exit(3)  # closes the connection: Ollama cancels the pull

            stop_with(self.module.params["stop_with_pid"], controller_gone)
        try:
            pulled = self.client.pull(self.name, on_progress=progress.on_progress if progress else None)
        except OllamaError as exc:
            if progress is not None:
                progress.write(force=True, status="error", error=exc.message, done=True)
            self.module.fail_json(
                msg=f"pulling {self.name} from {self.client.base_url} failed: {exc.message}",
                name=self.name,
                error=exc.message,
                status=exc.status,
                models=before,
            )
        if progress is not None:
            progress.write(
                force=True,
                status="success",
                completed=pulled["completed"],
                total=pulled["total"],
                percent=100.0,
                done=True,
            )
        return pulled["bytes_pulled"]

    def _remove(self) -> bool:
        """Delete the model; False when it was gone meanwhile (nothing left to do)."""
        removed = True
        try:
            self.client.delete(self.name)
        except OllamaError as exc:
            if exc.status != 404:
                self.module.fail_json(
                    msg=f"removing {self.name} failed: {exc.message}", name=self.name, error=exc.message
                )
            removed = False
        if self.progress is not None:
            self.progress.write(force=True, status="absent", done=True)
        return removed

    def _read_after(self, result: dict) -> None:
        after_models = self._tags("after the change")
        entry = find(after_models, self.name)
        if self.state == "present" and entry is None:
            self.module.fail_json(
                msg=f"pull of {self.name} reported success but the model is not in /api/tags", name=self.name
            )
        result["models"] = names(after_models)
        if entry is not None and self.state == "present":
            result["digest"] = entry.get("digest")
            result["size"] = entry.get("size")


def main():
    module = AnsibleModule(argument_spec=module_args(), supports_check_mode=True)
    module.exit_json(**OllamaModel(module).run())


if __name__ == "__main__":
    main()
