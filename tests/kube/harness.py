"""Harness for the twin's Kubernetes API contract tests.

The API server runs on its own asyncio loop in a background thread, over HTTPS with a trustme CA on an
ephemeral 127.0.0.1 port, so the real clients (kubectl, helm, ansible-playbook as subprocesses and the blocking
``kubernetes`` client) can be driven from ordinary synchronous tests. ``server.call(fn, ...)`` runs ``fn`` on
the server's loop (the cluster is not thread-safe).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from aiohttp import web

from lab.kube import Cluster, make_kube_app

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
HELM = str(ROOT / ".venv" / "bin" / "helm")
ANSIBLE_PLAYBOOK = str(ROOT / ".venv" / "bin" / "ansible-playbook")
KUBECTL = shutil.which("kubectl") or "kubectl"
TOKEN = "twin-test-token-" + uuid.uuid4().hex[:8]

DEFAULT_NODES = [
    ("k3s-master", {"node-role.kubernetes.io/control-plane": "true"}, [], {"cpu": "2", "memory": "4Gi"}),
    ("k3s-worker-01", {}, [], {"cpu": "4", "memory": "8Gi"}),
    ("k3s-worker-02", {}, [], {"cpu": "6", "memory": "8Gi"}),
]


class FakeKubelet:
    """A kubelet for tests: a container becomes Ready ``delay`` seconds after ``start_pod``.

    Images containing ``crash`` go to CrashLoopBackOff instead. Every call is recorded in ``calls`` as
    ``(event, pod name, monotonic time)`` with event ``start``, ``stop`` (called) or ``stopped`` (returned);
    ``running`` maps running pod names to ``namespace/instance`` and ``max_running`` keeps the most Pods of one
    instance that ever ran at the same time.
    """

    def __init__(self, delay: float = 0.3):
        self.delay = delay
        self.cluster: Cluster | None = None
        self.calls: list[tuple[str, str, float]] = []
        self.running: dict[str, str] = {}
        self.max_running: dict[str, int] = {}

    def _group(self, pod: dict) -> str:
        return (
            pod["metadata"]["namespace"]
            + "/"
            + pod["metadata"].get("labels", {}).get("app.kubernetes.io/instance", pod["metadata"]["name"])
        )

    async def start_pod(self, pod: dict) -> None:
        assert self.cluster is not None
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self.calls.append(("start", name, time.monotonic()))
        self.cluster.set_pod_status(ns, name, "Pending", False, reason="ContainerCreating")
        await asyncio.sleep(self.delay)
        if "crash" in pod["spec"]["containers"][0]["image"]:
            self.cluster.set_pod_status(ns, name, "Running", False, "CrashLoopBackOff", "back-off restarting", 1)
            return
        group = self._group(pod)
        self.running[name] = group
        count = sum(1 for g in self.running.values() if g == group)
        self.max_running[group] = max(self.max_running.get(group, 0), count)
        self.cluster.set_pod_status(ns, name, "Running", True)

    async def stop_pod(self, pod: dict) -> None:
        name = pod["metadata"]["name"]
        self.calls.append(("stop", name, time.monotonic()))
        await asyncio.sleep(self.delay / 3)
        self.running.pop(name, None)
        self.calls.append(("stopped", name, time.monotonic()))


class KubeServer:
    """A :class:`Cluster` served over HTTPS on 127.0.0.1 from a background thread, plus a kubeconfig."""

    def __init__(self, workdir: Path, kubelet: Any = None, nodes=DEFAULT_NODES, time_scale: float = 0.01):
        self.workdir = workdir
        self.kubelet = kubelet
        self.nodes = nodes
        self.time_scale = time_scale
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kube-server", daemon=True)
        self.cluster: Cluster
        self.port = 0
        self.kubeconfig = workdir / "kubeconfig"
        self.ca_file = workdir / "ca.pem"
        self._runner: web.AppRunner | None = None

    def start(self) -> KubeServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.cluster = Cluster(kubelet=self.kubelet, time_scale=self.time_scale)
        if self.kubelet is not None:
            self.kubelet.cluster = self.cluster
        for name, labels, taints, capacity in self.nodes:
            self.cluster.add_node(name, labels=labels, taints=taints, capacity=capacity)
        self.cluster.seed(
            [
                {
                    "apiVersion": "node.k8s.io/v1",
                    "kind": "RuntimeClass",
                    "metadata": {"name": "nvidia"},
                    "handler": "nvidia",
                }
            ]
        )
        self._runner = web.AppRunner(make_kube_app(self.cluster, TOKEN), access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "twin",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(ca.cert_pem.bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "twin", "context": {"cluster": "twin", "user": "admin"}}],
            "current-context": "twin",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def _stop() -> None:
            await self.cluster.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def call(self, fn: Callable, *args, **kwargs) -> Any:
        """Run ``fn(*args, **kwargs)`` on the server loop (awaiting it if it returns an awaitable)."""

        async def runner() -> Any:
            result = fn(*args, **kwargs)
            if hasattr(result, "__await__"):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(30)

    def settle(self, timeout: float = 5.0) -> None:
        self.call(self.cluster.settle, timeout)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Poll ``predicate`` (run on the server loop) until truthy; returns its value. Fails on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.call(predicate)
            if value:
                return value
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}")

    # -- client helpers --------------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "KUBECACHEDIR": str(self.workdir / "kube-cache"),
                "HELM_CACHE_HOME": str(self.workdir / "helm-cache"),
                "HELM_CONFIG_HOME": str(self.workdir / "helm-config"),
                "HELM_DATA_HOME": str(self.workdir / "helm-data"),
                "ANSIBLE_LOCALHOST_WARNING": "false",
                "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
                "PATH": f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}",
            }
        )
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None):
        proc = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout, input=stdin, cwd=self.workdir
        )
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None):
        return self.run(KUBECTL, *args, check=check, timeout=timeout, stdin=stdin)

    def helm(self, *args: str, check: bool = True, timeout: float = 90):
        return self.run(HELM, *args, check=check, timeout=timeout)

    def api_client(self):
        """A ``kubernetes.client.ApiClient`` configured from the kubeconfig (verifies the trustme CA)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        return client.ApiClient(configuration)
