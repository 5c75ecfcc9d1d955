"""The twin's process: every API on one asyncio loop (``python -m lab serve``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import uuid

import yaml
from aiohttp import web

from lab.config import HOST, LabConfig
from lab.kubelet import Kubelet
from lab.tls import LabTLS
from lab.units import mib_quantity

log = logging.getLogger("lab")


class LabRuntime:
    """Builds the cluster, the Proxmox host, the registry and the kubelet, and serves their APIs."""

    def __init__(self, cfg: LabConfig):
        from lab.kube import Cluster
        from lab.ollama import Registry, load_models
        from lab.proxmox import ProxmoxHost

        self.cfg = cfg
        self.topology = cfg.topology
        self.catalog = load_models(cfg.models_path)
        self.registry = Registry(self.catalog)
        self.kubelet = Kubelet(self)
        # the real LiteLLM proxy starts in real time: give rollouts at least two real minutes of progress deadline
        self.cluster = Cluster(kubelet=self.kubelet, time_scale=cfg.time_scale, min_progress_deadline=120)
        px = self.topology["proxmox"]
        self.proxmox = ProxmoxHost(
            node=px["node"],
            total_memory_mib=px["total_memory_mib"],
            reserved_memory_mib=px["reserved_memory_mib"],
            containers=[dict(c) for c in px["containers"]],
            time_scale=cfg.time_scale,
            on_event=self._on_lxc_event,
        )
        self.nodes = {n["name"]: n for n in self.topology["kubernetes"]["nodes"]}
        self.node_memory_mib: dict[str, int] = {}
        self.runners: list[web.AppRunner] = []
        self.secrets: dict[str, str] = {}
        self.stopping = asyncio.Event()

    # -- memory as the nodes see it ---------------------------------------------------------------------------

    def node_memory_bytes(self, node: str | None) -> int:
        """Memory the machine behind ``node`` has right now (an LXC's hot-applied size), in bytes."""
        spec = self.nodes.get(node or "")
        if spec is None:
            return 0
        if "lxc_vmid" in spec:
            return self.proxmox.container_memory_mib(spec["lxc_vmid"]) * 2**20
        return int(spec["memory_mib"]) * 2**20

    def node_gpu_memory_bytes(self, node: str | None) -> int:
        spec = self.nodes.get(node or "", {})
        return int(spec.get("gpu_memory_mib", 0)) * 2**20

    def _node_resources(self, name: str, memory_mib: int) -> tuple[dict, dict]:
        spec = self.nodes[name]
        reserved = int(self.topology["kubernetes"].get("reserved_memory_mib", 0))
        capacity = {"cpu": spec["cpu"], "memory": mib_quantity(memory_mib), "pods": "110"}
        allocatable = {"cpu": spec["cpu"], "memory": mib_quantity(memory_mib - reserved), "pods": "110"}
        for resource, amount in (spec.get("extended") or {}).items():
            capacity[resource] = allocatable[resource] = str(amount)
        return capacity, allocatable

    async def _on_lxc_event(self, vmid: int, event: str, config: dict) -> None:
        """A container started or stopped: its k3s node goes NotReady, or Ready with the memory read at start."""
        for name, spec in self.nodes.items():
            if spec.get("lxc_vmid") != vmid:
                continue
            if event == "stopped":
                self.cluster.set_node_ready(name, False)
            elif event == "started":
                capacity, allocatable = self._node_resources(name, int(config["memory"]))
                self.cluster.set_node_capacity(name, capacity, allocatable)
                self.cluster.set_node_ready(name, True)

    # -- start / stop -----------------------------------------------------------------------------------------

    def _write_secrets(self) -> None:
        """Credentials of this twin run, readable only by the owner (the lab inventory looks them up)."""
        self.cfg.secrets_dir.mkdir(parents=True, exist_ok=True)
        self.secrets = {
            "kubernetes-token": secrets.token_hex(24),
            "proxmox-token-secret": str(uuid.uuid4()),
            "litellm-master-key": "sk-lab-" + secrets.token_hex(16),
            "openai-api-key": "sk-lab-placeholder-" + secrets.token_hex(8),
        }
        files = {**self.secrets, "proxmox-token-id": self.topology["proxmox"]["token_id"]}
        for name, value in files.items():
            path = self.cfg.secrets_dir / name
            path.write_text(value)
            path.chmod(0o600)

    def _write_kubeconfig(self, tls: LabTLS) -> None:
        import base64

        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "homelab-twin",
                    "cluster": {
                        "server": self.cfg.url("kubernetes"),
                        "certificate-authority-data": base64.b64encode(tls.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "twin-admin", "user": {"token": self.secrets["kubernetes-token"]}}],
            "contexts": [{"name": "homelab-twin", "context": {"cluster": "homelab-twin", "user": "twin-admin"}}],
            "current-context": "homelab-twin",
        }
        self.cfg.kubeconfig.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        self.cfg.kubeconfig.chmod(0o600)

    def _add_nodes(self) -> None:
        running = {c["vmid"]: c for c in self.topology["proxmox"]["containers"] if c.get("status") == "running"}
        for name, spec in self.nodes.items():
            if "lxc_vmid" in spec:
                memory_mib = self.proxmox.container_memory_mib(spec["lxc_vmid"])
            else:
                memory_mib = int(spec["memory_mib"])
            capacity, allocatable = self._node_resources(name, memory_mib)
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
            labels.update(spec.get("labels") or {})
            self.cluster.add_node(
                name, labels=labels, taints=list(spec.get("taints") or []), capacity=capacity, allocatable=allocatable
            )
            if "lxc_vmid" in spec and spec["lxc_vmid"] not in running:
                self.cluster.set_node_ready(name, False)

    async def _site(self, app: web.Application, port: int, ssl_context=None) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, ssl_context=ssl_context, reuse_address=True).start()
        self.runners.append(runner)

    def state(self) -> dict:
        """The whole twin as JSON-able data (``python -m lab status --json``); no secrets."""
        return {
            "time_scale": self.cfg.time_scale,
            "lab_dir": str(self.cfg.lab_dir),
            "endpoints": self.cfg.endpoints(),
            "proxmox": self.proxmox.snapshot(),
            "kubernetes": self.cluster.snapshot(),
            "workloads": self.kubelet.snapshot(),
            "registry": {"ollama_tags": sorted(self.catalog.ollama), "vllm_models": sorted(self.catalog.vllm)},
        }

    def _control_app(self) -> web.Application:
        app = web.Application()

        async def state(_request):
            return web.json_response(self.state(), dumps=lambda d: json.dumps(d, default=str))

        async def shutdown(_request):
            self.stopping.set()
            return web.json_response({"stopping": True})

        app.router.add_get("/state", state)
        app.router.add_post("/shutdown", shutdown)
        return app

    async def start(self) -> None:
        from lab.kube import make_kube_app
        from lab.ollama import make_registry_app
        from lab.proxmox import make_proxmox_app

        self.cfg.lab_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.log_dir.mkdir(parents=True, exist_ok=True)
        tls = LabTLS(self.cfg.ca_file)
        ssl_ctx = tls.server_context()
        self._write_secrets()
        self._write_kubeconfig(tls)
        self._add_nodes()
        self.cluster.seed(list(self.topology["kubernetes"].get("seed") or []))
        token_id = self.topology["proxmox"]["token_id"]
        await self._site(
            make_kube_app(self.cluster, self.secrets["kubernetes-token"]), self.cfg.port("kubernetes"), ssl_ctx
        )
        await self._site(
            make_proxmox_app(self.proxmox, {token_id: self.secrets["proxmox-token-secret"]}),
            self.cfg.port("proxmox"),
            ssl_ctx,
        )
        await self._site(make_registry_app(self.registry), self.cfg.port("registry"), ssl_ctx)
        await self._site(self._control_app(), self.cfg.port("control"))
        (self.cfg.lab_dir / "endpoints.json").write_text(json.dumps(self.cfg.endpoints(), indent=2))
        log.info("twin up: %s", json.dumps(self.cfg.endpoints()))

    async def stop(self) -> None:
        await self.kubelet.shutdown()
        await self.cluster.close()
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()


async def serve(cfg: LabConfig) -> None:
    """Run the twin until SIGTERM/SIGINT or ``POST /shutdown`` on the control port."""
    runtime = LabRuntime(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stopping.set)
    await runtime.start()
    cfg.pid_file.write_text(str(os.getpid()))
    try:
        await runtime.stopping.wait()
    finally:
        await runtime.stop()
        if cfg.pid_file.exists() and cfg.pid_file.read_text().strip() == str(os.getpid()):
            cfg.pid_file.unlink()
