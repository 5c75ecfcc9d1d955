"""Every twin on a loopback address of its own: twins side by side, a failed start that leaves nothing behind,
and LAB_ADDRESS checks."""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from lab.controlplane.build import bin_dir
from tests.twin import ROOT, Twin, wait_for

TOPOLOGY = yaml.safe_load((ROOT / "lab" / "topology.yaml").read_text())
PORTS = sorted(
    {
        *(v for v in TOPOLOGY["ports"].values() if isinstance(v, int)),
        *TOPOLOGY["ports"]["controlplane"].values(),
        *TOPOLOGY["ports"]["services"].values(),
        *range(10250, 10250 + len(TOPOLOGY["kubernetes"]["nodes"])),  # kubelet API of node N: 10250 + N
    }
)
NODES = {"k3s-master", "k3s-worker-01", "k3s-worker-02", "k3s-gpu-worker"}


def _lab(lab_dir: Path, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, LAB_DIR=str(lab_dir), **env)
    if "LAB_ADDRESS" not in env:
        environ.pop("LAB_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout
    )


def _processes_of(lab_dir: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line or environment names ``lab_dir``."""
    pattern = re.compile(re.escape(str(lab_dir).encode()) + rb"(?=[/\0\s]|$)")  # lab1 is not lab10
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if pattern.search(cmdline) or pattern.search(environ):
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def _listening(address: str) -> list[int]:
    """The twin's ports something listens on at ``address``; SO_REUSEADDR, as the twin binds: a connection of
    the stopped twin lingering in TIME_WAIT does not keep a port from being used again, a listener does."""
    taken = []
    for port in PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                taken.append(port)
    return taken


def _node_names(twin: Twin) -> set[str]:
    return {n["metadata"]["name"] for n in json.loads(twin.kubectl("get", "nodes", "-o", "json").stdout)["items"]}


@pytest.fixture(scope="module")
def second(tmp_path_factory):
    """A second twin next to the module's ``twin``."""
    twin = Twin(tmp_path_factory.mktemp("lab-second")).up()
    yield twin
    twin.down()


@pytest.mark.slow
def test_two_twins_run_side_by_side_on_their_own_addresses(twin, second):
    assert twin.address != second.address
    for one in (twin, second):
        assert ipaddress.ip_address(one.address) in ipaddress.ip_network("127.0.0.0/8")
        assert (one.lab_dir / "address").read_text().strip() == one.address
        assert one.endpoints["kubernetes"] == f"https://{one.address}:6443"
        assert _node_names(one) == NODES
        version = json.loads(one.kubectl("version", "-o", "json").stdout)
        assert version["serverVersion"]["gitVersion"] == "v1.32.9"
        assert one.state()["address"] == one.address

    # each twin has its own CA: one twin's CA does not verify the other's API server
    ctx = ssl.create_default_context(cafile=str(twin.lab_dir / "ca.pem"))
    assert httpx.get(twin.endpoints["kubernetes"] + "/version", verify=ctx, timeout=10).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(second.endpoints["kubernetes"] + "/version", verify=ctx, timeout=10)

    # a change in one cluster is not seen in the other
    twin.kubectl("create", "namespace", "only-in-the-first")
    assert second.kubectl("get", "namespace", "only-in-the-first", check=False).returncode != 0


@pytest.mark.slow
def test_down_of_one_twin_leaves_the_other_up(twin, second):
    pids = [c["pid"] for c in second.state()["controlplane"].values()]
    second.down()
    assert second.lab("status", check=False).returncode == 3
    wait_for(lambda: not _listening(second.address), timeout=60, what="the second twin's ports to be free")
    wait_for(lambda: not _processes_of(second.lab_dir), timeout=60, what="the second twin's processes to end")
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]

    assert _node_names(twin) == NODES
    assert twin.state()["address"] == twin.address
    assert twin.lab("status").returncode == 0


