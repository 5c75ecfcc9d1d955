"""The twin's kube-proxy: Services exposed on the twin's address the way k3s's ServiceLB exposes them on a node.

:class:`ServiceProxy` is an ordinary API client of the real kube-apiserver (identity ``system:kube-proxy``,
ClusterRole ``system:node-proxier``): it lists and watches Services and EndpointSlices (``discovery.k8s.io/v1``)
and listens on ``address:port`` for each Service of ``services`` (``lab/topology.yaml``, ``ports.services``).
Each accepted connection goes to one endpoint of the Service, chosen as kube-proxy chooses:

* the Service port the exposed port stands for is the ``spec.ports`` entry with that port number, else the first
  one; its name selects the port of the EndpointSlices labelled ``kubernetes.io/service-name=<name>``;
* among the endpoints of those slices (first address of each, duplicates across slices counted once) the ones
  whose ``conditions.ready`` is true (nil counts as true, as in kube-proxy), in turn (round-robin); when none is
  ready, the ones that are ``serving`` and ``terminating`` (kube-proxy's fallback for terminating endpoints);
* none at all: the connection is reset at once (SO_LINGER 0), the nearest a user-space proxy gets to the REJECT
  rule kube-proxy installs for a Service without endpoints.

Like kube-proxy, it lags behind the API: every change of a Service or of its endpoints (an endpoint added, becoming
ready, becoming not ready or terminating, removed) takes effect ``lag`` seconds after the proxy's watch saw it
(``kubernetes.proxy_lag_seconds`` in ``lab/topology.yaml``, default 1.0, real seconds: not scaled by
``time_scale``), each change in the order it was seen. Until then new connections go to the endpoints as they were,
among them a Pod that is being deleted and already got SIGTERM: a server that stops accepting at SIGTERM loses
them, which is why the charts give their Pods a ``preStop`` delay longer than this lag (Kubernetes docs
"Termination of Pods"; kubernetes/kubernetes#67592).

An endpoint's address is a Pod IP that exists nowhere on this machine and is never connected to: ``resolve(ip,
port)`` (the twin's kubelet) gives the loopback ``(host, port)`` where that Pod's process really listens; when it
gives ``None`` (nothing listens for that Pod) or the connection is refused, the client is reset too. Bytes are
forwarded both ways with half-close (an EOF from one side becomes a ``shutdown(SHUT_WR)`` towards the other); the
connection is closed when both directions have ended and reset on both sides when either side fails. A forwarded
connection is not cut when the endpoints change later, like a conntrack entry.

It watches through :class:`lab.kubeclient.Reflector`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab.kubeclient import Reflector, close_api_client, new_api_client

log = logging.getLogger("lab.serviceproxy")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
CONNECT_TIMEOUT = 10.0
CHUNK = 64 * 1024
DEFAULT_LAG = 1.0  # seconds, about what kube-proxy takes to program a change it watched
TOPOLOGY = Path(__file__).resolve().parent / "topology.yaml"


def topology_lag(topology: dict | None = None) -> float:
    """The proxy lag of the topology (``kubernetes.proxy_lag_seconds``; ``lab/topology.yaml`` when None)."""
    if topology is None:
        topology = yaml.safe_load(TOPOLOGY.read_text()) or {}
    value = (topology.get("kubernetes") or {}).get("proxy_lag_seconds", DEFAULT_LAG)
    return max(0.0, float(DEFAULT_LAG if value is None else value))


class ServiceProxyError(RuntimeError):
    """The proxy could not listen (the message names ``address:port``)."""


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of an EndpointSlice, for the Service port the proxy forwards."""

    address: str
    port: int
    ready: bool
    serving: bool
    terminating: bool
    pod: str | None

    def describe(self) -> dict:
        return {
            "address": self.address,
            "port": self.port,
            "ready": self.ready,
            "serving": self.serving,
            "terminating": self.terminating,
            "pod": self.pod,
        }


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _key(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class ServiceProxy:
    """kube-proxy for the twin (see the module docstring).

    ``services`` maps ``namespace/name`` of a Service to the TCP port on ``address`` where it is exposed (0: any
    free port, see :meth:`snapshot`); ``resolve(pod_ip, port)`` gives the loopback ``(host, port)`` of the Pod's
    process, or None. ``lag``: seconds from a change seen by the watches to its effect (None: the topology's
    ``kubernetes.proxy_lag_seconds``; 0: at once).
    """

    def __init__(
        self,
        kubeconfig: Path,
        address: str,
        services: dict[str, int],
        resolve: Callable[[str, int], tuple[str, int] | None],
        lag: float | None = None,
    ):
        self.kubeconfig = Path(kubeconfig)
        self.address = address
        self.services = dict(services)
        self.resolve = resolve
        self.lag = topology_lag() if lag is None else max(0.0, float(lag))
        self._service: dict[str, dict] = {}
        self._slices: dict[str, dict[str, dict]] = {key: {} for key in self.services}
        # what the proxy forwards to: the endpoints as the watches saw them `lag` seconds ago
        self._applied: dict[str, list[Endpoint]] = {key: [] for key in self.services}
        self._seen: dict[str, int] = dict.fromkeys(self.services, 0)  # changes seen per Service
        self._done: dict[str, int] = dict.fromkeys(self.services, 0)  # the last of them applied
        self._timers: set[asyncio.TimerHandle] = set()
        self._next: dict[str, int] = dict.fromkeys(self.services, 0)
        self._stats: dict[str, dict[str, int]] = {
            key: {"connections": 0, "rejected": 0, "active": 0} for key in self.services
        }
        self._servers: dict[str, asyncio.Server] = {}
        self._bound: dict[str, int] = {}
        self._connections: set[asyncio.Task] = set()
        self._reflectors: list[Reflector] = []
        self._api = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on every exposed port, then list and watch Services and EndpointSlices.

        Raises :class:`ServiceProxyError` naming ``address:port`` when a port cannot be bound. Until the first
        lists arrive every connection is reset (no endpoints known yet).
        """
        await self._listen()
        try:
            from kubernetes import client

            self._api = await asyncio.to_thread(new_api_client, self.kubeconfig)
            loop = asyncio.get_running_loop()
            core, discovery = client.CoreV1Api(self._api), client.DiscoveryV1Api(self._api)
            self._reflectors = [
                Reflector("services", core.list_service_for_all_namespaces, self._on_service, loop),
                Reflector(
                    "endpointslices",
                    discovery.list_endpoint_slice_for_all_namespaces,
                    self._on_endpointslice,
                    loop,
                    label_selector=SERVICE_NAME_LABEL,
                ),
            ]
            for reflector in self._reflectors:
                reflector.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop watching, stop listening and reset the connections still being forwarded."""
        for reflector in self._reflectors:
            reflector.stop()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for server in self._servers.values():
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()
        for reflector in self._reflectors:
            await reflector.join()
        self._reflectors.clear()
        close_api_client(self._api)
        self._api = None

    @property
    def synced(self) -> bool:
        """True once Services and EndpointSlices have both been listed."""
        return bool(self._reflectors) and all(r.synced for r in self._reflectors)

    async def wait_ready(self, service: str, timeout: float) -> bool:
        """Wait until a connection to ``service`` would be forwarded: an endpoint to use that ``resolve`` knows."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if any(self.resolve(ep.address, ep.port) is not None for ep in self._usable(service)):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)

    def snapshot(self) -> dict:
        """Per exposed Service: its port, the endpoints of the forwarded port in effect, how many changes seen are
        not yet (``pending``, see ``lag``), the lag and the connection counters."""
        return {
            key: {
                "port": self._bound.get(key, port),
                "endpoints": [ep.describe() for ep in self._endpoints(key)],
                "pending": self._seen[key] - self._done[key],
                "lag": self.lag,
                **self._stats[key],
            }
            for key, port in self.services.items()
        }

    # -- state (events from the reflectors, on the loop) -------------------------------------------------------

    def _on_service(self, event: str, data: Any) -> None:
        if event == "SYNC":
            self._service = {k: svc for svc in data if (k := _key(svc)) in self.services}
            for key in self.services:
                self._changed(key)
            return
        key = _key(data)
        if key not in self.services:
            return
        if event == "DELETED":
            self._service.pop(key, None)
        else:
            self._service[key] = data
        self._changed(key)

    def _on_endpointslice(self, event: str, data: Any) -> None:
        if event == "SYNC":
            self._slices = {key: {} for key in self.services}
            for item in data:
                self._store_slice("ADDED", item)
            for key in self.services:
                self._changed(key)
            return
        key = self._store_slice(event, data)
        if key is not None:
            self._changed(key)

    def _store_slice(self, event: str, data: dict) -> str | None:
        meta = data.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{(meta.get('labels') or {}).get(SERVICE_NAME_LABEL, '')}"
        if key not in self.services:
            return None
        if event == "DELETED":
            self._slices[key].pop(meta.get("name", ""), None)
        else:
            self._slices[key][meta.get("name", "")] = data
        return key

    def _changed(self, key: str) -> None:
        """The watches changed what ``key`` forwards to: it takes effect ``lag`` seconds from now (at once when 0)."""
        self._seen[key] += 1
        change, endpoints = self._seen[key], self._watched(key)
        if self.lag <= 0:
            self._apply(key, change, endpoints)
            return
        timer: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(timer)
            self._apply(key, change, endpoints)

        timer = asyncio.get_running_loop().call_later(self.lag, fire)
        self._timers.add(timer)

    def _apply(self, key: str, change: int, endpoints: list[Endpoint]) -> None:
        if change <= self._done[key]:
            return  # a later change is already in effect
        self._done[key] = change
        if [ep.describe() for ep in endpoints] != [ep.describe() for ep in self._applied[key]]:
            log.debug("%s: endpoints now %s", key, [ep.describe() for ep in endpoints])
        self._applied[key] = endpoints

    # -- endpoint choice ---------------------------------------------------------------------------------------

    def _port_name(self, key: str) -> str | None:
        """Name of the Service port that the exposed port stands for ("" when unnamed); None: no Service."""
        service = self._service.get(key)
        if service is None:
            return None
        ports = (service.get("spec") or {}).get("ports") or []
        if not ports:
            return None
        exposed = self.services[key]
        chosen = next((p for p in ports if p.get("port") == exposed), ports[0])
        return chosen.get("name") or ""

    def _endpoints(self, key: str) -> list[Endpoint]:
        """The endpoints the proxy forwards to now: those :meth:`_watched` gave ``lag`` seconds ago."""
        return self._applied.get(key, [])

    def _watched(self, key: str) -> list[Endpoint]:
        """The endpoints of the Service's EndpointSlices for the forwarded port (first address, no duplicates), as
        the watches have them now."""
        name = self._port_name(key)
        if name is None:
            return []
        result: dict[tuple[str, int], Endpoint] = {}
        for _slice_name, eps in sorted(self._slices.get(key, {}).items()):
            port = next(
                (
                    p.get("port")
                    for p in eps.get("ports") or []
                    if (p.get("name") or "") == name and p.get("protocol", "TCP") == "TCP"
                ),
                None,
            )
            if port is None:
                continue
            for endpoint in eps.get("endpoints") or []:
                addresses = endpoint.get("addresses") or []
                if not addresses or (addresses[0], port) in result:
                    continue
                cond = endpoint.get("conditions") or {}
                target = endpoint.get("targetRef") or {}
                result[addresses[0], port] = Endpoint(
                    address=addresses[0],
                    port=int(port),
                    ready=cond.get("ready") is not False,
                    serving=cond.get("serving") is not False,
                    terminating=cond.get("terminating") is True,
                    pod=target.get("name") if target.get("kind", "Pod") == "Pod" else None,
                )
        return list(result.values())

    def _usable(self, key: str) -> list[Endpoint]:
        """The ready endpoints, else the serving and terminating ones."""
        endpoints = self._endpoints(key)
        return [ep for ep in endpoints if ep.ready] or [ep for ep in endpoints if ep.serving and ep.terminating]

    def _choose(self, key: str) -> Endpoint | None:
        usable = self._usable(key)
        if not usable:
            return None
        index = self._next[key] % len(usable)
        self._next[key] = index + 1
        return usable[index]

    # -- connections -------------------------------------------------------------------------------------------

    async def _listen(self) -> None:
        try:
            for key, port in self.services.items():
                try:
                    server = await asyncio.start_server(
                        lambda r, w, key=key: self._accept(key, r, w), self.address, port, reuse_address=True
                    )
                except OSError as exc:
                    raise ServiceProxyError(
                        f"cannot listen on {self.address}:{port} for Service {key}: {exc.strerror or exc}"
                    ) from exc
                self._servers[key] = server
                self._bound[key] = server.sockets[0].getsockname()[1]
        except BaseException:
            for server in self._servers.values():
                server.close()
            self._servers.clear()
            raise

    async def _accept(self, key: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        stats = self._stats[key]
        stats["connections"] += 1
        try:
            endpoint = self._choose(key)
            target = self.resolve(endpoint.address, endpoint.port) if endpoint else None
            upstream = None
            if target is not None:
                try:
                    upstream = await asyncio.wait_for(asyncio.open_connection(*target), CONNECT_TIMEOUT)
                except (OSError, TimeoutError) as exc:
                    log.debug("%s: %s:%s (%s) refused: %s", key, *target, endpoint.pod, exc)
            if upstream is None:
                stats["rejected"] += 1
                log.debug("%s: no endpoint to forward to, reset", key)
                _reset(writer)
                return
            stats["active"] += 1
            try:
                await self._forward(reader, writer, *upstream)
            finally:
                stats["active"] -= 1
        finally:
            self._connections.discard(task)

    async def _forward(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        """Copy both ways until both directions reached EOF; on an error (or cancel) reset both sides."""
        copies = [
            asyncio.create_task(self._copy(client_reader, upstream_writer)),
            asyncio.create_task(self._copy(upstream_reader, client_writer)),
        ]
        failed = True  # until both directions ended without an error (a cancel resets both sides)
        try:
            done, _pending = await asyncio.wait(copies, return_when=asyncio.FIRST_EXCEPTION)
            failed = any(t.exception() is not None for t in done)
        finally:
            for task in copies:
                task.cancel()
            await asyncio.gather(*copies, return_exceptions=True)
            for writer in (client_writer, upstream_writer):
                if failed:
                    _reset(writer)
                else:
                    writer.close()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            with contextlib.suppress(OSError):
                writer.write_eof()


__all__ = ["Endpoint", "ServiceProxy", "ServiceProxyError"]
