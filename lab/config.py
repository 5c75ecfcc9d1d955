"""Configuration of the twin: topology, its own loopback address, ports and runtime paths.

Environment:
    LAB_DIR          runtime directory (default ``<repo>/.lab``)
    LAB_ADDRESS      the twin's loopback address (default: chosen from LAB_DIR, see :func:`choose_address`)
    LAB_TIME_SCALE   overrides ``time_scale`` (one real-lab second takes this many seconds)
    LAB_LITELLM_BIN  the ``litellm`` executable (default ``<repo>/.venv-litellm/bin/litellm``)
    LAB_LITELLM_ZYGOTE  ``0``: exec the ``litellm`` binary for every LiteLLM Pod instead of forking it from the
                     zygote that imported LiteLLM once (``lab/litellm_zygote.py``; default ``1``)
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _candidate(lab_dir: Path, attempt: int) -> str:
    """A loopback address derived from the LAB_DIR path: 127.A.B.C, never 127.0.x.x (127.0.0.1, 127.0.0.53)."""
    digest = hashlib.sha256(f"{lab_dir}#{attempt}".encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"


def address_free(address: str, port: int) -> bool:
    """True when nothing listens on ``address:port`` (a bind test; the socket is closed at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def choose_address(lab_dir: Path, probe_port: int) -> str:
    """The loopback address of the twin in ``lab_dir``.

    Order: ``LAB_ADDRESS``; the address kept in ``lab_dir/address`` by an earlier ``lab up``; else the first of
    a sequence of addresses derived from the path whose ``probe_port`` is free (so two twins with different
    LAB_DIRs never share an address). Raises ``ValueError`` when ``LAB_ADDRESS`` is not an IPv4 loopback address.
    """
    if os.environ.get("LAB_ADDRESS"):
        address = os.environ["LAB_ADDRESS"]
        try:
            ok = ipaddress.ip_address(address) in ipaddress.ip_network("127.0.0.0/8")
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"LAB_ADDRESS={address} is not an IPv4 loopback address: set it to one of 127.0.0.0/8 "
                "(for example 127.20.0.1), or unset it to let the twin choose one from LAB_DIR"
            )
        return address
    kept = lab_dir / "address"
    if kept.exists():
        return kept.read_text().strip()
    for attempt in range(64):
        address = _candidate(lab_dir, attempt)
        if address_free(address, probe_port):
            return address
    raise RuntimeError(f"no free loopback address for {lab_dir}: port {probe_port} is taken on 64 candidates")


@dataclass
class LabConfig:
    """Everything the twin needs to start, resolved from topology.yaml and the environment."""

    topology: dict
    lab_dir: Path
    address: str = "127.0.0.1"
    time_scale: float = 0.01
    litellm_bin: Path = field(default_factory=lambda: REPO / ".venv-litellm" / "bin" / "litellm")
    litellm_zygote: bool = True
    models_path: Path = field(default_factory=lambda: REPO / "lab" / "models.yaml")

    def port(self, name: str) -> int:
        """Port of a twin API (``kubernetes``, ``proxmox``, ``registry``, ``paperless``, ``control``) on the twin's
        address."""
        return int(self.topology["ports"][name])

    def service_port(self, service: str) -> int:
        """Port on the twin's address where the ``namespace/name`` Service is exposed."""
        return int(self.topology["ports"]["services"][service])

    @property
    def controlplane_ports(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.topology["ports"]["controlplane"].items()}

    def url(self, name: str) -> str:
        scheme = "http" if name == "control" else "https"
        return f"{scheme}://{self.address}:{self.port(name)}"

    @property
    def pid_file(self) -> Path:
        return self.lab_dir / "lab.pid"

    @property
    def log_dir(self) -> Path:
        return self.lab_dir / "logs"

    @property
    def secrets_dir(self) -> Path:
        return self.lab_dir / "secrets"

    @property
    def volumes_dir(self) -> Path:
        return self.lab_dir / "volumes"

    @property
    def kubeconfig(self) -> Path:
        return self.lab_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.lab_dir / "ca.pem"

    def endpoints(self) -> dict:
        """Where each part of the twin answers (written to ``LAB_DIR/endpoints.json``)."""
        services = {
            svc: f"http://{self.address}:{self.service_port(svc)}" for svc in self.topology["ports"]["services"]
        }
        return {
            "address": self.address,
            "kubernetes": self.url("kubernetes"),
            "proxmox": self.url("proxmox"),
            "registry": self.url("registry"),
            "paperless": self.url("paperless"),
            "control": self.url("control"),
            "services": services,
            "kubeconfig": str(self.kubeconfig),
            "ca_file": str(self.ca_file),
        }


def load_config(lab_dir: str | os.PathLike | None = None, address: str | None = None) -> LabConfig:
    """Read ``lab/topology.yaml`` and the ``LAB_*`` environment into a :class:`LabConfig`.

    The address is the one kept in ``LAB_DIR/address`` (or ``LAB_ADDRESS``) when there is one; ``lab up``
    chooses and keeps it otherwise (:func:`choose_address`).
    """
    topology = yaml.safe_load((REPO / "lab" / "topology.yaml").read_text())
    lab_dir = Path(lab_dir or os.environ.get("LAB_DIR") or REPO / ".lab").resolve()
    if address is None:
        kept = lab_dir / "address"
        address = os.environ.get("LAB_ADDRESS") or (kept.read_text().strip() if kept.exists() else "127.0.0.1")
    time_scale = float(os.environ.get("LAB_TIME_SCALE", topology.get("time_scale", 0.01)))
    litellm_bin = Path(os.environ.get("LAB_LITELLM_BIN", REPO / ".venv-litellm" / "bin" / "litellm"))
    return LabConfig(
        topology=topology,
        lab_dir=lab_dir,
        address=address,
        time_scale=time_scale,
        litellm_bin=litellm_bin,
        litellm_zygote=os.environ.get("LAB_LITELLM_ZYGOTE", "1") != "0",
    )
