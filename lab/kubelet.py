"""The twin's kubelet: the nodes of the home lab, as ordinary clients of the real Kubernetes API.

There is no container runtime here, so this is the part of the node that the twin emulates. For every node of
``lab/topology.yaml`` a :class:`NodeAgent` with its own identity (``system:node:<name>``, group
``system:nodes``; the API server's Node authorizer and NodeRestriction admission apply to it as to a real
kubelet):

* registers the Node (labels, taints, capacity and allocatable from the LXC's memory read when the kubelet
  starts, the extended resource ``nvidia.com/gpu`` on the GPU node) and renews its Lease in
  ``kube-node-lease`` every 2 s, posting its node status again whenever the Node's differs (the node controller
  marked it Unknown while the API server was down) and at least every minute; stops renewing while its LXC is
  stopped and reports ``Ready=False`` (graceful node shutdown); reports Ready with the new capacity when the LXC
  starts again;
* watches the Pods bound to it and runs them as a kubelet does, with Pod IPs from the node's ``10.42.N.0/24``:

  - an image the lab does not know (``lab/images.yaml``) never starts: ``ErrImagePull``, then
    ``ImagePullBackOff``;
  - a container of an inference Deployment (``workloads`` in the topology) runs its server: the emulated
    Ollama or vLLM in this process, or the real LiteLLM proxy as a subprocess, each on a port of its own on the
    twin's address (``resolve`` maps ``podIP:containerPort`` there for the service proxy); a container whose
    memory limit is below what the workload needs is ``OOMKilled``; any other container runs at once
    (nothing to emulate);
  - readiness follows the container's ``readinessProbe`` (HTTP GET against the emulated server), also while
    the Pod terminates;
  - a container that dies (process exit, OOM, :meth:`Kubelet.kill_container`, a SIGKILL) is restarted as
    ``restartPolicy`` says, with CrashLoopBackOff back-off (upstream 10 s doubling to 300 s, times
    ``time_scale``, at least 1 s);
  - a Pod being deleted (``deletionTimestamp``) is terminated as the kubelet does it, in real seconds (the
    control plane runs in real time, so these are not scaled): the grace period is the Pod's
    ``deletionGracePeriodSeconds`` (else ``spec.terminationGracePeriodSeconds``, 30), at least 1 s, and can
    only get shorter; for every running container at once its ``lifecycle.preStop`` hook runs (``sleep``,
    an ``exec`` that is a sleep, ``httpGet`` against the emulated server; other commands are logged and
    skipped), cut when the grace period runs out; then "SIGTERM": LiteLLM's process gets a real SIGTERM
    (uvicorn stops accepting and finishes the requests in flight), an emulated server stops listening, closes
    its idle connections and lets the requests in flight finish, any other container exits at once; what has
    not exited when the grace period (counted from the deletion, the hook included) runs out, and at least
    2 s after the SIGTERM (upstream's minimum), is killed ("SIGKILL": the connections still open are reset).
    A container that exits in time reports its exit code (0 ``Completed``), a killed one 137 ``Error``; the
    Pod gets its final status (phase ``Succeeded`` or ``Failed``), then is removed (delete with grace period
    0 and the Pod's UID, as the kubelet confirms termination). A node that is down confirms nothing.

Logs of each container go to ``LAB_DIR/logs/pods/<namespace>_<pod>_<container>.log``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml
from aiohttp import web
from kubernetes import client
from kubernetes.client.rest import ApiException

from lab.kubeclient import Reflector, close_api_client, new_api_client
from lab.litellm_runner import BASE_ENV, LiteLLMProcess, LiteLLMZygote, interpreter
from lab.units import mib_quantity, parse_quantity

if TYPE_CHECKING:
    from lab.runtime import LabRuntime

log = logging.getLogger("lab.kubelet")

KUBELET_VERSION = "v1.32.9"
LEASE_DURATION = 40  # seconds, the kubelet default; the controller manager's grace period is what counts
LEASE_RENEW = 2.0  # seconds between Lease renewals (and node status checks, see NodeAgent.sync_status)
# the node status loop, scaled like the node monitor grace period (upstream 40 s, the twin 8 s): the kubelet
# compares its status with the Node's every nodeStatusUpdateFrequency (upstream 10 s; here every Lease renewal)
# and posts it when it differs, or unchanged after nodeStatusReportFrequency (upstream 5 min)
NODE_STATUS_REPORT = 60.0
HEARTBEAT_RETRY = 0.5  # seconds between heartbeat tries while the API server cannot be reached
HEARTBEAT_TIMEOUT = 5  # seconds a heartbeat request may take
READY_MESSAGE = "kubelet is posting ready status"
KUBELET_PORT = 10250  # node N serves the kubelet API on the twin's address at 10250 + N
POD_CIDR = "10.42.0.0/16"  # k3s's default cluster CIDR; node N gets 10.42.N.0/24
IMAGES_FILE = Path(__file__).resolve().parent / "images.yaml"
# Pod termination, in real seconds (the control plane runs in real time: not scaled by time_scale)
DEFAULT_GRACE_PERIOD = 30  # spec.terminationGracePeriodSeconds when the Pod has none (the API server defaults it)
MIN_KILL_GRACE = 2.0  # upstream minimumGracePeriodInSeconds: a container always gets this long after SIGTERM
HARD_STOP_TIMEOUT = 0.5  # an emulated server's request handlers get this long to end once cancelled (SIGKILL)
_SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash", "ash", "/bin/ash"}
_SLEEP = re.compile(r"^\s*(?:exec\s+)?(?:/usr)?(?:/bin/)?sleep\s+(\d+(?:\.\d+)?)s?\s*;?\s*$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalise_image(ref: str) -> str:
    """``nginx`` -> ``docker.io/library/nginx:latest``, as containerd names an image reference."""
    name, digest = [*ref.split("@", 1), ""][:2]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = "docker.io/library/" + name
    elif not ("." in first or ":" in first or first == "localhost"):
        name = "docker.io/" + name
    return name + ("@" + digest if digest else "")


def load_images(path: Path = IMAGES_FILE) -> set[str]:
    """The image references the twin's registries serve (normalised)."""
    data = yaml.safe_load(path.read_text()) or {}
    return {normalise_image(ref) for ref in data.get("images", [])}


def exit_code(returncode: int | None) -> int:
    """A container's exit code as the runtime reports it: 128 + N for a process killed by signal N."""
    if returncode is None:
        return 1
    return 128 - returncode if returncode < 0 else returncode


def grace_period(pod: dict) -> float:
    """The Pod's termination grace period as the kubelet computes it: ``metadata.deletionGracePeriodSeconds`` (set
    by the API server at the deletion), else ``spec.terminationGracePeriodSeconds``, else 30; never below 1 s."""
    grace = (pod.get("metadata") or {}).get("deletionGracePeriodSeconds")
    if grace is None:
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    if grace is None:
        grace = DEFAULT_GRACE_PERIOD
    return float(max(int(grace), 1))


