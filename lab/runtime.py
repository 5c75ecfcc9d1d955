"""The twin's process (``python -m lab serve``): the real control plane as child processes, the rest on one loop.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler (lab.controlplane) run as children of this
process; the nodes' kubelets, the service proxy, the local-path provisioner, the Proxmox VE API, the Ollama
registry, Paperless-ngx and the control endpoint run on its asyncio loop, all on the twin's own loopback address.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import time
import uuid

from aiohttp import web

from lab.config import LabConfig
from lab.controlplane.pki import LabPKI
from lab.controlplane.supervisor import ControlPlane, identities
from lab.faults import FaultError, Faults
from lab.kubelet import Kubelet

log = logging.getLogger("lab")


class LabRuntime:
    """Starts the control plane, the nodes' kubelets, the service proxy, the provisioner, Proxmox, the registry and
    Paperless-ngx."""

    def __init__(self, cfg: LabConfig):
        from lab.ollama import Registry, load_models
        from lab.proxmox import ProxmoxHost

        self.cfg = cfg
        self.topology = cfg.topology
        self.catalog = load_models(cfg.models_path)
        self.registry = Registry(self.catalog)
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
        self.pki = LabPKI(cfg.lab_dir, cfg.address)
        self.controlplane: ControlPlane | None = None
        self.kubelet = Kubelet(self)
        self.serviceproxy = None
        self.provisioner = None
        self.runners: list[web.AppRunner] = []
        self.faults = Faults()
        self.faults.on_change.append(self._fault_changed)
        self.proxmox.task_fault = self.faults.proxmox_task
        self._proxmox_runner: web.AppRunner | None = None
        self.secrets: dict[str, str] = {}
        self.stopping = asyncio.Event()
        self._fault_timer: asyncio.TimerHandle | None = None  # ends apiserver-down after its seconds
        self._tasks: set[asyncio.Task] = set()

    # -- the machines behind the nodes --------------------------------------------------------------------------

    def node_machine_running(self, node: str) -> bool:
        """Whether the machine of ``node`` runs (an LXC's status; the GPU node is a separate machine, always on)."""
        spec = self.nodes[node]
        if "lxc_vmid" in spec:
            return self.proxmox.containers[int(spec["lxc_vmid"])].status == "running"
        return True

    def node_memory_mib(self, node: str) -> int:
        """Memory the machine of ``node`` has right now (an LXC's hot-applied size), MiB."""
        spec = self.nodes.get(node or "")
        if spec is None:
            return 0
        if "lxc_vmid" in spec:
            return self.proxmox.container_memory_mib(spec["lxc_vmid"])
        return int(spec["memory_mib"])

    async def _on_lxc_event(self, vmid: int, event: str, config: dict) -> None:
        """A container stopped or started: its kubelet goes down, or comes up reading the memory it has now."""
        for name, spec in self.nodes.items():
            if spec.get("lxc_vmid") != vmid:
                continue
            if event == "stopped":
                await self.kubelet.node_stopped(name)
            elif event == "started":
                await self.kubelet.node_started(name, int(config["memory"]))

    # -- start / stop -----------------------------------------------------------------------------------------

    def _write_secrets(self) -> None:
        """Credentials of this twin run, readable only by the owner (the lab inventory looks them up)."""
        self.cfg.secrets_dir.mkdir(parents=True, exist_ok=True)
        self.secrets = {
            "proxmox-token-secret": str(uuid.uuid4()),
            "litellm-master-key": "sk-lab-" + secrets.token_hex(16),
            "openai-api-key": "sk-lab-placeholder-" + secrets.token_hex(8),
            "paperless-api-token": secrets.token_hex(20),
        }
        files = {**self.secrets, "proxmox-token-id": self.topology["proxmox"]["token_id"]}
        for name, value in files.items():
            path = self.cfg.secrets_dir / name
            path.write_text(value)
            path.chmod(0o600)

    async def _site(self, app: web.Application, port: int, ssl_context=None) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.cfg.address, port, ssl_context=ssl_context, reuse_address=True).start()
        self.runners.append(runner)
        return runner

    # -- faults -----------------------------------------------------------------------------------------------

    async def _start_proxmox(self) -> None:
        from lab.proxmox import make_proxmox_app

        token_id = self.topology["proxmox"]["token_id"]
        app = make_proxmox_app(
            self.proxmox,
            {token_id: self.secrets["proxmox-token-secret"]},
            middlewares=[self.faults.proxmox_middleware],
        )
        self._proxmox_runner = await self._site(app, self.cfg.port("proxmox"), self.pki.server_context())

    async def _fault_changed(self, name: str, active: bool, params: dict) -> None:
        """Faults that act through the runtime (the others are read by the parts when they act)."""
        if name == "proxmox-down":
            if active and self._proxmox_runner is not None:
                runner, self._proxmox_runner = self._proxmox_runner, None
                self.runners.remove(runner)
                await runner.cleanup()
            elif not active and self._proxmox_runner is None:
                await self._start_proxmox()
        elif name == "host-memory-short":
            self.proxmox.reserved_memory_mib += params["mib"] if active else -params["mib"]
        elif name == "kill" and active:
            await self.kubelet.kill_deployment(params["namespace"], params["deployment"])
        elif name == "apiserver-down":
            await self._apiserver_down(active, params)
        elif name == "component-kill" and active and self.controlplane is not None:
            await self.controlplane.kill(params["component"], getattr(signal, "SIG" + params["signal"]))
        elif name == "image-missing":
            from lab.kubelet import normalise_image

            image = normalise_image(params["image"])
            (self.kubelet.images.discard if active else self.kubelet.images.add)(image)

    async def _apiserver_down(self, active: bool, params: dict) -> None:
        """``apiserver-down``: the supervisor keeps the API server killed until the fault is cleared (by hand or
        after ``seconds``); clearing starts it at once and waits (at most 25 s) until it answers."""
        if self._fault_timer is not None:
            self._fault_timer.cancel()
            self._fault_timer = None
        if self.controlplane is None:
            return
        if active:
            await self.controlplane.hold("kube-apiserver")
            if params["seconds"] > 0:
                self._fault_timer = asyncio.get_running_loop().call_later(
                    params["seconds"], lambda: self._spawn(self.faults.clear("apiserver-down"))
                )
        else:
            self.controlplane.release("kube-apiserver")
            if not await self.controlplane.wait_healthy("kube-apiserver", 25):
                log.warning("kube-apiserver not healthy within 25 s of the end of apiserver-down")

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kubernetes_state(self) -> dict:
        """Nodes, workloads, Services, PVCs and Events of the cluster, through the admin identity (no Secrets)."""
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(self.cfg.kubeconfig))
        try:
            core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
            lists = {
                "Node": core.list_node(),
                "Namespace": core.list_namespace(),
                "Pod": core.list_pod_for_all_namespaces(),
                "Service": core.list_service_for_all_namespaces(),
                "PersistentVolumeClaim": core.list_persistent_volume_claim_for_all_namespaces(),
                "PersistentVolume": core.list_persistent_volume(),
                "ConfigMap": core.list_config_map_for_all_namespaces(),
                "Deployment": apps.list_deployment_for_all_namespaces(),
                "ReplicaSet": apps.list_replica_set_for_all_namespaces(),
            }
            state = {kind: api.sanitize_for_serialization(result.items) for kind, result in lists.items()}
            state["ConfigMap"] = [cm for cm in state["ConfigMap"] if cm["metadata"]["name"] != "kube-root-ca.crt"]
            for obj in (o for objs in state.values() for o in objs):
                obj.get("metadata", {}).pop("managedFields", None)
            return state
        finally:
            api.close()

    async def state(self) -> dict:
        """The whole twin as JSON-able data (``python -m lab status --json``); no secrets."""
        try:
            kubernetes = await asyncio.to_thread(self._kubernetes_state)
        except Exception as exc:  # the API server is down: say so, show the rest
            kubernetes = {"error": str(exc)}
        nodes = self.kubelet.snapshot()
        return {
            "time_scale": self.cfg.time_scale,
            "lab_dir": str(self.cfg.lab_dir),
            "address": self.cfg.address,
            "endpoints": self.cfg.endpoints(),
            "controlplane": self.controlplane.snapshot() if self.controlplane else {},
            "proxmox": self.proxmox.snapshot(),
            "kubernetes": kubernetes,
            "nodes": nodes,
            "workloads": self._workloads(nodes),
            "services": self.serviceproxy.snapshot() if self.serviceproxy else {},
            "registry": {"ollama_tags": sorted(self.catalog.ollama), "vllm_models": sorted(self.catalog.vllm)},
            "faults": self.faults.snapshot()["active"],
        }

    def _workloads(self, nodes: dict) -> dict:
        """Per inference Deployment of the topology: its running emulated servers and whether one is ready."""
        result: dict[str, dict] = {}
        for key, spec in self.topology.get("workloads", {}).items():
            pods = []
            for node, info in nodes.items():
                for pod_key, pod in info["pods"].items():
                    for container in pod["containers"].values():
                        if container["kind"] == spec["kind"] and pod_key.startswith(key.split("/")[0] + "/"):
                            pods.append({"pod": pod_key, "node": node, "ip": pod["ip"], **container})
            running = [p for p in pods if p["state"] == "running"]
            if not running:
                continue
            result[key] = {
                "kind": spec["kind"],
                "service": spec["service"],
                "ready": any(p["ready"] for p in running),
                "pods": pods,
                "port": self.cfg.service_port(spec["service"]),
            }
        return result

    def _control_app(self) -> web.Application:
        app = web.Application()

        async def state(_request):
            return web.json_response(await self.state(), dumps=lambda d: json.dumps(d, default=str))

        async def shutdown(_request):
            self.stopping.set()
            return web.json_response({"stopping": True})

        async def faults(_request):
            return web.json_response(self.faults.snapshot())

        async def inject(request):
            params = await request.json() if request.can_read_body else {}
            try:
                applied = await self.faults.inject(request.match_info["name"], params or {})
            except FaultError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response({"injected": request.match_info["name"], "params": applied})

        async def clear(request):
            return web.json_response({"cleared": await self.faults.clear(request.match_info.get("name"))})

        app.router.add_get("/state", state)
        app.router.add_post("/shutdown", shutdown)
        app.router.add_get("/faults", faults)
        app.router.add_post("/faults/{name}", inject)
        app.router.add_delete("/faults/{name}", clear)
        app.router.add_delete("/faults", clear)
        return app

    def _seed(self) -> None:
        """Objects a fresh k3s cluster has that the playbooks rely on (``kubernetes.seed`` in the topology)."""
        from kubernetes import client, config, utils

        api = config.new_client_from_config(config_file=str(self.cfg.kubeconfig))
        try:
            for obj in self.topology["kubernetes"].get("seed") or []:
                try:
                    utils.create_from_dict(api, obj)
                except utils.FailToCreateError as exc:
                    if not all(getattr(e, "status", None) == 409 for e in exc.api_exceptions):
                        raise
            # Pods can be created once the controller manager made the namespace's `default` ServiceAccount
            # (the ServiceAccount admission plugin refuses them before)
            core = client.CoreV1Api(api)
            deadline = time.monotonic() + 60
            while True:
                try:
                    core.read_namespaced_service_account("default", "default")
                    break
                except client.ApiException as exc:
                    if exc.status != 404 or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            api.close()

    async def start(self) -> None:
        from lab.controlplane.build import bin_dir
        from lab.ollama import make_registry_app
        from lab.paperless import generate_corpus, make_paperless_app
        from lab.serviceproxy import ServiceProxy
        from lab.storage import LocalPathProvisioner

        self.cfg.lab_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.log_dir.mkdir(parents=True, exist_ok=True)
        (self.cfg.lab_dir / "address").write_text(self.cfg.address)
        if not self.pki.exists():
            self.pki.create(identities(list(self.nodes)))
        self._write_secrets()
        # the cluster lives as long as the twin: a new `lab serve` starts from an empty etcd (like the Proxmox
        # host, which starts from the topology)
        shutil.rmtree(self.cfg.lab_dir / "etcd", ignore_errors=True)
        self.controlplane = ControlPlane(
            self.cfg.lab_dir, self.cfg.address, self.cfg.controlplane_ports, bin_dir(), self.pki, self.cfg.time_scale
        )
        await self.controlplane.start()
        self.pki.kubeconfig(self.cfg.kubeconfig, self.controlplane.api_url, "admin")
        await asyncio.to_thread(self._seed)
        self.provisioner = LocalPathProvisioner(self.cfg.kubeconfig, self.cfg.volumes_dir)
        await self.provisioner.start()
        await self.kubelet.start(
            lambda node: self.pki.kubeconfig(
                self.pki.path(f"kubelet-{node}.kubeconfig"), self.controlplane.api_url, f"kubelet-{node}"
            ),
            self.cfg.kubeconfig,
        )
        self.serviceproxy = ServiceProxy(
            self.pki.kubeconfig(self.pki.path("kube-proxy.kubeconfig"), self.controlplane.api_url, "kube-proxy"),
            self.cfg.address,
            {svc: self.cfg.service_port(svc) for svc in self.topology["ports"]["services"]},
            self.kubelet.resolve,
        )
        await self.serviceproxy.start()
        ssl_ctx = self.pki.server_context()
        await self._start_proxmox()
        await self._site(make_registry_app(self.registry), self.cfg.port("registry"), ssl_ctx)
        paperless = make_paperless_app(generate_corpus(), self.secrets["paperless-api-token"])
        await self._site(paperless, self.cfg.port("paperless"), ssl_ctx)
        await self._site(self._control_app(), self.cfg.port("control"))
        (self.cfg.lab_dir / "endpoints.json").write_text(json.dumps(self.cfg.endpoints(), indent=2))
        log.info("twin up: %s", json.dumps(self.cfg.endpoints()))

    async def stop(self) -> None:
        if self._fault_timer is not None:
            self._fault_timer.cancel()
            self._fault_timer = None
        for task in list(self._tasks):
            task.cancel()
        for part in (self.serviceproxy, self.kubelet, self.provisioner):
            if part is None:
                continue
            try:
                await (part.stop() if hasattr(part, "stop") else part.shutdown())
            except Exception:
                log.exception("stopping %s failed", type(part).__name__)
        if self.controlplane is not None:
            await self.controlplane.stop()
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()


async def serve(cfg: LabConfig) -> None:
    """Run the twin until SIGTERM/SIGINT or ``POST /shutdown`` on the control port."""
    runtime = LabRuntime(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stopping.set)
    cfg.pid_file.write_text(str(os.getpid()))
    try:
        await runtime.start()
        await runtime.stopping.wait()
    finally:
        await runtime.stop()
        if cfg.pid_file.exists() and cfg.pid_file.read_text().strip() == str(os.getpid()):
            cfg.pid_file.unlink()
