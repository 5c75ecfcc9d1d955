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

Once started, the components are supervised as k3s's systemd unit supervises k3s (``Restart=always``,
``RestartSec=5s``): a component that exits is started again with the same command line (same flags,
certificates and etcd data, so the cluster state survives) after :data:`RESTART_SEC` (1 s in the twin). A
component that exits again within :data:`STABLE_AFTER` seconds of its start waits twice as long each time (up to
:data:`RESTART_MAX`); after :data:`START_LIMIT` such exits in a row the supervisor gives up on it (state
``failed``, like systemd's ``start-limit-hit``) until :meth:`ControlPlane.release` starts it again. Each exit and
restart is written to the component's log and counted in :meth:`ControlPlane.snapshot`. :meth:`ControlPlane.hold`
kills a component and keeps it down until :meth:`ControlPlane.release` (the ``apiserver-down`` fault);
:meth:`ControlPlane.stop` ends the supervision first, so a stopped twin stays stopped.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from lab.controlplane.pki import LabPKI

log = logging.getLogger("lab.controlplane")

SERVICE_CIDR = "10.43.0.0/16"  # k3s's default service CIDR
CLUSTER_NAME = "homelab-twin"

# The supervisor's restart policy (systemd's Restart=always; k3s's unit has RestartSec=5s)
RESTART_SEC = 1.0  # seconds from an exit to the restart
STABLE_AFTER = 10.0  # a component that ran this long before it exited is restarted after RESTART_SEC again
RESTART_MAX = 30.0  # the longest wait between restarts of a component that keeps exiting at once
START_LIMIT = 10  # quick exits in a row after which the supervisor gives up (state "failed")

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
    # supervision: see ControlPlane._supervise
    state: str = "starting"  # starting | running | restarting | held | failed | stopped
    restarts: int = 0  # how many times the supervisor started it again
    last_exit: dict | None = None  # code, signal, at, uptime_s, reason of the last exit
    quick_exits: int = 0  # exits in a row within STABLE_AFTER of the start
    held: bool = False  # kept down (ControlPlane.hold) until released
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # ends a restart wait at once (release)
    supervisor: asyncio.Task | None = None
    launching: asyncio.Task | None = None  # a restart in progress (stop() waits for it, then stops the process)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def describe(self) -> dict:
        return {
            "pid": self.process.pid if self.process else None,
            "running": self.running,
            "state": self.state,
            "exit_code": None if self.process is None else self.process.returncode,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
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
        self._stopping = False
        # the restart policy (module constants; tests shorten them)
        self.restart_sec = RESTART_SEC
        self.stable_after = STABLE_AFTER
        self.restart_max = RESTART_MAX
        self.start_limit = START_LIMIT
        self.health_timeout = 120.0

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
        """Start etcd, then the API server, then the controller manager and the scheduler; wait healthy each.

        Then supervise them: a component that exits is started again (see the module docstring).
        """
        self._stopping = False
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
        self.supervise()

    def supervise(self) -> None:
        """Watch every started component and start it again when it exits (done by :meth:`start`)."""
        for component in self.components:
            if component.supervisor is None:
                component.state = "running"
                component.supervisor = asyncio.create_task(
                    self._supervise(component), name=f"supervise-{component.name}"
                )

    async def _launch(self, component: Component) -> Component:
        await self._spawn(component)
        self.components.append(component)
        return component

    async def _spawn(self, component: Component) -> None:
        """Start the component's process with its command line, its output appended to its log."""
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
        component.state = "starting"
        log.info("started %s (pid %s)", component.name, component.process.pid)

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

    # -- supervision -------------------------------------------------------------------------------------------

    async def _supervise(self, component: Component) -> None:
        """Start ``component`` again whenever it exits, until :meth:`stop` (systemd's ``Restart=always``)."""
        while not self._stopping:
            await component.process.wait()
            if self._stopping:
                return
            self._exited(component)
            while True:
                await self._wait_restart(component)
                if self._stopping:
                    return
                launch = component.launching = asyncio.ensure_future(self._spawn(component))
                try:
                    await asyncio.shield(launch)  # a stop() meanwhile waits for it, then stops the process
                except OSError as exc:  # the binary is gone or cannot run: counts as an exit at once
                    component.launching = None
                    component.quick_exits += 1
                    self._note(component, f"{component.name} cannot be started: {exc}")
                    continue
                component.launching = None
                break
            component.restarts += 1
            self._note(
                component, f"{component.name} started again (pid {component.process.pid}, restart {component.restarts})"
            )
            try:
                await self._wait_healthy([component], self.health_timeout)
            except ControlPlaneError as exc:  # it exited again (the loop restarts it) or is slow to be healthy
                log.warning("%s", str(exc).splitlines()[0])
            else:
                component.state = "running"
                took = time.monotonic() - component.started
                self._note(component, f"{component.name} healthy {took:.1f} s after start", lab_log=False)

    def _exited(self, component: Component) -> None:
        """Record an exit of ``component`` (last_exit, the count of quick exits) and say what happens next."""
        code = component.process.returncode
        uptime = time.monotonic() - component.started
        signame = None
        if code < 0:
            with contextlib.suppress(ValueError):
                signame = signal.Signals(-code).name
        component.last_exit = {
            "code": code,
            "signal": signame,
            "at": _now(),
            "uptime_s": round(uptime, 1),
            "reason": "held down" if component.held else "exited",
        }
        how = f"killed by {signame or -code}" if code < 0 else f"exited with code {code}"
        if component.held:
            component.quick_exits = 0
            self._note(component, f"{component.name} {how}; held down until released")
            return
        component.quick_exits = component.quick_exits + 1 if uptime < self.stable_after else 1
        if component.quick_exits > self.start_limit:
            self._note(
                component,
                f"{component.name} {how} after {uptime:.1f} s; {component.quick_exits - 1} quick exits in a row: "
                "not restarted any more (start limit)",
            )
            return
        self._note(
            component,
            f"{component.name} {how} after {uptime:.1f} s; restart {component.restarts + 1} in "
            f"{self._restart_delay(component):.1f} s",
        )

    def _restart_delay(self, component: Component) -> float | None:
        """Seconds to wait before the next start (doubling while it exits at once); None: wait for release."""
        if component.held or component.quick_exits > self.start_limit:
            return None
        return min(self.restart_sec * 2 ** max(component.quick_exits - 1, 0), self.restart_max)

    async def _wait_restart(self, component: Component) -> None:
        """Wait the restart delay, or while held (or given up) until :meth:`release`."""
        while not self._stopping:
            delay = self._restart_delay(component)
            component.state = "restarting" if delay is not None else "held" if component.held else "failed"
            if delay is None:
                await component.wake.wait()
                component.wake.clear()
                if not component.held:
                    component.quick_exits = 0  # released: a fresh start, with the whole start limit
                    return
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(component.wake.wait(), delay)
            component.wake.clear()
            if not component.held:
                return

    def _note(self, component: Component, message: str, lab_log: bool = True) -> None:
        """What the supervisor did, in the component's own log (and the lab log)."""
        if lab_log:
            log.warning("%s", message)
        with contextlib.suppress(OSError), component.log_file.open("a") as out:
            out.write(f"{_now()} lab-supervisor: {message}\n")

    def component(self, name: str) -> Component:
        """The component called ``name``; ``KeyError`` naming the known ones otherwise."""
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(f"no control-plane component {name!r}; known: {', '.join(c.name for c in self.components)}")

    async def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Send ``sig`` to the component's process and wait until it exited (the supervisor restarts it).

        Returns the pid that was killed, or None when the component was not running.
        """
        component = self.component(name)
        if component.launching is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(component.launching)
        process = component.process
        if process is None or process.returncode is not None:
            return None
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        await process.wait()
        return process.pid

    async def hold(self, name: str) -> int | None:
        """Kill the component (SIGKILL) and keep it down until :meth:`release`; returns the pid killed."""
        component = self.component(name)
        component.held = True
        component.wake.clear()
        return await self.kill(name, signal.SIGKILL)

    def release(self, name: str) -> None:
        """Start a held (or given-up, or restart-waiting) component again at once."""
        component = self.component(name)
        component.held = False
        component.wake.set()

    async def wait_healthy(self, name: str, timeout: float) -> bool:
        """Wait until the component runs and answers its health check; False after ``timeout`` seconds."""
        component = self.component(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if component.running and await asyncio.to_thread(self._healthy, component.health_url):
                return True
            await asyncio.sleep(0.25)
        return False

    async def stop(self, timeout: float = 15.0) -> None:
        """End the supervision, then stop the components in reverse order of start: SIGTERM, then SIGKILL after
        ``timeout`` seconds. A restart in progress is waited for and its process stopped too."""
        self._stopping = True
        supervisors = [c.supervisor for c in self.components if c.supervisor is not None]
        for task in supervisors:
            task.cancel()
        await asyncio.gather(*supervisors, return_exceptions=True)
        for component in self.components:
            component.supervisor = None
            if component.launching is not None:
                with contextlib.suppress(Exception):
                    await component.launching
                component.launching = None
        for component in reversed(self.components):
            component.state = "stopped"
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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (for error messages); "(no log)" when there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


__all__ = ["ControlPlane", "ControlPlaneError", "identities", "log_tail"]
