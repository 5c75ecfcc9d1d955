"""A whole twin (``python -m lab up``) in a temporary LAB_DIR, for tests that need the lab.

Every twin has its own loopback address (chosen from its LAB_DIR), so the tests' twins, the demo's and a
developer's run side by side. ``kubectl`` is the one built with the control plane (same version as the API
server), never whatever the machine has on PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.controlplane.build import bin_dir  # noqa: E402

KUBECTL = str(bin_dir() / "kubectl")
HELM = str(ROOT / ".venv" / "bin" / "helm")
ANSIBLE_PLAYBOOK = str(ROOT / ".venv" / "bin" / "ansible-playbook")


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def probe(url: str) -> str:
    """``answers`` (any HTTP response), ``refused`` (connection refused or reset: nothing serves it) or ``slow``."""
    import httpx

    try:
        httpx.get(url, timeout=10)
    except (httpx.NetworkError, httpx.RemoteProtocolError):
        return "refused"
    except httpx.TimeoutException:
        return "slow"
    return "answers"


def refused(url: str) -> bool:
    return probe(url) == "refused"


def answers(url: str) -> bool:
    return probe(url) == "answers"


class Twin:
    """Drive one twin: its CLI, kubectl, the Python client, its state."""

    def __init__(self, lab_dir: Path):
        self.lab_dir = lab_dir
        self.env = dict(os.environ, LAB_DIR=str(lab_dir))
        self.env.pop("LAB_ADDRESS", None)
        self.env["PATH"] = f"{bin_dir()}:{ROOT / '.venv' / 'bin'}:{self.env.get('PATH', '')}"

    def lab(self, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lab", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def up(self) -> Twin:
        result = self.lab("up", check=False)
        assert result.returncode == 0 and "twin up" in result.stdout, result.stdout + result.stderr
        return self

    def down(self) -> None:
        self.lab("down", check=False)

    @property
    def endpoints(self) -> dict:
        return json.loads((self.lab_dir / "endpoints.json").read_text())

    @property
    def address(self) -> str:
        return self.endpoints["address"]

    @property
    def kubeconfig(self) -> str:
        return str(self.lab_dir / "kubeconfig")

    def secret(self, name: str) -> str:
        return (self.lab_dir / "secrets" / name).read_text().strip()

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120):
        return subprocess.run(
            [KUBECTL, "--kubeconfig", self.kubeconfig, *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=self.env,
        )

    def api_client(self):
        """A ``kubernetes`` ApiClient with the admin identity (close it when done)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def proxmox(self):
        """A proxmoxer client of the twin's Proxmox VE API (API token, TLS verified against the twin's CA)."""
        from proxmoxer import ProxmoxAPI

        return ProxmoxAPI(
            self.address,
            port=8006,
            user="root@pam",
            token_name="inference",
            token_value=self.secret("proxmox-token-secret"),
            verify_ssl=str(self.lab_dir / "ca.pem"),
        )

    def fault(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``python -m lab fault ...`` of this twin."""
        return self.lab("fault", *args, check=check)

    def state(self) -> dict:
        return json.loads(self.lab("status", "--json").stdout)

    def wait_for(self, predicate, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):
        return wait_for(predicate, timeout=timeout, interval=interval, what=what)


class SharedTwin:
    """A twin shared by the tests of one pytest worker: started (and made ready by ``prepare(twin)``, once) on
    first use, stopped by :meth:`stop`. A ``prepare`` that fails stops the twin it started."""

    def __init__(self, tmp_path_factory, prepare=None):
        self.tmp_path_factory = tmp_path_factory
        self.prepare = prepare
        self.twin: Twin | None = None

    def get(self) -> Twin:
        if self.twin is None:
            twin = Twin(self.tmp_path_factory.mktemp("lab")).up()
            try:
                if self.prepare is not None:
                    self.prepare(twin)
            except BaseException:
                twin.down()
                raise
            self.twin = twin
        return self.twin

    def stop(self) -> None:
        if self.twin is not None:
            twin, self.twin = self.twin, None
            twin.down()


def stop_unless_next_uses(item, nextitem, key, uses) -> None:
    """For a ``pytest_runtest_teardown`` hook: stop the :class:`SharedTwin` in ``item.config.stash[key]`` unless the
    worker's next test (``nextitem``) ``uses(nextitem)`` it, so a shared twin never idles beside the twin another
    test starts."""
    if nextitem is None or not uses(nextitem):
        shared = item.config.stash.get(key, None)
        if shared is not None:
            shared.stop()
