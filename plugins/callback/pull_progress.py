# -*- coding: utf-8 -*-
# Copyright: contributors to this repository
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Show the progress of running Ollama model pulls while a play waits for them."""

from __future__ import annotations

DOCUMENTATION = r"""
name: pull_progress
type: aggregate
short_description: Print model pull progress while a play waits for an async ollama_model pull
description:
  - Model pulls take minutes (qwen2.5:14b is about 9 GB). The ollama role starts them as async jobs that write
    their progress to a JSON file (the C(progress_file) option of the ollama_model module, with C(model),
    C(status), C(completed) and C(total) in bytes, C(percent), C(done)), then waits for them with
    M(ansible.builtin.async_status) in a retry loop whose task name ends with C(progress in <directory>).
  - On every retry of such a wait, this callback reads the progress files in that directory written since the
    playbook started and not finished yet, and prints one line for each, for example
    C(pull qwen2.5:14b 45.2% 4.07/9.00 GB pulling 6e4c38e1172f).
  - Enable it with C(callbacks_enabled = pull_progress) in C(ansible.cfg).
"""

import glob
import json
import os
import time

from ansible.plugins.callback import CallbackBase

MARKER = "progress in "


def progress_line(path):
    """One line describing the pull whose progress file is ``path``, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    total = data.get("total") or 0
    completed = data.get("completed") or 0
    percent = data.get("percent")
    if percent is None and total:
        percent = 100.0 * completed / total
    size = f" {completed / 1e9:.2f}/{total / 1e9:.2f} GB" if total else ""
    share = f" {percent:.1f}%" if percent is not None else ""
    return f"pull {data.get('model', '?')}{share}{size} {data.get('status', '')}".rstrip()


class CallbackModule(CallbackBase):
    """Prints pull progress on the retries of the ollama role's wait task."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pull_progress"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._started = time.time()

    def v2_playbook_on_start(self, playbook):
        self._started = time.time()

    def v2_runner_retry(self, result):
        if result._task.action not in ("async_status", "ansible.builtin.async_status"):
            return
        name = result._task.get_name()
        if MARKER not in name:
            return
        directory = name.rsplit(MARKER, 1)[-1].strip()
        for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
            try:
                if os.path.getmtime(path) < self._started:
                    continue  # left over from an earlier run
                with open(path, encoding="utf-8") as handle:
                    if json.load(handle).get("done"):
                        continue
            except (OSError, ValueError):
                continue
            line = progress_line(path)
            if line:
                self._display.display(f"  {line}")
