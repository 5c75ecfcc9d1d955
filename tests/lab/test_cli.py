"""The twin's command line without a running twin."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_lab(tmp_path, *args):
    env = dict(os.environ, LAB_DIR=str(tmp_path))
    env.pop("LAB_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_status_of_a_stopped_twin_says_so_with_exit_code_3(tmp_path):
    result = run_lab(tmp_path, "status", "--json")
    assert result.returncode == 3
    assert "not running" in result.stderr
    assert result.stdout == ""


def test_status_of_a_twin_that_ran_once_but_is_stopped_says_so(tmp_path):
    """An address kept from an earlier ``lab up`` with nothing listening on it: not running."""
    (tmp_path / "address").write_text("127.254.254.254")
    result = run_lab(tmp_path, "status")
    assert result.returncode == 3
    assert "not running" in result.stderr


def test_down_of_a_stopped_twin_is_a_no_op(tmp_path):
    result = run_lab(tmp_path, "down")
    assert result.returncode == 0
    assert "not running" in result.stdout
    assert list(tmp_path.iterdir()) == [], "down of nothing creates nothing"


def test_unknown_command_is_refused(tmp_path):
    result = run_lab(tmp_path, "explode")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_help_names_every_command(tmp_path):
    result = run_lab(tmp_path, "--help")
    assert result.returncode == 0
    for command in ("up", "down", "status", "reset", "serve"):
        assert command in result.stdout
    assert "loopback address" in result.stdout
