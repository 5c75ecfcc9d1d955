"""Shared pytest set-up: repository paths and running Ansible modules in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
# The plugins are imported as the collection's (ansible_collections.homelab.inference.plugins...): `make venv` links
# the work tree into the virtualenv's ansible_collections. The tests' own helpers import as `tests.<module>`.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class ModuleResult(dict):
    """The JSON a module printed, plus whether it called fail_json."""

    @property
    def failed(self) -> bool:
        return bool(self.get("failed"))


def run_module(module, args: dict, check_mode: bool = False, diff: bool = False, capsys=None) -> ModuleResult:
    """Run an Ansible module's ``main()`` with ``args`` and return what it printed.

    ``module`` is the imported module object. Uses ansible-core's ``patch_module_args``.
    """
    from ansible.module_utils.testing import patch_module_args

    args = dict(args)
    args["_ansible_check_mode"] = check_mode
    args["_ansible_diff"] = diff
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    assert capsys is not None, "pass capsys so the module output can be read"
    out = capsys.readouterr().out
    return ModuleResult(json.loads(out.strip().splitlines()[-1]))


@pytest.fixture
def module_runner(capsys):
    def _run(module, args, check_mode=False, diff=False):
        return run_module(module, args, check_mode=check_mode, diff=diff, capsys=capsys)

    return _run


# The longest test files (each a twin of its own and many playbook runs), longest first, so `make pytest`'s workers
# (pytest-xdist, --dist loadfile: a file runs on one worker) start them at once and the short ones fill in the
# gaps. `make pytest` passes --no-loadscope-reorder: by default xdist orders the files by their number of tests,
# which put these (one to eight tests each) last and left one worker running the longest alone at the end.
# The figures are the files' seconds in a `make test` run (printed at the end of every run, "slowest files").
LONGEST_FIRST = [
    "tests/matrix/test_fault_matrix.py",
    "tests/matrix/test_fault_runtimes.py",
    "tests/matrix/test_stop_anywhere.py",
    "tests/matrix/test_stop_and_run_again.py",
    "tests/matrix/test_fault_rollouts.py",
    "tests/matrix/test_stop_anywhere_late.py",
    "tests/matrix/test_stop_and_run_again_detour.py",
    "tests/matrix/test_fault_runtimes_down.py",
    "tests/matrix/test_gate_champion.py",
    "tests/matrix/test_canary.py",
    "tests/plugins/test_collection.py",
]


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = Path(item.path).resolve().relative_to(ROOT).as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Sum each file's seconds (set-up, call, tear-down); with xdist the controller sees every worker's reports."""
    path = report.nodeid.split("::", 1)[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """The slowest files, for the order of LONGEST_FIRST (a file runs on one worker)."""
    if not _FILE_SECONDS or hasattr(terminalreporter.config, "workerinput"):
        return
    terminalreporter.write_sep("=", "slowest files (seconds, set-up + call + tear-down)")
    for path, seconds in sorted(_FILE_SECONDS.items(), key=lambda item: -item[1])[:15]:
        terminalreporter.write_line(f"{seconds:8.1f}s {path}")
