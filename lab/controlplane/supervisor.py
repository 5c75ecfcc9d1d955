"""Runs the twin's Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

The upstream components (built by :mod:`lab.controlplane.build`) run as child processes of ``lab serve`` on
the twin's own loopback address, with TLS everywhere and one client certificate per component
(:mod:`lab.controlplane.pki`). Logs go to ``LAB_DIR/logs/<component>.log``; etcd keeps its data in
``LAB_DIR/etcd``, so a ``lab down`` / ``lab up`` keeps the cluster and ``lab reset`` starts empty.

Flags that differ from upstream defaults, and why (the twin's clock runs ``time_scale`` times faster for the
emulated machines, but the control plane runs in real time, so its timers are shortened where the stories'
behaviour depends on them):

* etcd ``--unsafe-no-fsync``: the twin's data is disposable; it saves seconds on every write burst.
* kube-apiserver ``--endpoint-reconciler-type=none``: the twin's address is a loopback address, which
  Endpoints validation refuses; nothing in the twin reaches the API through the ``kubernetes`` Service.
* kube-apiserver ``--default-not-ready-toleration-seconds`` / ``--default-unreachable-toleration-seconds``:
  300 s scaled (at least 5 s): Pods on a node that stays NotReady are evicted, as on k3s, a scaled 5 minutes
  later.
* kube-apiserver ``--authorization-mode=Node,RBAC`` and ``--enable-admission-plugins=NodeRestriction``: as
  k3s; each node's kubelet has its own ``system:node:<name>`` identity.
* kube-controller-manager ``--node-monitor-period=1s --node-monitor-grace-period=8s`` (upstream 5 s and 40 s):
  a node whose kubelet stops renewing its Lease becomes ``Unknown`` after 8 s; the twin's kubelet renews every
  2 s.
* kube-controller-manager and kube-scheduler ``--leader-elect=false``: one instance each.
* kube-scheduler ``podInitialBackoffSeconds: 1``, ``podMaxBackoffSeconds: 2`` (upstream 1 s and 10 s): an
  unschedulable Pod is retried within 2 s of a node change, matching the scaled clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab.controlplane.pki import LabPKI

log = logging.getLogger("lab.controlplane")

SERVICE_CIDR = "10.43.0.0/16"  # k3s's default service CIDR
CLUSTER_NAME = "homelab-twin"

IDENTITIES_BASE: dict[str, tuple[str, str | None]] = {
    "admin": ("twin-admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
    "kube-proxy": ("system:kube-proxy", None),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
    "apiserver-etcd-client": ("kube-apiserver-etcd-client", None),
}


def identities(nodes: list[str]) -> dict[str, tuple[str, str | None]]:
    """Every client identity of the twin: the components' and one kubelet per node (``kubelet-<node>``)."""
    result = dict(IDENTITIES_BASE)
    for node in nodes:
        result[f"kubelet-{node}"] = (f"system:node:{node}", "system:nodes")
    return result


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The component gets SIGTERM when ``lab serve`` dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Component:
    name: str
    argv: list[str]
    health_url: str
    log_file: Path
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def describe(self) -> dict:
        return {
            "pid": self.process.pid if self.process else None,
            "running": self.running,
            "exit_code": None if self.process is None else self.process.returncode,
            "health": self.health_url,
            "log": str(self.log_file),
        }


class ControlPlaneError(RuntimeError):
    """A component did not start or did not become healthy; the message names it and its log."""


