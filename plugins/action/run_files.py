# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a run's files (report, snapshot) into its directory on the controller, atomically, without module runs."""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase
from ansible_collections.homelab.inference.plugins.module_utils.files import write_atomic


class ActionModule(ActionBase):
    """See the module's documentation (plugins/modules/run_files.py)."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(
            argument_spec={
                "dir": {"type": "path", "required": True},
                "files": {"type": "dict", "required": True},
                "mode": {"type": "str", "default": "0640"},
                "dir_mode": {"type": "str", "default": "0750"},
            }
        )
        result.update(changed=False, paths=[])
        try:
            mode, dir_mode = int(args["mode"], 8), int(args["dir_mode"], 8)
        except ValueError:
            return dict(result, failed=True, msg="mode and dir_mode must be octal strings such as '0640'")
        bad = [name for name in args["files"] if not name or os.sep in name or name in (".", "..")]
        if bad:
            return dict(result, failed=True, msg=f"files: {bad} are not plain file names (no directory part)")
        not_text = [name for name, content in args["files"].items() if not isinstance(content, str)]
        if not_text:
            return dict(
                result,
                failed=True,
                msg=f"files: the content of {not_text} is not text; render it first (for example with to_nice_json)",
            )
        if self._play_context.check_mode:
            return result
        try:
            if not os.path.isdir(args["dir"]):
                os.makedirs(args["dir"], mode=dir_mode, exist_ok=True)
            for name, content in args["files"].items():
                path = os.path.join(args["dir"], name)
                write_atomic(path, content, mode)
                result["paths"].append(os.path.abspath(path))
        except OSError as exc:
            return dict(result, failed=True, msg=f"cannot write the run's files in {args['dir']}: {exc}")
        return result
