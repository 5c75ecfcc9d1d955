"""A whole twin (``python -m lab up``) in a temporary LAB_DIR, on ports offset from the defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORT_OFFSET = 500  # keep clear of a twin started by `make demo` / molecule on the default ports


class Twin:
    def __init__(self, lab_dir: Path):
        self.lab_dir = lab_dir
        self.env = dict(os.environ, LAB_DIR=str(lab_dir), LAB_PORT_OFFSET=str(PORT_OFFSET))
        self.env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{self.env.get('PATH', '')}"

    def lab(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lab", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    @property
    def endpoints(self) -> dict:
        return json.loads((self.lab_dir / "endpoints.json").read_text())

    @property
    def kubeconfig(self) -> str:
        return str(self.lab_dir / "kubeconfig")

    def secret(self, name: str) -> str:
        return (self.lab_dir / "secrets" / name).read_text().strip()

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["kubectl", "--kubeconfig", self.kubeconfig, *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
            env=self.env,
        )

    def state(self) -> dict:
        return json.loads(self.lab("status", "--json").stdout)

    def wait_for(self, predicate, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    lab_dir = tmp_path_factory.mktemp("lab")
    twin = Twin(lab_dir)
    up = twin.lab("up")
    assert "twin up" in up.stdout, up.stdout + up.stderr
    yield twin
    twin.lab("down", check=False)
