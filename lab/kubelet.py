"""The twin's kubelet: brings Pods of the inference Deployments to life.

When the cluster binds a Pod of Deployment ``ml/ollama``, ``ml/vllm-server`` or ``ml/litellm`` (see
``workloads`` in ``lab/topology.yaml``) to a Ready node, the kubelet starts the matching server on the port of
its Service: the emulated Ollama or vLLM, or the real LiteLLM proxy with the ConfigMap and environment of the
Pod. It reports Running/Ready back to the cluster the way a kubelet does after its readiness probe passes.
Any other Pod becomes Running and Ready at once (its container is not emulated).

One server per workload: a newer Pod of the same Deployment replaces the server of the older one (a rollout
restarts it with the current ConfigMap and env).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from lab.litellm_runner import LiteLLMProcess
from lab.units import parse_quantity

if TYPE_CHECKING:
    from lab.runtime import LabRuntime

log = logging.getLogger("lab.kubelet")


@dataclass
class Workload:
    """A running server for one Pod."""

    key: str
    kind: str
    pod_uid: str
    pod_name: str
    namespace: str
    port: int
    runner: web.AppRunner | None = None
    process: LiteLLMProcess | None = None
    emulator: Any = None
    task: asyncio.Task | None = None
    ready: bool = False
    error: str | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        info = {
            "kind": self.kind,
            "pod": f"{self.namespace}/{self.pod_name}",
            "port": self.port,
            "ready": self.ready,
            "error": self.error,
        }
        if self.emulator is not None:
            info["state"] = self.emulator.snapshot()
        info.update(self.extra)
        return info


class Kubelet:
    """Implements the cluster's kubelet hooks (``start_pod`` / ``stop_pod``) for the twin."""

    def __init__(self, runtime: LabRuntime):
        self.runtime = runtime
        self.cfg = runtime.cfg
        self.workloads: dict[str, Workload] = {}
        self._lock = asyncio.Lock()

    # -- cluster hooks ---------------------------------------------------------------------------------------

    async def start_pod(self, pod: dict) -> None:
        key = self._workload_key(pod)
        spec = self.cfg.topology.get("workloads", {}).get(key) if key else None
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if spec is None:
            self.runtime.cluster.set_pod_status(ns, name, phase="Running", ready=True)
            return
        async with self._lock:
            old = self.workloads.pop(key, None)
            if old is not None:
                await self._stop(old)
            workload = Workload(
                key=key,
                kind=spec["kind"],
                pod_uid=pod["metadata"].get("uid", ""),
                pod_name=name,
                namespace=ns,
                port=self.cfg.service_port(spec["service"]),
            )
            self.workloads[key] = workload
        self.runtime.cluster.set_pod_status(ns, name, phase="Running", ready=False, reason="ContainerCreating")
        workload.task = asyncio.create_task(self._run(workload, pod))

    async def stop_pod(self, pod: dict) -> None:
        key = self._workload_key(pod)
        async with self._lock:
            workload = self.workloads.get(key) if key else None
            if workload is None or workload.pod_uid != pod["metadata"].get("uid", ""):
                return
            self.workloads.pop(key)
        await self._stop(workload)

    async def shutdown(self) -> None:
        async with self._lock:
            workloads, self.workloads = list(self.workloads.values()), {}
        for workload in workloads:
            await self._stop(workload)

    def snapshot(self) -> dict:
        return {key: w.describe() for key, w in self.workloads.items()}

    # -- workload start ---------------------------------------------------------------------------------------

    async def _run(self, workload: Workload, pod: dict) -> None:
        cluster = self.runtime.cluster
        ns, name = workload.namespace, workload.pod_name
        try:
            if workload.kind == "ollama":
                await self._start_ollama(workload, pod)
            elif workload.kind == "vllm":
                await self._start_vllm(workload, pod)
            elif workload.kind == "litellm":
                await self._start_litellm(workload, pod)
            else:
                raise ValueError(f"unknown workload kind {workload.kind!r}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a container that fails to start: CrashLoopBackOff, as on a real node
            log.warning("workload %s failed to start: %s", workload.key, exc)
            workload.error = str(exc)
            cluster.set_pod_status(ns, name, phase="Running", ready=False, reason="CrashLoopBackOff", message=str(exc))
            return
        workload.ready = True
        cluster.set_pod_status(ns, name, phase="Running", ready=True)

    async def _serve(self, workload: Workload, app: web.Application) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", workload.port, reuse_address=True)
        await site.start()
        workload.runner = runner

    async def _start_ollama(self, workload: Workload, pod: dict) -> None:
        from lab.ollama import OllamaEmulator, make_ollama_app

        container = pod["spec"]["containers"][0]
        env = self._container_env(pod, container)
        limit = (container.get("resources") or {}).get("limits", {}).get("memory")
        node = pod["spec"].get("nodeName")
        emulator = OllamaEmulator(
            catalog=self.runtime.catalog,
            store_dir=self._volume_dir(pod),
            memory_limit_bytes=int(parse_quantity(limit)) if limit else None,
            available_memory_bytes=lambda: self.runtime.node_memory_bytes(node),
            env=env,
            time_scale=self.cfg.time_scale,
        )
        workload.emulator = emulator
        workload.extra["node"] = node
        await self._serve(workload, make_ollama_app(emulator))

    async def _start_vllm(self, workload: Workload, pod: dict) -> None:
        from lab.vllm import VllmEmulator, make_vllm_app

        container = pod["spec"]["containers"][0]
        args = [*container.get("command", []), *container.get("args", [])]
        node = pod["spec"].get("nodeName")
        emulator = VllmEmulator(
            catalog=self.runtime.catalog,
            args=args,
            gpu_memory_bytes=self.runtime.node_gpu_memory_bytes(node),
            time_scale=self.cfg.time_scale,
        )
        workload.emulator = emulator
        workload.extra["node"] = node
        await self._serve(workload, make_vllm_app(emulator))
        # vLLM answers /health only once the weights are loaded: Ready follows the health endpoint.
        await self._wait_http(f"http://127.0.0.1:{workload.port}/health", timeout=600 * self.cfg.time_scale + 30)

    async def _start_litellm(self, workload: Workload, pod: dict) -> None:
        container = pod["spec"]["containers"][0]
        env = self._container_env(pod, container)
        config_yaml = self._configmap_file(pod, container, "config.yaml")
        process = LiteLLMProcess(
            binary=self.cfg.litellm_bin,
            workdir=self.cfg.lab_dir / "workloads" / workload.key.replace("/", "-"),
            port=workload.port,
            config_yaml=config_yaml,
            env=env,
            log_file=self.cfg.log_dir / f"{workload.key.replace('/', '-')}.log",
        )
        workload.process = process
        await process.start()
        if not await process.wait_ready():
            raise RuntimeError(f"LiteLLM did not become ready; see {process.log_file}")

    async def _wait_http(self, url: str, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while asyncio.get_running_loop().time() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")

    async def _stop(self, workload: Workload) -> None:
        if workload.task is not None and not workload.task.done():
            workload.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await workload.task
        if workload.process is not None:
            await workload.process.stop()
        if workload.runner is not None:
            await workload.runner.cleanup()
        workload.ready = False

    # -- pod spec helpers -------------------------------------------------------------------------------------

    def _workload_key(self, pod: dict) -> str | None:
        """``namespace/deployment`` of the Deployment that owns the Pod through its ReplicaSet, if any."""
        ns = pod["metadata"].get("namespace")
        for ref in pod["metadata"].get("ownerReferences", []):
            if ref.get("kind") != "ReplicaSet":
                continue
            rs = self.runtime.cluster.get("apps/v1", "ReplicaSet", ns, ref["name"])
            refs = (rs or {}).get("metadata", {}).get("ownerReferences", [])
            for owner in refs:
                if owner.get("kind") == "Deployment":
                    return f"{ns}/{owner['name']}"
        return None

    def _container_env(self, pod: dict, container: dict) -> dict[str, str]:
        """The container's environment as the kubelet would build it (envFrom, then env, valueFrom resolved)."""
        ns = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []) or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._configmap_data(ns, source["configMapRef"]["name"]) or {}
            elif "secretRef" in source:
                data = self._secret_data(ns, source["secretRef"]["name"]) or {}
            else:
                data = {}
            env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env", []) or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = item.get("valueFrom", {})
            if "secretKeyRef" in ref:
                data = self._secret_data(ns, ref["secretKeyRef"]["name"]) or {}
                value = data.get(ref["secretKeyRef"]["key"])
            elif "configMapKeyRef" in ref:
                data = self._configmap_data(ns, ref["configMapKeyRef"]["name"]) or {}
                value = data.get(ref["configMapKeyRef"]["key"])
            else:
                value = None
            if value is not None:
                env[item["name"]] = value
        return env

    def _configmap_data(self, ns: str, name: str) -> dict[str, str] | None:
        cm = self.runtime.cluster.get("v1", "ConfigMap", ns, name)
        return None if cm is None else dict(cm.get("data") or {})

    def _secret_data(self, ns: str, name: str) -> dict[str, str] | None:
        secret = self.runtime.cluster.get("v1", "Secret", ns, name)
        if secret is None:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        return data

    def _configmap_file(self, pod: dict, container: dict, filename: str) -> str:
        """Content of ``filename`` from the ConfigMap volume mounted into the container."""
        ns = pod["metadata"]["namespace"]
        mounted = {m["name"] for m in container.get("volumeMounts", []) or []}
        for volume in pod["spec"].get("volumes", []) or []:
            if volume["name"] not in mounted or "configMap" not in volume:
                continue
            data = self._configmap_data(ns, volume["configMap"]["name"])
            if data is None:
                raise RuntimeError(f'configmap "{volume["configMap"]["name"]}" not found')
            for item in volume["configMap"].get("items", []) or []:
                if item.get("path") == filename and item.get("key") in data:
                    return data[item["key"]]
            if filename in data:
                return data[filename]
        raise RuntimeError(f"no ConfigMap volume with {filename} is mounted into container {container['name']}")

    def _volume_dir(self, pod: dict):
        """Host directory behind the Pod's first PersistentVolumeClaim (or a per-Pod emptyDir)."""
        ns = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes", []) or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                path = self.cfg.volumes_dir / ns / claim
                break
        else:
            path = self.cfg.volumes_dir / ns / f"emptydir-{pod['metadata']['name']}"
        path.mkdir(parents=True, exist_ok=True)
        return path
