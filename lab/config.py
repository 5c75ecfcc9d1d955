"""Configuration of the twin: topology, ports and runtime paths.

Environment:
    LAB_DIR          runtime directory (default ``<repo>/.lab``)
    LAB_PORT_OFFSET  integer added to every port of ``lab/topology.yaml`` (default 0)
    LAB_TIME_SCALE   overrides ``time_scale`` (one real-lab second takes this many seconds)
    LAB_LITELLM_BIN  the ``litellm`` executable (default ``<repo>/.venv-litellm/bin/litellm``)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


@dataclass
class LabConfig:
    """Everything the twin needs to start, resolved from topology.yaml and the environment."""

    topology: dict
    lab_dir: Path
    port_offset: int = 0
    time_scale: float = 0.01
    litellm_bin: Path = field(default_factory=lambda: REPO / ".venv-litellm" / "bin" / "litellm")
    models_path: Path = field(default_factory=lambda: REPO / "lab" / "models.yaml")

    def port(self, name: str) -> int:
        """Port of a twin API (``kubernetes``, ``proxmox``, ``registry``, ``control``), offset applied."""
        return int(self.topology["ports"][name]) + self.port_offset

    def service_port(self, service: str) -> int:
        """Port where the workload behind ``namespace/name`` Service listens, offset applied."""
        return int(self.topology["ports"]["services"][service]) + self.port_offset

    def url(self, name: str) -> str:
        scheme = "http" if name == "control" else "https"
        return f"{scheme}://{HOST}:{self.port(name)}"

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
        services = {svc: f"http://{HOST}:{self.service_port(svc)}" for svc in self.topology["ports"]["services"]}
        return {
            "kubernetes": self.url("kubernetes"),
            "proxmox": self.url("proxmox"),
            "registry": self.url("registry"),
            "control": self.url("control"),
            "services": services,
            "kubeconfig": str(self.kubeconfig),
            "ca_file": str(self.ca_file),
        }


def load_config(lab_dir: str | os.PathLike | None = None, port_offset: int | None = None) -> LabConfig:
    """Read ``lab/topology.yaml`` and the ``LAB_*`` environment into a :class:`LabConfig`."""
    topology = yaml.safe_load((REPO / "lab" / "topology.yaml").read_text())
    lab_dir = Path(lab_dir or os.environ.get("LAB_DIR") or REPO / ".lab").resolve()
    offset = port_offset if port_offset is not None else int(os.environ.get("LAB_PORT_OFFSET", "0"))
    time_scale = float(os.environ.get("LAB_TIME_SCALE", topology.get("time_scale", 0.01)))
    litellm_bin = Path(os.environ.get("LAB_LITELLM_BIN", REPO / ".venv-litellm" / "bin" / "litellm"))
    return LabConfig(
        topology=topology, lab_dir=lab_dir, port_offset=offset, time_scale=time_scale, litellm_bin=litellm_bin
    )
