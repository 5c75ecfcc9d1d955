"""Test helpers for the Proxmox twin: constants of the test lab and the ``Twin`` handle the fixtures yield."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from lab.proxmox import ProxmoxHost

NODE = "pve"
TOKEN_ID = "root@pam!inference"
TOKEN_SECRET = "3f1c9d1e-5b4a-4c8e-9a53-7d1f2c0b6e11"
TIME_SCALE = 0.01

CONTAINERS = [
    {"vmid": 100, "hostname": "k3s-master", "memory": 4096, "swap": 512, "cores": 2, "status": "running"},
    {"vmid": 102, "hostname": "k3s-worker-01", "memory": 8192, "swap": 512, "cores": 4, "status": "running"},
    {"vmid": 103, "hostname": "k3s-worker-02", "memory": 8192, "swap": 512, "cores": 6, "status": "running"},
    {"vmid": 110, "hostname": "spare", "memory": 2048, "swap": 0, "cores": 1, "status": "stopped"},
]
TOTAL_MIB = 65536
RESERVED_MIB = 2048


@dataclass
class Twin:
    """A running twin: where it listens, its CA file, the host object and the events it emitted."""

    host: ProxmoxHost
    port: int
    ca_path: Path
    loop: asyncio.AbstractEventLoop
    events: list[tuple[int, str, int]] = field(default_factory=list)

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the twin's loop (the host is not thread-safe) and return its result."""

        async def _run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(_run(), self.loop).result(timeout=10)

    def module_args(self, **extra) -> dict:
        args = {
            "api_host": "127.0.0.1",
            "api_port": self.port,
            "api_user": "root@pam",
            "api_token_id": "inference",
            "api_token_secret": TOKEN_SECRET,
            "ca_path": str(self.ca_path),
            "node": NODE,
        }
        args.update(extra)
        return args