class ControlPlane:
    """etcd and the three Kubernetes components of one twin.

    ``address`` is the twin's loopback address, ``ports`` the ``controlplane`` ports of ``lab/topology.yaml``,
    ``bin_dir`` the built binaries. :meth:`start` raises :class:`ControlPlaneError` (after stopping whatever
    it started) when a component exits or is not healthy within ``timeout`` seconds.
    """

    def __init__(self, lab_dir: Path, address: str, ports: dict, bin_dir: Path, pki: LabPKI, time_scale: float):
        self.lab_dir = lab_dir
        self.address = address
        self.ports = ports
        self.bin_dir = bin_dir
        self.pki = pki
        self.time_scale = time_scale
        self.components: list[Component] = []

    # -- addresses ---------------------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"https://{self.address}:{self.ports['kube-apiserver']}"

    @property
    def etcd_url(self) -> str:
        return f"https://{self.address}:{self.ports['etcd-client']}"

    def kubeconfig(self, identity: str) -> Path:
        return self.pki.path(f"{identity}.kubeconfig")

    # -- command lines -----------------------------------------------------------------------------------------

    def _binary(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise ControlPlaneError(f"{path} is missing: run `make controlplane` (python3 -m lab.controlplane.build)")
        return str(path)

    def _etcd(self) -> Component:
        p, a = self.ports, self.address
        server = self.pki.pair("server")
        peer = f"http://{a}:{p['etcd-peer']}"
        argv = [
            self._binary("etcd"),
            "--name=twin",
            f"--data-dir={self.lab_dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=twin={peer}",
            "--initial-cluster-state=new",
            f"--listen-metrics-urls=http://{a}:{p['etcd-metrics']}",
            f"--cert-file={server.cert}",
            f"--key-file={server.key}",
            f"--trusted-ca-file={self.pki.ca_file}",
            "--client-cert-auth=true",
            "--unsafe-no-fsync=true",
            "--logger=zap",
            "--log-level=warn",
        ]
        return Component("etcd", argv, f"http://{a}:{p['etcd-metrics']}/health", self._log("etcd"))

    def _apiserver(self) -> Component:
        server = self.pki.pair("server")
        etcd_client = self.pki.pair("apiserver-etcd-client")
        kubelet_client = self.pki.pair("apiserver-kubelet-client")
        toleration = str(max(5, round(300 * self.time_scale)))
        argv = [
            self._binary("kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--etcd-cafile={self.pki.ca_file}",
            f"--etcd-certfile={etcd_client.cert}",
            f"--etcd-keyfile={etcd_client.key}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={self.ports['kube-apiserver']}",
            f"--tls-cert-file={server.cert}",
            f"--tls-private-key-file={server.key}",
            f"--client-ca-file={self.pki.ca_file}",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            f"--kubelet-certificate-authority={self.pki.ca_file}",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki.sa_pub}",
            f"--service-account-signing-key-file={self.pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--default-not-ready-toleration-seconds={toleration}",
            f"--default-unreachable-toleration-seconds={toleration}",
            "--profiling=false",
            "--v=1",
        ]
        return Component("kube-apiserver", argv, f"{self.api_url}/readyz", self._log("kube-apiserver"))

    def _controller_manager(self) -> Component:
        kubeconfig = self.pki.kubeconfig(
            self.kubeconfig("kube-controller-manager"), self.api_url, "kube-controller-manager"
        )
        argv = [
            self._binary("kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            *self._serving_flags("kube-controller-manager", kubeconfig),
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.pki.sa_key}",
            f"--root-ca-file={self.pki.ca_file}",
            f"--cluster-name={CLUSTER_NAME}",
            "--node-monitor-period=1s",
            "--node-monitor-grace-period=8s",
            "--profiling=false",
            "--v=1",
        ]
        return self._secure_component("kube-controller-manager", argv)

    def _scheduler(self) -> Component:
        kubeconfig = self.pki.kubeconfig(self.kubeconfig("kube-scheduler"), self.api_url, "kube-scheduler")
        config = self.pki.path("kube-scheduler.yaml")
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(kubeconfig)},
                    "leaderElection": {"leaderElect": False},
                    "podInitialBackoffSeconds": 1,
                    "podMaxBackoffSeconds": 2,
                }
            )
        )
        argv = [
            self._binary("kube-scheduler"),
            f"--config={config}",
            *self._serving_flags("kube-scheduler", kubeconfig),
            "--profiling=false",
            "--v=1",
        ]
        return self._secure_component("kube-scheduler", argv)

    def _serving_flags(self, name: str, kubeconfig: Path) -> list[str]:
        """Secure serving of the controller manager or the scheduler: the twin's address and certificate, and
        delegated authentication and authorization through the API server."""
        server = self.pki.pair("server")
        return [
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={self.address}",
            f"--secure-port={self.ports[name]}",
            f"--tls-cert-file={server.cert}",
            f"--tls-private-key-file={server.key}",
        ]

    def _secure_component(self, name: str, argv: list[str]) -> Component:
        return Component(name, argv, f"https://{self.address}:{self.ports[name]}/healthz", self._log(name))

    def _log(self, name: str) -> Path:
        return self.lab_dir / "logs" / f"{name}.log"

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self, timeout: float = 120.0) -> None:
        """Start etcd, then the API server, then the controller manager and the scheduler; wait healthy each."""
        try:
            etcd = await self._launch(self._etcd())
            await self._wait_healthy([etcd], timeout)
            apiserver = await self._launch(self._apiserver())
            await self._wait_healthy([apiserver], timeout)
            rest = [await self._launch(self._controller_manager()), await self._launch(self._scheduler())]
            await self._wait_healthy(rest, timeout)
        except BaseException:
            await self.stop()
            raise

    async def _launch(self, component: Component) -> Component:
        component.log_file.parent.mkdir(parents=True, exist_ok=True)
        with component.log_file.open("ab") as out:
            component.process = await asyncio.create_subprocess_exec(
                *component.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        component.started = time.monotonic()
        self.components.append(component)
        log.info("started %s (pid %s)", component.name, component.process.pid)
        return component

    async def _wait_healthy(self, components: list[Component], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(components)
        while pending:
            for component in list(pending):
                if not component.running:
                    raise ControlPlaneError(
                        f"{component.name} exited with code {component.process.returncode} during start; "
                        f"last lines of {component.log_file}:\n{log_tail(component.log_file)}"
                    )
                if await asyncio.to_thread(self._healthy, component.health_url):
                    log.info("%s healthy after %.1f s", component.name, time.monotonic() - component.started)
                    pending.remove(component)
            if pending and time.monotonic() > deadline:
                names = ", ".join(c.name for c in pending)
                raise ControlPlaneError(
                    f"{names} not healthy within {timeout:.0f} s; see " + ", ".join(str(c.log_file) for c in pending)
                )
            if pending:
                await asyncio.sleep(0.25)

    def _healthy(self, url: str) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_file))
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:  # noqa: S310 - our own URL
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
            return False

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop the components in reverse order of start: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        for component in reversed(self.components):
            proc = component.process
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            log.info("stopped %s", component.name)
        self.components.clear()

    def snapshot(self) -> dict:
        return {c.name: c.describe() for c in self.components}


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (for error messages); "(no log)" when there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


__all__ = ["ControlPlane", "ControlPlaneError", "identities", "log_tail"]
