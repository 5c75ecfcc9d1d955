# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for an async ollama_model pull and print its progress (percent, size, rate, ETA) while it runs."""

from __future__ import annotations

import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash
from ansible_collections.homelab.inference.plugins.module_utils.pull_progress import (
    TransferRate,
    progress_line,
    read_progress,
)

display = Display()


class ActionModule(ActionBase):
    """Polls ``ansible.builtin.async_status`` for the pull's job in one task (no retry loop, so no retry lines)."""

    TRANSFERS_FILES = False
    _requires_connection = True

    def _status(self, jid: str, async_dir: str, task_vars: dict, mode: str = "status") -> dict:
        return self._execute_module(
            module_name="ansible.legacy.async_status",
            module_args={"jid": jid, "mode": mode, "_async_dir": async_dir},
            task_vars=task_vars,
        )

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(
            argument_spec={
                "jid": {"type": "str", "required": True},
                "model": {"type": "str", "required": True},
                "progress_file": {"type": "path"},
                "timeout": {"type": "float", "default": 7200.0},
                "poll": {"type": "float", "default": 5.0},
                "show_every": {"type": "float", "default": 10.0},
            }
        )
        if args["poll"] <= 0 or args["timeout"] <= 0 or args["show_every"] < 0:
            return dict(result, failed=True, msg="timeout and poll must be positive seconds, show_every not negative")
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        rate = TransferRate()
        started = time.monotonic()
        shown_at = None
        shown = None
        line = None
        delay = min(0.25, args["poll"])  # doubles up to poll: a job with nothing to pull is seen done at once
        while True:
            status = self._status(args["jid"], async_dir, task_vars)
            if status.get("finished") or (status.get("failed") and not status.get("started")):
                if status.get("finished"):
                    self._status(args["jid"], async_dir, task_vars, mode="cleanup")
                status.pop("invocation", None)
                status.pop("started", None)
                status.pop("finished", None)
                merged = merge_hash(result, status)
                merged["wait_seconds"] = round(time.monotonic() - started, 1)
                return merged
            now = time.monotonic()
            data = read_progress(args["progress_file"]) if args["progress_file"] else None
            if data is not None:
                rate.add(now, int(data.get("completed") or 0))
                line = progress_line(data, rate.bytes_per_second())
                # a line when the status changes, else every show_every seconds: readable in default output
                if line and (shown_at is None or data.get("status") != shown or now - shown_at >= args["show_every"]):
                    display.display(f"  {line}")
                    shown_at, shown = now, data.get("status")
            if now - started > args["timeout"]:
                return dict(
                    result,
                    failed=True,
                    msg=f"pull of {args['model']} did not finish within {args['timeout']:g} s"
                    + (f" (last: {line})" if line else "")
                    + "; raise ollama_pull_timeout or check the network to the registry",
                )
            time.sleep(delay)
            delay = min(delay * 2, args["poll"])