def sleep_seconds(command: list) -> float | None:
    """Seconds an ``exec`` hook sleeps when its command is a sleep (``["sleep", "5"]``, ``["/bin/sh", "-c",
    "sleep 5"]``), else None (a command the twin cannot run)."""
    words = [str(w) for w in command or []]
    if len(words) == 3 and words[0] in _SHELLS and words[1] == "-c":
        text = words[2]
    elif len(words) == 2:
        text = " ".join(words)
    else:
        return None
    match = _SLEEP.match(text)
    return float(match.group(1)) if match else None


class ContainerConfigError(Exception):
    """What a container needs before it can be created is missing; ``reason`` is the waiting reason to report:
    ``CreateContainerConfigError`` (a ConfigMap, Secret or key of its env) or ``ContainerCreating`` (a volume)."""

    def __init__(self, message: str, reason: str = "CreateContainerConfigError"):
        super().__init__(message)
        self.reason = reason


def _free_port(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    return sock


@dataclass
class Container:
    """One running (or waiting) container of a Pod."""

    name: str
    image: str
    kind: str | None = None  # ollama | vllm | litellm | None (nothing to emulate)
    port: int | None = None  # where its server listens on the twin's address
    runner: web.AppRunner | None = None
    process: LiteLLMProcess | None = None
    emulator: Any = None
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int | None = None
    ready: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    restart_count: int = 0
    last_state: dict = field(default_factory=dict)
    generation: int = 0  # incremented at every start; a probe of an earlier start stops
    stopping: bool = False  # got SIGTERM (the Pod terminates): its exit is the termination's, not a crash
    log_file: Path | None = None  # what `kubectl logs` shows
    logger: logging.Logger | None = None


@dataclass
class PodRuntime:
    """What the kubelet keeps of one Pod bound to its node."""

    uid: str
    namespace: str
    name: str
    node: str
    pod: dict
    ip: str | None = None
    start_time: str | None = None
    containers: dict[str, Container] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    deleted: bool = False
    posted: dict | None = None  # the status last patched, so an unchanged one is not sent again
    posted_version: str | None = None  # the resourceVersion that patch made; any other change resets `posted`
    termination: asyncio.Task | None = None  # preStop hooks, SIGTERM, SIGKILL (see Kubelet._terminate)
    terminating_since: float = 0.0  # time.monotonic() when the termination started
    grace: float = 0.0  # its grace period in seconds (only ever shortened)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class NodeAgent:
    """The kubelet of one node: registration, Lease, status and its Pods."""

    def __init__(self, kubelet: Kubelet, name: str, spec: dict, index: int, kubeconfig: Path):
        self.kubelet = kubelet
        self.name = name
        self.spec = spec
        self.index = index
        self.api = new_api_client(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)
        self.running = False
        self.memory_mib = 0
        self.pods: dict[str, PodRuntime] = {}
        self.network = ipaddress.ip_network(f"10.42.{index}.0/24")
        self.used_ips: set[str] = set()
        self._lease_task: asyncio.Task | None = None
        self._heartbeat_stop = asyncio.Event()  # ends the heartbeat loop after its current request
        self.registered = False  # the Node was created/taken over by this start of the kubelet
        self.boot_id = ""  # nodeInfo.bootID: new at every start of the node's machine
        self.status_posted = 0.0  # time.monotonic() of the last node status post
        self._pods_reflector: Reflector | None = None
        self.port = KUBELET_PORT + index  # the kubelet API (logs) on the twin's address
        self._server: web.AppRunner | None = None

    # -- registration and heartbeat ----------------------------------------------------------------------------

    def _resources(self) -> tuple[dict, dict]:
        reserved = int(self.kubelet.topology["kubernetes"].get("reserved_memory_mib", 0))
        capacity = {"cpu": str(self.spec["cpu"]), "memory": mib_quantity(self.memory_mib), "pods": "110"}
        allocatable = {"cpu": str(self.spec["cpu"]), "memory": mib_quantity(self.memory_mib - reserved), "pods": "110"}
        for resource, amount in (self.spec.get("extended") or {}).items():
            capacity[resource] = allocatable[resource] = str(amount)
        return capacity, allocatable

    def _status(self, ready: bool, message: str, current: dict | None = None) -> dict:
        """The node status this kubelet reports; ``current`` (the Node's status) keeps each condition's
        lastTransitionTime while its status stays the same."""
        capacity, allocatable = self._resources()
        now = _now()
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHasSufficient{r}", "message": f"kubelet has {m}"}
            for t, r, m in (
                ("MemoryPressure", "Memory", "sufficient memory available"),
                ("DiskPressure", "Disk", "no disk pressure"),
                ("PIDPressure", "PID", "sufficient PID available"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "KubeletReady" if ready else "KubeletNotReady",
                "message": message,
            }
        )
        previous = {c.get("type"): c for c in (current or {}).get("conditions") or []}
        for condition in conditions:
            old = previous.get(condition["type"]) or {}
            condition["lastHeartbeatTime"] = now
            condition["lastTransitionTime"] = (
                old["lastTransitionTime"]
                if old.get("status") == condition["status"] and old.get("lastTransitionTime")
                else now
            )
        return {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": self.kubelet.address},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": f"twin-{self.name}",
                "systemUUID": f"twin-{self.name}",
                "bootID": self.boot_id,
                "kernelVersion": "6.8.12-twin",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://twin",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self, memory_mib: int) -> None:
        """Create the Node (or take over the existing one) and post Ready with ``memory_mib`` of memory."""
        self.memory_mib = memory_mib
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
        }
        labels.update({k: v for k, v in (self.spec.get("labels") or {}).items() if "node-role.kubernetes.io" not in k})
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": list(self.spec.get("taints") or [])},
        }
        try:
            self.core.create_node(body, _request_timeout=HEARTBEAT_TIMEOUT)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.post_status(True, READY_MESSAGE)
        self.registered = True

    def post_status(self, ready: bool, message: str, current: dict | None = None) -> None:
        self.core.patch_node_status(
            self.name, {"status": self._status(ready, message, current)}, _request_timeout=HEARTBEAT_TIMEOUT
        )
        self.status_posted = time.monotonic()

    def sync_status(self) -> bool:
        """The kubelet's node status loop: read the Node and post Ready when what the API has differs from what
        this kubelet reports (the node controller set Ready=Unknown, "Kubelet stopped posting node status",
        while the API server was unreachable; capacity changed) or :data:`NODE_STATUS_REPORT` seconds passed
        since the last post. Returns whether it posted."""
        node = self.core.read_node(self.name, _request_timeout=HEARTBEAT_TIMEOUT)
        current = self.api.sanitize_for_serialization(node.status) or {}
        if not self._status_differs(current, self._status(True, READY_MESSAGE, current)):
            if time.monotonic() - self.status_posted < NODE_STATUS_REPORT:
                return False
        self.post_status(True, READY_MESSAGE, current)
        return True

    @staticmethod
    def _status_differs(current: dict, wanted: dict) -> bool:
        """Whether the Node's status differs from ``wanted`` in more than heartbeat times (quantities compared by
        value: the API server writes ``8Gi`` for ``8192Mi``)."""
        have = {c.get("type"): c for c in current.get("conditions") or []}
        for condition in wanted["conditions"]:
            old = have.get(condition["type"]) or {}
            if any(old.get(key) != condition[key] for key in ("status", "reason", "message")):
                return True
        for key in ("capacity", "allocatable"):
            mine, theirs = wanted[key], current.get(key) or {}
            if set(mine) != set(theirs) or any(parse_quantity(mine[k]) != parse_quantity(theirs[k]) for k in mine):
                return True
        if [(a["type"], a["address"]) for a in wanted["addresses"]] != [
            (a.get("type"), a.get("address")) for a in current.get("addresses") or []
        ]:
            return True
        info = current.get("nodeInfo") or {}
        return (current.get("daemonEndpoints") or {}) != wanted["daemonEndpoints"] or any(
            info.get(key) != value for key, value in wanted["nodeInfo"].items()
        )

    def renew_lease(self) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_DURATION,
                "renewTime": _micro_now(),
            },
        }
        try:
            self.coordination.patch_namespaced_lease(
                self.name, "kube-node-lease", {"spec": body["spec"]}, _request_timeout=HEARTBEAT_TIMEOUT
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            node = self.core.read_node(self.name, _request_timeout=HEARTBEAT_TIMEOUT)
            body["metadata"]["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node.metadata.uid}
            ]
            self.coordination.create_namespaced_lease("kube-node-lease", body, _request_timeout=HEARTBEAT_TIMEOUT)

    async def _lease_loop(self) -> None:
        """The kubelet's heartbeats while the machine runs: register the Node if that failed at start, renew the
        Lease and check the node status (:meth:`sync_status`) every :data:`LEASE_RENEW` seconds. While the API
        server cannot be reached, every :data:`HEARTBEAT_RETRY` seconds, so the node is Ready again within a
        heartbeat of the API's return. Ends after its current request once ``_heartbeat_stop`` is set."""
        failing_since: float | None = None
        while not self._heartbeat_stop.is_set():
            try:
                if not self.registered:
                    await asyncio.to_thread(self.register, self.memory_mib)
                await asyncio.to_thread(self.renew_lease)
                posted = await asyncio.to_thread(self.sync_status)
            except Exception as exc:  # the API may be restarting: try again soon
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("node %s: heartbeat failed (%s); trying every %.1f s", self.name, exc, HEARTBEAT_RETRY)
                delay = HEARTBEAT_RETRY
            else:
                if failing_since is not None:
                    log.warning(
                        "node %s: heartbeat back after %.1f s%s",
                        self.name,
                        time.monotonic() - failing_since,
                        ", node status posted" if posted else "",
                    )
                    failing_since = None
                delay = LEASE_RENEW
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heartbeat_stop.wait(), delay)

    async def _stop_heartbeat(self) -> None:
        """End the heartbeat loop, waiting for a request in flight (so no Ready post lands after a NotReady)."""
        task, self._lease_task = self._lease_task, None
        if task is None:
            return
        self._heartbeat_stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 4 * HEARTBEAT_TIMEOUT)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def start(self, memory_mib: int) -> None:
        """The machine runs: register the Node (Ready, with ``memory_mib``), start the heartbeats and the Pods.

        A first registration that fails raises; when the node was registered before (its machine started again)
        and the API cannot be reached now, the heartbeat loop registers it once the API answers.
        """
        if self._server is None:
            self._server = await self._serve_api()
        await self._stop_heartbeat()
        first = not self.boot_id
        self.memory_mib = memory_mib
        self.boot_id = f"boot-{time.time_ns()}"
        self.registered = False
        try:
            await asyncio.to_thread(self.register, memory_mib)
        except Exception as exc:
            if first:
                raise
            log.warning("node %s: registration failed (%s); the heartbeat retries it", self.name, exc)
        self.running = True
        self._heartbeat_stop = asyncio.Event()
        self._lease_task = asyncio.create_task(self._lease_loop())
        if self._pods_reflector is None:
            self._pods_reflector = Reflector(
                f"kubelet-{self.name}-pods",
                self.core.list_pod_for_all_namespaces,
                self._on_pods,
                asyncio.get_running_loop(),
                field_selector=f"spec.nodeName={self.name}",
            )
            self._pods_reflector.start()
        for pod in list(self.pods.values()):
            pod.wake.set()

    async def shutdown(self, message: str = "node is shutting down") -> None:
        """The node's machine stops: its containers die, the Lease is no longer renewed, status says NotReady."""
        self.running = False
        await self._stop_heartbeat()
        for pod in list(self.pods.values()):
            await self.kubelet.cancel_termination(pod)  # started again (nothing left to stop) when the node is up
            for container in pod.containers.values():
                await self.kubelet.stop_container(container)
                container.state, container.reason, container.ready = "waiting", "NodeShutdown", False
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.post_status, False, message)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.cleanup()
        if self._pods_reflector is not None:
            self._pods_reflector.stop()
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        for pod in list(self.pods.values()):
            if pod.task is not None:
                pod.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pod.task
            for container in pod.containers.values():
                await self.kubelet.stop_container(container)
        close_api_client(self.api)

    # -- the kubelet API: container logs -------------------------------------------------------------------

    async def _serve_api(self) -> web.AppRunner:
        """HTTPS on ``address:port`` with client certificates required (the API server's kubelet client)."""
        pki = self.kubelet.runtime.pki
        ctx = pki.server_context()
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(pki.ca_file))
        app = web.Application()
        app.router.add_get("/healthz", lambda _r: web.Response(text="ok"))
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.kubelet.address, self.port, ssl_context=ctx, reuse_address=True).start()
        return runner

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        """``GET /containerLogs/{ns}/{pod}/{container}``: what ``kubectl logs`` reads (tailLines, follow)."""
        ns, pod, name = (request.match_info[k] for k in ("namespace", "pod", "container"))
        container = next(
            (
                c
                for p in self.pods.values()
                if p.namespace == ns and p.name == pod
                for c in p.containers.values()
                if c.name == name
            ),
            None,
        )
        if container is None:
            raise web.HTTPNotFound(text=f"container {name} of pod {ns}/{pod} is not on node {self.name}")
        text = container.log_file.read_text(errors="replace") if container.log_file.exists() else ""
        tail = request.query.get("tailLines")
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-int(tail) :]) if int(tail) > 0 else ""
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(text.encode())
        if request.query.get("follow") in ("true", "1"):
            offset = container.log_file.stat().st_size if container.log_file.exists() else 0
            while container.state != "terminated" and self.running:
                await asyncio.sleep(0.5)
                if container.log_file.exists() and container.log_file.stat().st_size > offset:
                    with container.log_file.open("rb") as fh:
                        fh.seek(offset)
                        chunk = fh.read()
                    offset += len(chunk)
                    await response.write(chunk)
        await response.write_eof()
        return response

    # -- pods: watch ----------------------------------------------------------------------------------------

    def _on_pods(self, kind: str, data: Any) -> None:
        if kind == "SYNC":
            self._relist(data)
        else:
            self._on_event(kind, data)

    def _relist(self, pods: list[dict]) -> None:
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self._on_event("MODIFIED", pod)
        for uid, runtime in list(self.pods.items()):
            if uid not in seen:
                runtime.deleted = True
                runtime.wake.set()

    def _on_event(self, kind: str, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        runtime = self.pods.get(uid)
        if kind == "DELETED":
            if runtime is not None:
                runtime.deleted = True
                runtime.wake.set()
            return
        if runtime is None:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            runtime = PodRuntime(uid, pod["metadata"]["namespace"], pod["metadata"]["name"], self.name, pod)
            self.pods[uid] = runtime
            runtime.task = asyncio.create_task(self.kubelet.pod_worker(self, runtime))
        if pod["metadata"].get("resourceVersion") != runtime.posted_version:
            runtime.posted = None  # changed by someone else (the node controller, a deletion): post again
        runtime.pod = pod
        runtime.wake.set()

    # -- pod IPs --------------------------------------------------------------------------------------------

    def allocate_ip(self, wanted: str | None = None) -> str:
        if wanted and wanted not in self.used_ips and ipaddress.ip_address(wanted) in self.network:
            self.used_ips.add(wanted)
            return wanted
        for host in list(self.network.hosts())[1:]:
            ip = str(host)
            if ip not in self.used_ips:
                self.used_ips.add(ip)
                return ip
        raise RuntimeError(f"node {self.name}: no free Pod IP in {self.network}")

    def release_ip(self, ip: str | None) -> None:
        if ip:
            self.used_ips.discard(ip)


class Kubelet:
    """The kubelets of all the twin's nodes, and the table of where their Pods' servers listen."""

    def __init__(self, runtime: LabRuntime):
        self.runtime = runtime
        self.cfg = runtime.cfg
        self.topology = runtime.cfg.topology
        self.address = runtime.cfg.address
        self.images = load_images()
        self.nodes: dict[str, NodeAgent] = {}
        self.endpoints: dict[tuple[str, int], tuple[str, int]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.admin = None  # an admin ApiClient for what k3s's server does for nodes (node-role labels)
        self._tasks: set[asyncio.Task] = set()
        self._litellm_zygote: LiteLLMZygote | None = None
        self._litellm_zygote_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self, kubeconfig_for: Any, admin_kubeconfig: Path) -> None:
        """Register every node whose machine runs (``kubeconfig_for(node)`` gives each kubelet's kubeconfig)."""
        self.loop = asyncio.get_running_loop()
        self.admin = new_api_client(admin_kubeconfig)
        for index, spec in enumerate(self.topology["kubernetes"]["nodes"]):
            agent = NodeAgent(self, spec["name"], spec, index, kubeconfig_for(spec["name"]))
            self.nodes[spec["name"]] = agent
        for agent in self.nodes.values():
            if self.runtime.node_machine_running(agent.name):
                await agent.start(self.runtime.node_memory_mib(agent.name))
        await asyncio.to_thread(self._label_roles)

    def _label_roles(self) -> None:
        """node-role labels, which kubelets may not set on themselves (NodeRestriction); k3s's server sets them."""
        core = client.CoreV1Api(self.admin)
        for agent in self.nodes.values():
            roles = {k: v for k, v in (agent.spec.get("labels") or {}).items() if "node-role.kubernetes.io" in k}
            if roles:
                with contextlib.suppress(ApiException):
                    core.patch_node(agent.name, {"metadata": {"labels": roles}})

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for agent in self.nodes.values():
            await agent.close()
        if self._litellm_zygote is not None:
            await self._litellm_zygote.close()
        close_api_client(self.admin)

    async def node_stopped(self, name: str) -> None:
        agent = self.nodes.get(name)
        if agent is not None and agent.running:
            await agent.shutdown()

    async def node_started(self, name: str, memory_mib: int) -> None:
        """The machine started: the kubelet reads the memory now and reports Ready with it."""
        agent = self.nodes.get(name)
        if agent is not None:
            await agent.start(memory_mib)

    def resolve(self, pod_ip: str, port: int) -> tuple[str, int] | None:
        """Where the server of the Pod with ``pod_ip`` listening on container ``port`` really is, or None."""
        return self.endpoints.get((pod_ip, int(port)))

    def snapshot(self) -> dict:
        nodes = {}
        for agent in self.nodes.values():
            nodes[agent.name] = {
                "running": agent.running,
                "memory_mib": agent.memory_mib,
                "pods": {
                    p.key: {
                        "ip": p.ip,
                        "terminating": p.termination is not None,
                        "containers": {
                            c.name: {
                                "image": c.image,
                                "kind": c.kind,
                                "state": c.state,
                                "reason": c.reason,
                                "ready": c.ready,
                                "port": c.port,
                                "restarts": c.restart_count,
                                **({"emulator": c.emulator.snapshot()} if c.emulator is not None else {}),
                            }
                            for c in p.containers.values()
                        },
                    }
                    for p in agent.pods.values()
                },
            }
        return nodes

    async def kill_deployment(self, namespace: str, deployment: str) -> list[str]:
        """Kill the containers of every Pod of ``namespace/deployment`` (``<deployment>-<hash>-<id>``) once."""
        killed = []
        for agent in self.nodes.values():
            for runtime in list(agent.pods.values()):
                parts = runtime.name.rsplit("-", 2)
                if runtime.namespace == namespace and len(parts) == 3 and parts[0] == deployment:
                    if await self.kill_container(namespace, runtime.name):
                        killed.append(runtime.name)
        return killed

    async def kill_container(self, namespace: str, pod: str, container: str | None = None) -> bool:
        """Kill a container's process, as the OOM killer or a crash would; the kubelet restarts it."""
        for agent in self.nodes.values():
            for runtime in agent.pods.values():
                if runtime.namespace == namespace and runtime.name == pod:
                    for c in runtime.containers.values():
                        if container is None or c.name == container:
                            await self.stop_container(c)
                            self._terminated(c, 137, "Error", "killed")
                            runtime.wake.set()
                            return True
        return False

    # -- the pod worker -------------------------------------------------------------------------------------

    async def pod_worker(self, agent: NodeAgent, runtime: PodRuntime) -> None:
        """Drive one Pod to the state its spec asks for, every time something changes (like kubelet's podWorkers)."""
        try:
            while True:
                await runtime.wake.wait()
                runtime.wake.clear()
                try:
                    done = await self._sync(agent, runtime)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("pod %s: sync failed: %s", runtime.key, exc)
                    await asyncio.sleep(1)
                    runtime.wake.set()
                    continue
                if done:
                    return
        finally:
            await self.cancel_termination(runtime)
            for container in runtime.containers.values():
                await self.stop_container(container)
                for handler in list(container.logger.handlers if container.logger else []):
                    container.logger.removeHandler(handler)
                    handler.close()
            agent.release_ip(runtime.ip)
            agent.pods.pop(runtime.uid, None)

    async def _sync(self, agent: NodeAgent, runtime: PodRuntime) -> bool:
        pod = runtime.pod
        if runtime.deleted:
            return True
        if not agent.running:
            return False  # a node that is down confirms nothing: a deleted Pod stays Terminating until it is back
        if pod["metadata"].get("deletionTimestamp"):
            return await self._sync_terminating(agent, runtime)
        if runtime.ip is None:
            runtime.ip = agent.allocate_ip((pod.get("status") or {}).get("podIP"))
            runtime.start_time = (pod.get("status") or {}).get("startTime") or _now()
        specs = pod["spec"].get("containers", [])
        for spec in specs:
            container = runtime.containers.get(spec["name"])
            if container is None:
                container = Container(spec["name"], spec.get("image", ""), kind=self._workload_kind(pod))
                stem = f"{runtime.namespace}_{runtime.name}_{spec['name']}"
                container.log_file = self.cfg.log_dir / "pods" / f"{stem}.log"
                runtime.containers[spec["name"]] = container
            if container.state == "running" and not self._alive(container):
                code = container.process.returncode
                self._terminated(container, exit_code(code), "Error", f"the process exited ({code})")
            if container.state != "running":
                await self._start_container(agent, runtime, spec, container)
        await self._post_pod_status(agent, runtime)
        return False

    # -- pod termination ------------------------------------------------------------------------------------

    async def _sync_terminating(self, agent: NodeAgent, runtime: PodRuntime) -> bool:
        """A Pod with a ``deletionTimestamp``: start its termination (once), shorten its grace period when the API
        server did, post its status while it runs (readiness goes on), then the final status and the confirmation.
        Returns True once the Pod is confirmed deleted."""
        grace = grace_period(runtime.pod)
        if runtime.termination is None:
            runtime.terminating_since, runtime.grace = time.monotonic(), grace
            log.info("pod %s: terminating, grace period %.0f s", runtime.key, grace)
            runtime.termination = asyncio.create_task(self._terminate(runtime))
            runtime.termination.add_done_callback(lambda task: self._terminated_pod(runtime, task))
        elif grace < runtime.grace:
            log.info("pod %s: grace period shortened to %.0f s", runtime.key, grace)
            runtime.grace = grace
        done = runtime.termination.done()
        await self._post_pod_status(agent, runtime)  # once done: the containers' exit codes, the terminal phase
        if not done:
            return False
        await asyncio.to_thread(self._confirm_deletion, agent, runtime)
        return True

    @staticmethod
    def _terminated_pod(runtime: PodRuntime, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("pod %s: termination failed: %s", runtime.key, task.exception())
        runtime.wake.set()

    async def cancel_termination(self, runtime: PodRuntime) -> None:
        """Abandon a termination in progress (the node went down, the Pod is gone from the API: its containers are
        stopped hard by the caller). A Pod still being deleted starts its termination again at its next sync."""
        task, runtime.termination = runtime.termination, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _terminate(self, runtime: PodRuntime) -> None:
        """Stop every container of the Pod at once (upstream kills them in parallel), each as :meth:`_kill` says."""
        specs = {c["name"]: c for c in (runtime.pod.get("spec") or {}).get("containers") or []}
        containers = list(runtime.containers.values())
        await asyncio.gather(*(self._kill(runtime, c, specs.get(c.name) or {}) for c in containers))

    def _deadline(self, runtime: PodRuntime) -> float:
        return runtime.terminating_since + runtime.grace

    async def _kill(self, runtime: PodRuntime, container: Container, spec: dict) -> None:
        """Upstream's killContainer: the preStop hook (cut at the end of the grace period), SIGTERM, and SIGKILL
        when the grace period is over but never sooner than :data:`MIN_KILL_GRACE` after the SIGTERM."""
        if container.state != "running":  # waiting to start or to restart, or exited: nothing runs
            await self.stop_container(container)
            return
        logger = self._container_logger(container)
        hook = (spec.get("lifecycle") or {}).get("preStop")
        if hook:
            started = time.monotonic()
            done, _ = await self._within(self._pre_stop(container, hook), lambda: self._deadline(runtime))
            if not done:
                logger.warning("PreStop hook cut after %.1f s: the grace period ran out", time.monotonic() - started)
        if container.state != "running":  # killed meanwhile (a kill fault)
            return
        signalled = time.monotonic()
        container.stopping = True
        logger.info("Stopping container %s (SIGTERM)", container.name)
        exited, code = await self._within(
            self._sigterm(container), lambda: max(self._deadline(runtime), signalled + MIN_KILL_GRACE)
        )
        if container.state != "running":
            return
        await self.stop_container(container)
        if exited:
            waited = time.monotonic() - signalled
            logger.info("Container %s exited (%s) %.1f s after SIGTERM", container.name, code, waited)
            self._terminated(container, code, "Completed" if code == 0 else "Error", "")
        else:
            logger.warning("Container %s killed (SIGKILL): the grace period ran out", container.name)
            self._terminated(container, 137, "Error", "")
        runtime.wake.set()

    @staticmethod
    async def _within(coro: Awaitable, deadline: Callable[[], float]) -> tuple[bool, Any]:
        """Run ``coro`` until it returns (True, its result) or ``deadline()`` (re-read as it may get shorter)
        passes: then it is cancelled, (False, None)."""
        task = asyncio.ensure_future(coro)
        try:
            while not task.done():
                remaining = deadline() - time.monotonic()
                if remaining <= 0:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    return False, None
                await asyncio.wait([task], timeout=min(remaining, 0.25))
        except asyncio.CancelledError:
            task.cancel()
            raise
        return True, task.result()

    async def _pre_stop(self, container: Container, hook: dict) -> None:
        """Run a ``lifecycle.preStop`` handler; a failing one is logged (upstream: FailedPreStopHook) and the
        container is stopped all the same."""
        logger = self._container_logger(container)
        if "sleep" in hook:
            seconds = float((hook.get("sleep") or {}).get("seconds") or 0)
            logger.info("PreStop hook: sleep %s s", f"{seconds:g}")
            await asyncio.sleep(seconds)
        elif "exec" in hook:
            command = (hook.get("exec") or {}).get("command") or []
            seconds = sleep_seconds(command)
            if seconds is None:
                logger.warning("PreStop hook: exec %s is not emulated (only sleeps are), skipped", command)
                return
            logger.info("PreStop hook: exec %s", command)
            await asyncio.sleep(seconds)
        elif "httpGet" in hook:
            http = hook.get("httpGet") or {}
            if container.port is None:
                logger.warning("PreStop hook: httpGet %s: the container serves nothing here, skipped", http)
                return
            scheme = str(http.get("scheme") or "HTTP").lower()
            url = f"{scheme}://{self.address}:{container.port}{http.get('path') or '/'}"
            headers = {h["name"]: h["value"] for h in http.get("httpHeaders") or [] if "name" in h}
            try:
                async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
                    await resp.read()
                    logger.info("PreStop hook: GET %s: %s", url, resp.status)
                    if resp.status >= 400:
                        logger.warning("FailedPreStopHook: GET %s answered %s", url, resp.status)
            except (aiohttp.ClientError, OSError) as exc:
                logger.warning("FailedPreStopHook: GET %s: %s", url, exc)
        else:
            logger.warning("PreStop hook %s: no handler the twin knows, skipped", sorted(hook))

    async def _sigterm(self, container: Container) -> int:
        """SIGTERM and wait for the exit; returns the exit code. LiteLLM's process gets a real SIGTERM; an emulated
        server stops listening, closes its idle connections and lets the requests in flight finish (what uvicorn,
        Go's http.Server.Shutdown and aiohttp do); any other container exits at once."""
        if container.process is not None:
            process = container.process
            process.terminate()
            return exit_code(await process.wait())
        if container.runner is not None:
            runner = container.runner
            for site in list(runner.sites):
                await site.stop()
            await asyncio.sleep(0)  # the connections accepted before are being handled
            server = runner.server
            if server is not None:
                server.pre_shutdown()  # no new request on a kept-alive connection
                # idle connections are closed at once, busy ones once their response is sent; the caller cancels
                # this at the end of the grace period (and then kills what is left)
                await server.shutdown(timeout=24 * 3600)
        return 0

    def _confirm_deletion(self, agent: NodeAgent, runtime: PodRuntime) -> None:
        try:
            agent.core.delete_namespaced_pod(
                runtime.name,
                runtime.namespace,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions={"uid": runtime.uid}),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # -- containers -----------------------------------------------------------------------------------------

    def _workload_kind(self, pod: dict) -> str | None:
        """``ollama`` / ``vllm`` / ``litellm`` when the Pod belongs to an inference Deployment of the topology."""
        ns = pod["metadata"]["namespace"]
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") != "ReplicaSet":
                continue
            deployment = ref["name"].rsplit("-", 1)[0]
            spec = self.topology.get("workloads", {}).get(f"{ns}/{deployment}")
            template_hash = (pod["metadata"].get("labels") or {}).get("pod-template-hash")
            if spec and (template_hash is None or ref["name"] == f"{deployment}-{template_hash}"):
                return spec["kind"]
        return None

    def _workload_spec(self, kind: str) -> dict:
        for spec in self.topology.get("workloads", {}).values():
            if spec["kind"] == kind:
                return spec
        return {}

    def _backoff(self, container: Container) -> float:
        upstream = min(10 * 2 ** max(container.restart_count - 1, 0), 300)
        return max(1.0, upstream * self.cfg.time_scale)

    async def _start_container(  # noqa: C901 - one branch per container field the kubelet honours, in its order
        self, agent: NodeAgent, runtime: PodRuntime, spec: dict, container: Container
    ) -> None:
        pod = runtime.pod
        if normalise_image(container.image) not in self.images:
            first = container.reason != "ErrImagePull" and container.reason != "ImagePullBackOff"
            container.state = "waiting"
            container.reason = "ErrImagePull" if first else "ImagePullBackOff"
            container.message = (
                f'failed to pull and unpack image "{normalise_image(container.image)}": not found'
                if first
                else f'Back-off pulling image "{container.image}"'
            )
            self._retry_later(runtime, 1.0 if first else 5.0)
            return
        if container.state == "terminated" or container.reason == "CrashLoopBackOff":
            policy = pod["spec"].get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and container.exit_code == 0):
                return
            waited = time.monotonic() - container.last_state.get("_at", 0)
            if waited < self._backoff(container):
                # waiting to restart: state.waiting CrashLoopBackOff, the crash in lastState.terminated
                container.state, container.reason = "waiting", "CrashLoopBackOff"
                container.message = (
                    f"back-off {self._backoff(container):.0f}s restarting failed container={container.name} "
                    f"pod={runtime.name}_{runtime.namespace}({runtime.uid})"
                )
                self._retry_later(runtime, self._backoff(container) - waited)
                return
            container.restart_count += 1
        try:
            env = await asyncio.to_thread(self._prepare, agent, runtime.pod, spec)
        except ContainerConfigError as exc:
            container.state, container.reason, container.message = "waiting", exc.reason, str(exc)
            self._retry_later(runtime, 1.0)
            return
        container.state, container.reason, container.message = "waiting", "ContainerCreating", ""
        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        needs = int(self._workload_spec(container.kind).get("memory_mib", 0)) * 2**20 if container.kind else 0
        if limit and needs and parse_quantity(limit) < needs:
            self._container_logger(container).error("out of memory: needs %s MiB, limit %s", needs // 2**20, limit)
            self._terminated(container, 137, "OOMKilled", f"needs {needs // 2**20} MiB, limit {limit}")
            self._retry_later(runtime, self._backoff(container))
            return
        try:
            if container.kind == "ollama":
                await self._start_ollama(agent, runtime, spec, container, env)
            elif container.kind == "vllm":
                await self._start_vllm(agent, runtime, spec, container)
            elif container.kind == "litellm":
                await self._start_litellm(runtime, spec, container, env)
        except Exception as exc:  # the container's process failed to start
            log.warning("pod %s container %s failed to start: %s", runtime.key, container.name, exc)
            self._container_logger(container).error("%s", exc)
            await self.stop_container(container)
            self._terminated(container, 1, "Error", str(exc))
            self._retry_later(runtime, self._backoff(container))
            return
        container.state, container.reason, container.message = "running", "", ""
        container.started_at = _now()
        container.generation += 1
        container.stopping = False
        for port in spec.get("ports") or []:
            if container.port is not None:
                self.endpoints[(runtime.ip, int(port["containerPort"]))] = (self.address, container.port)
        probe = spec.get("readinessProbe")
        if container.kind is None or container.port is None or probe is None:
            container.ready = True
        else:
            self._spawn(self._probe(runtime, container, probe))
        if container.process is not None:
            self._spawn(self._watch_process(runtime, container))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retry_later(self, runtime: PodRuntime, delay: float) -> None:
        self.loop.call_later(max(delay, 0.1), runtime.wake.set)

    def _terminated(self, container: Container, code: int, reason: str, message: str) -> None:
        container.state, container.ready = "terminated", False
        container.exit_code, container.reason, container.message = code, reason, message
        container.finished_at = _now()
        container.last_state = {
            "_at": time.monotonic(),
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "message": message,
                "startedAt": container.started_at or _now(),
                "finishedAt": container.finished_at,
            },
        }

    def _alive(self, container: Container) -> bool:
        return container.process is None or container.process.running

    async def _watch_process(self, runtime: PodRuntime, container: Container) -> None:
        process = container.process
        while process is not None and process.running and container.process is process:
            await asyncio.sleep(0.5)
        if container.process is process and container.state == "running" and not container.stopping:
            code = process.returncode if process.returncode is not None else 1
            self._terminated(container, exit_code(code), "Error", f"the process exited ({code})")
            runtime.wake.set()

    async def _probe(self, runtime: PodRuntime, container: Container, probe: dict) -> None:
        http = probe.get("httpGet") or {}
        path = http.get("path", "/")
        period = max(0.2, float(probe.get("periodSeconds", 10)) * self.cfg.time_scale)
        url = f"http://{self.address}:{container.port}{path}"
        generation = container.generation
        async with aiohttp.ClientSession() as session:
            while container.state == "running" and container.generation == generation and not runtime.deleted:
                ok = False
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        ok = 200 <= resp.status < 400
                if ok != container.ready and container.generation == generation and container.state == "running":
                    container.ready = ok
                    runtime.wake.set()
                await asyncio.sleep(period if ok else 0.2)

    async def stop_container(self, container: Container) -> None:
        """Stop the container's server or process at once, as SIGKILL does (idempotent): LiteLLM's process group is
        killed; an emulated server stops listening, its open connections are reset and its request handlers
        cancelled."""
        for key, value in list(self.endpoints.items()):
            if container.port is not None and value == (self.address, container.port):
                self.endpoints.pop(key, None)
        if container.process is not None:
            process, container.process = container.process, None
            await process.kill()
        if container.runner is not None:
            runner, container.runner = container.runner, None
            if runner.server is not None:
                for connection in runner.server.connections:
                    if connection.transport is not None:
                        connection.transport.abort()
            await runner.cleanup()
        container.emulator = None
        container.ready = False
        container.port = None

    def _container_logger(self, container: Container) -> logging.Logger:
        """A logger writing to the container's log file (the emulated servers' access log and start lines)."""
        if container.logger is None:
            container.log_file.parent.mkdir(parents=True, exist_ok=True)
            logger = logging.getLogger(f"lab.pod.{container.log_file.stem}")
            logger.propagate = False
            logger.setLevel(logging.INFO)
            handler = logging.FileHandler(container.log_file)
            handler.setFormatter(logging.Formatter("time=%(asctime)s level=%(levelname)s msg=%(message)r"))
            logger.addHandler(handler)
            container.logger = logger
        return container.logger

    async def _serve(self, container: Container, app: web.Application) -> None:
        sock = _free_port(self.address)
        logger = self._container_logger(container)
        # graceful shutdown is the kubelet's SIGTERM (_sigterm); cleanup() is the SIGKILL, hence the short timeout
        runner = web.AppRunner(
            app, access_log=logger, access_log_format='%a "%r" %s %b %Tf', shutdown_timeout=HARD_STOP_TIMEOUT
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        container.runner = runner
        container.port = sock.getsockname()[1]
        logger.info("Listening on %s:%s (%s, image %s)", self.address, container.port, container.kind, container.image)

    async def _start_ollama(
        self, agent: NodeAgent, runtime: PodRuntime, spec: dict, container: Container, env: dict[str, str]
    ) -> None:
        from lab.ollama import OllamaEmulator, make_ollama_app

        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        store = await asyncio.to_thread(self._volume_dir, agent, runtime.pod)
        emulator = OllamaEmulator(
            catalog=self.runtime.catalog,
            store_dir=store,
            memory_limit_bytes=int(parse_quantity(limit)) if limit else None,
            available_memory_bytes=lambda: self.runtime.node_memory_mib(agent.name) * 2**20,
            env=env,
            time_scale=self.cfg.time_scale,
        )
        emulator.faults = self.runtime.faults
        container.emulator = emulator
        await self._serve(container, make_ollama_app(emulator))

    async def _start_vllm(self, agent: NodeAgent, runtime: PodRuntime, spec: dict, container: Container) -> None:
        from lab.vllm import VllmEmulator, make_vllm_app

        args = [*spec.get("command", []), *spec.get("args", [])]
        emulator = VllmEmulator(
            catalog=self.runtime.catalog,
            args=args,
            gpu_memory_bytes=int(agent.spec.get("gpu_memory_mib", 0)) * 2**20,
            time_scale=self.cfg.time_scale,
        )
        container.emulator = emulator
        await self._serve(container, make_vllm_app(emulator))

    async def _start_litellm(self, runtime: PodRuntime, spec: dict, container: Container, env: dict[str, str]) -> None:
        agent = self.nodes[runtime.node]
        config_yaml = await asyncio.to_thread(self._configmap_file, agent, runtime.pod, spec, "config.yaml")
        sock = _free_port(self.address)
        port = sock.getsockname()[1]
        sock.close()
        name = f"{runtime.namespace}_{runtime.name}_{container.name}"
        process = LiteLLMProcess(
            binary=self.cfg.litellm_bin,
            workdir=self.cfg.lab_dir / "workloads" / name,
            host=self.address,
            port=port,
            config_yaml=config_yaml,
            env=env,
            log_file=container.log_file,
            zygote=await self._zygote(),
        )
        container.process = process
        container.port = port
        await process.start()

    async def _zygote(self) -> LiteLLMZygote | None:
        """The LiteLLM zygote (``lab/litellm_zygote.py``), started at the first LiteLLM Pod: a LiteLLM start costs
        about 0.5 s of CPU instead of 9. None when ``LAB_LITELLM_ZYGOTE=0`` or it cannot import LiteLLM (exec then).
        """
        if not self.cfg.litellm_zygote:
            return None
        async with self._litellm_zygote_lock:
            if self._litellm_zygote is None:
                python = interpreter(self.cfg.litellm_bin)
                if python is None:
                    return None
                zygote = LiteLLMZygote(python, self.cfg.log_dir / "litellm-zygote.log", BASE_ENV)
                if not await zygote.start():
                    log.warning("the LiteLLM zygote did not start (see %s): LiteLLM Pods exec", zygote.log_file)
                self._litellm_zygote = zygote
            return self._litellm_zygote if self._litellm_zygote.alive else None

    # -- status ---------------------------------------------------------------------------------------------

    def _container_status(self, container: Container) -> dict:
        status: dict[str, Any] = {
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "ready": container.ready,
            "restartCount": container.restart_count,
            "started": container.state == "running",
        }
        if container.state == "running":
            status["state"] = {"running": {"startedAt": container.started_at}}
            status["containerID"] = f"containerd://{abs(hash((container.name, container.started_at))):016x}"
        elif container.state == "terminated":
            status["state"] = {"terminated": container.last_state["terminated"]}
        else:
            waiting = {"reason": container.reason}
            if container.message:
                waiting["message"] = container.message
            status["state"] = {"waiting": waiting}
        last = {k: v for k, v in container.last_state.items() if k != "_at"}
        if last and container.state != "terminated":
            status["lastState"] = last
        return status

    async def _post_pod_status(self, agent: NodeAgent, runtime: PodRuntime) -> None:
        containers = list(runtime.containers.values())
        all_ready = bool(containers) and all(c.ready for c in containers)
        any_started = any(c.state == "running" or c.restart_count for c in containers)
        phase = "Running" if any_started else "Pending"
        if runtime.termination is not None and runtime.termination.done():
            # a deleted Pod whose containers all stopped ends in a terminal phase before it is removed (1.27+)
            succeeded = all(c.state == "terminated" and c.exit_code == 0 for c in containers)
            phase = "Succeeded" if containers and succeeded else "Failed"
        now = _now()
        previous = {c["type"]: c for c in (runtime.pod.get("status") or {}).get("conditions") or []}

        def condition(kind: str, ok: bool, reason: str | None = None) -> dict:
            status = "True" if ok else "False"
            old = previous.get(kind)
            cond = {
                "type": kind,
                "status": status,
                "lastProbeTime": None,
                "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status else now,
            }
            if reason and not ok:
                cond["reason"] = reason
            return cond

        status = {
            "phase": phase,
            "hostIP": self.address,
            "hostIPs": [{"ip": self.address}],
            "podIP": runtime.ip,
            "podIPs": [{"ip": runtime.ip}],
            "startTime": runtime.start_time,
            "qosClass": (runtime.pod.get("status") or {}).get("qosClass"),
            "conditions": [
                condition("PodReadyToStartContainers", True),
                condition("Initialized", True),
                condition("ContainersReady", all_ready, "ContainersNotReady"),
                condition("Ready", all_ready, "ContainersNotReady"),
                previous.get("PodScheduled") or condition("PodScheduled", True),
            ],
            "containerStatuses": [self._container_status(c) for c in containers],
        }
        status = {k: v for k, v in status.items() if v is not None}
        if status == runtime.posted:
            return  # nothing changed since the last patch: no API call on every wake-up
        try:
            result = await asyncio.to_thread(
                agent.core.patch_namespaced_pod_status, runtime.name, runtime.namespace, {"status": status}
            )
            runtime.pod = agent.api.sanitize_for_serialization(result)
            runtime.posted, runtime.posted_version = status, result.metadata.resource_version
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- what a kubelet reads for a container -----------------------------------------------------------------

    def _container_env(  # noqa: C901 - one branch per kind of env source (value, fieldRef, secretKeyRef, ...)
        self, agent: NodeAgent, pod: dict, container: dict
    ) -> dict[str, str]:
        """The container's environment as the kubelet builds it (envFrom, then env, valueFrom resolved)."""
        ns = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []) or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref, kind = source["configMapRef"], "configmap"
                data = self._configmap_data(agent, ns, ref["name"])
            elif "secretRef" in source:
                ref, kind = source["secretRef"], "secret"
                data = self._secret_data(agent, ns, ref["name"])
            else:
                ref, kind, data = {}, "", {}
            if data is None:
                if not ref.get("optional"):
                    raise ContainerConfigError(f'{kind} "{ref["name"]}" not found')
                data = {}
            env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env", []) or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            source = item.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref, kind = source["secretKeyRef"], "secret"
                data = self._secret_data(agent, ns, ref["name"])
            elif "configMapKeyRef" in source:
                ref, kind = source["configMapKeyRef"], "configmap"
                data = self._configmap_data(agent, ns, ref["name"])
            else:
                continue  # fieldRef / resourceFieldRef: nothing the emulated workloads read
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                if data is None:
                    raise ContainerConfigError(f'{kind} "{ref["name"]}" not found')
                raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}")
            env[item["name"]] = data[ref["key"]]
        return env

    def _prepare(self, agent: NodeAgent, pod: dict, container: dict) -> dict[str, str]:
        """What a kubelet resolves before it creates a container: the Pod's volumes, then the container's env.

        Returns the env; raises :class:`ContainerConfigError` with the waiting reason to report.
        """
        try:
            self._check_volumes(agent, pod)
        except ApiException as exc:
            raise ContainerConfigError(f"{exc.status} {exc.reason}", "ContainerCreating") from exc
        try:
            return self._container_env(agent, pod, container)
        except ApiException as exc:
            raise ContainerConfigError(f"{exc.status} {exc.reason}") from exc

    def _check_volumes(self, agent: NodeAgent, pod: dict) -> None:
        """Raise :class:`ContainerConfigError` when a ConfigMap or Secret volume (not optional) does not exist."""
        ns = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes", []) or []:
            for kind, key, read in (
                ("configmap", "configMap", self._configmap_data),
                ("secret", "secret", self._secret_data),
            ):
                source = volume.get(key)
                if not source or source.get("optional"):
                    continue
                name = source.get("name") or source.get("secretName")
                if read(agent, ns, name) is None:
                    raise ContainerConfigError(
                        f'MountVolume.SetUp failed for volume "{volume["name"]}" : {kind} "{name}" not found',
                        "ContainerCreating",
                    )

    def _configmap_data(self, agent: NodeAgent, ns: str, name: str) -> dict[str, str] | None:
        try:
            return dict(agent.core.read_namespaced_config_map(name, ns).data or {})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _secret_data(self, agent: NodeAgent, ns: str, name: str) -> dict[str, str] | None:
        try:
            secret = agent.core.read_namespaced_secret(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _configmap_file(self, agent: NodeAgent, pod: dict, container: dict, filename: str) -> str:
        """Content of ``filename`` from the ConfigMap volume mounted into the container."""
        ns = pod["metadata"]["namespace"]
        mounted = {m["name"] for m in container.get("volumeMounts", []) or []}
        for volume in pod["spec"].get("volumes", []) or []:
            if volume["name"] not in mounted or "configMap" not in volume:
                continue
            data = self._configmap_data(agent, ns, volume["configMap"]["name"])
            if data is None:
                raise RuntimeError(f'configmap "{volume["configMap"]["name"]}" not found')
            for item in volume["configMap"].get("items", []) or []:
                if item.get("path") == filename and item.get("key") in data:
                    return data[item["key"]]
            if filename in data:
                return data[filename]
        raise RuntimeError(f"no ConfigMap volume with {filename} is mounted into container {container['name']}")

    def _volume_dir(self, agent: NodeAgent, pod: dict) -> Path:
        """Host directory behind the Pod's first PersistentVolumeClaim (its PV's hostPath), or a per-Pod emptyDir."""
        ns = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes", []) or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            pvc = agent.core.read_namespaced_persistent_volume_claim(claim, ns)
            if pvc.spec.volume_name:
                pv = agent.core.read_persistent_volume(pvc.spec.volume_name)
                if pv.spec.host_path is not None:
                    path = Path(pv.spec.host_path.path)
                    path.mkdir(parents=True, exist_ok=True)
                    return path
            raise RuntimeError(f"persistentvolumeclaim {ns}/{claim} is not bound")
        path = self.cfg.volumes_dir / "emptydir" / f"{ns}_{pod['metadata']['name']}"
        path.mkdir(parents=True, exist_ok=True)
        return path