def _failing_bin(tmp_path: Path) -> Path:
    """Control-plane binaries where etcd is the real one and the Kubernetes components exit 1 at once."""
    real = bin_dir()
    if not (real / "kubelab").exists():
        pytest.skip(f"the control plane is not built ({real}): make controlplane")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "kubelab").symlink_to(real / "kubelab")
    (fake / "etcd").symlink_to(real / "kubelab")
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
        (fake / name).symlink_to("/bin/false")
    return fake


def _assert_nothing_left(lab_dir: Path, address: str) -> None:
    assert _lab(lab_dir, "status").returncode == 3
    left = _processes_of(lab_dir)
    assert not left, f"processes of the failed twin are still running: {left}"
    assert not _listening(address), f"ports still in use on {address}"
    assert not (lab_dir / "lab.pid").exists()


@pytest.mark.slow
def test_a_failing_control_plane_stops_everything_it_started(tmp_path):
    lab_dir = tmp_path / "lab"
    result = _lab(lab_dir, "up", "--timeout", "120", LAB_CONTROLPLANE_BIN=str(_failing_bin(tmp_path)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "twin failed to start" in result.stderr
    assert "kube-apiserver exited with code 1" in result.stderr
    assert "twin up" not in result.stdout
    etcd_log = lab_dir / "logs" / "etcd.log"
    assert etcd_log.exists(), "etcd was started (then stopped again)"
    _assert_nothing_left(lab_dir, (lab_dir / "address").read_text().strip())


@pytest.mark.slow
def test_a_port_taken_after_the_control_plane_started_stops_everything(tmp_path):
    """The Proxmox API's port is taken: the control plane, the kubelets and the proxy are up by then, and stop."""
    lab_dir = tmp_path / "lab"
    address = _unused_address(lab_dir)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((address, 8006))
        squatter.listen()
        result = _lab(lab_dir, "up", "--timeout", "120", LAB_ADDRESS=address)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "twin failed to start" in result.stderr
        assert "8006" in result.stderr
        assert (lab_dir / "logs" / "kube-apiserver.log").exists(), "the control plane was started"
        assert not _processes_of(lab_dir), _processes_of(lab_dir)
        assert _listening(address) == [8006]
    _assert_nothing_left(lab_dir, address)


def _unused_address(lab_dir: Path) -> str:
    """A loopback address in 127.253.0.0/16 with nothing listening on any of the twin's ports."""
    seed = int(hashlib.sha256(str(lab_dir).encode()).hexdigest(), 16)
    for attempt in range(64):
        n = (seed + attempt * 7919) % (256 * 254)
        address = f"127.253.{n // 254}.{1 + n % 254}"
        if not _listening(address):
            return address
    raise AssertionError("no unused address in 127.253.0.0/16")


@pytest.mark.parametrize("address", ["10.0.0.1", "0.0.0.0", "192.168.1.10"])  # noqa: S104 - refused, never bound
def test_an_address_that_is_not_loopback_is_refused(tmp_path, address):
    lab_dir = tmp_path / "lab"
    empty = tmp_path / "bin"  # nothing is built or started: the address is checked first
    empty.mkdir()
    result = _lab(lab_dir, "up", timeout=60, LAB_ADDRESS=address, LAB_CONTROLPLANE_BIN=str(empty))
    assert result.returncode == 1
    assert f"LAB_ADDRESS={address} is not an IPv4 loopback address" in result.stderr
    assert "127.0.0.0/8" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (lab_dir / "address").exists()
    assert not _processes_of(lab_dir)


@pytest.mark.parametrize(
    "address",
    [
        "::1",
        "localhost",
    ],
)
def test_an_address_the_twin_cannot_use_is_refused_naming_lab_address(tmp_path, address):
    lab_dir = tmp_path / "lab"
    empty = tmp_path / "bin"  # nothing is built: if the address is not refused, the start fails at once
    empty.mkdir()
    result = _lab(lab_dir, "up", "--timeout", "30", timeout=90, LAB_ADDRESS=address, LAB_CONTROLPLANE_BIN=str(empty))
    assert result.returncode == 1
    assert f"LAB_ADDRESS={address}" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not _processes_of(lab_dir)
