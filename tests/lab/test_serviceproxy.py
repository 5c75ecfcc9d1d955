"""The twin's kube-proxy (lab/serviceproxy.py).

Unit tests feed Services and EndpointSlices (the API's JSON) into the proxy as its watches would, with two tiny
servers on 127.0.0.1 standing in for Pods; the slow tests run against a whole twin (``python -m lab up``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client

from lab.kubeclient import Reflector
from lab.serviceproxy import ServiceProxy, ServiceProxyError
from tests.twin import wait_for

ROOT = Path(__file__).resolve().parents[2]
POD_IPS = ("10.42.2.7", "10.42.3.9")
KEY = "ml/ollama"


# -- helpers ---------------------------------------------------------------------------------------------------


def service(name: str = "ollama", ports: list[dict] | None = None) -> dict:
    ports = ports if ports is not None else [{"name": "http", "port": 11434, "targetPort": "http"}]
    return {"metadata": {"namespace": "ml", "name": name}, "spec": {"ports": ports}}


def endpoint(ip: str, ready: bool | None = True, serving: bool | None = None, terminating: bool | None = None) -> dict:
    conditions = {
        k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating)) if v is not None
    }
    return {
        "addresses": [ip],
        "conditions": conditions,
        "targetRef": {"kind": "Pod", "namespace": "ml", "name": f"ollama-{ip.rsplit('.', 1)[1]}"},
    }


def endpoint_slice(endpoints: list[dict], name: str = "ollama-x1", port: int = 11434, port_name: str = "http") -> dict:
    return {
        "metadata": {"namespace": "ml", "name": name, "labels": {"kubernetes.io/service-name": "ollama"}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Pod:
    """A "Pod" process on 127.0.0.1: answers each line with ``<name>:<line>``; EOF from the client gets
    ``<name>:eof <bytes received>`` and a close (so half-close is observable); ``bye`` closes at once."""

    def __init__(self, name: str):
        self.name = name
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0

    async def start(self) -> Pod:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=2**20)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        received = 0
        try:
            while line := await reader.readline():
                received += len(line)
                if line == b"bye\n":
                    return
                if line.endswith(b"\n"):
                    writer.write(f"{self.name}:".encode() + line)
                    await writer.drain()
            writer.write(f"{self.name}:eof {received}\n".encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def pods():
    started = [await Pod("pod-a").start(), await Pod("pod-b").start()]
    yield started
    for pod in started:
        await pod.stop()


class Resolver:
    """The kubelet's ``resolve``: Pod IP -> where its process listens; records every call."""

    def __init__(self, table: dict[tuple[str, int], tuple[str, int]]):
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, ip: str, port: int) -> tuple[str, int] | None:
        self.calls.append((ip, port))
        return self.table.get((ip, port))


@pytest.fixture
async def proxy(pods):
    resolver = Resolver({(ip, 11434): ("127.0.0.1", pod.port) for ip, pod in zip(POD_IPS, pods, strict=True)})
    proxy = ServiceProxy(Path("/nonexistent/kubeconfig"), "127.0.0.1", {KEY: 0}, resolver, lag=0)
    await proxy._listen()  # no API server here: the tests play the watches
    proxy._on_service("SYNC", [service()])
    yield proxy
    await proxy.stop()


async def ask(proxy: ServiceProxy, line: str = "hello", key: str = KEY) -> str:
    """Open a connection through the proxy, send one line, return the answer (or "RESET")."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.snapshot()[key]["port"])
    try:
        writer.write(line.encode() + b"\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
        return answer.decode().strip() if answer else "EOF"
    except ConnectionResetError:
        return "RESET"
    finally:
        writer.close()


async def ask_many(proxy: ServiceProxy, n: int) -> list[str]:
    return [(await ask(proxy)).split(":")[0] for _ in range(n)]


# -- endpoint choice -------------------------------------------------------------------------------------------


async def test_round_robin_over_the_ready_endpoints(proxy, pods):
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[0]), endpoint(POD_IPS[1])])])
    assert await ask_many(proxy, 4) == ["pod-a", "pod-b", "pod-a", "pod-b"]
    assert [p.connections for p in pods] == [2, 2]
    snap = proxy.snapshot()[KEY]
    assert snap["connections"] == 4 and snap["rejected"] == 0
    assert snap["endpoints"][0] == {
        "address": "10.42.2.7",
        "port": 11434,
        "ready": True,
        "serving": True,
        "terminating": False,
        "pod": "ollama-7",
    }


async def test_not_ready_endpoints_get_no_connection(proxy, pods):
    proxy._on_endpointslice(
        "SYNC",
        [endpoint_slice([endpoint(POD_IPS[0]), endpoint(POD_IPS[1], ready=False, serving=False, terminating=False)])],
    )
    assert await ask_many(proxy, 3) == ["pod-a"] * 3
    assert pods[1].connections == 0


async def test_serving_terminating_endpoints_are_used_only_when_none_is_ready(proxy, pods):
    draining = endpoint(POD_IPS[1], ready=False, serving=True, terminating=True)
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[0]), draining])])
    assert await ask_many(proxy, 2) == ["pod-a", "pod-a"]

    gone = endpoint(POD_IPS[0], ready=False, serving=False, terminating=True)
    proxy._on_endpointslice("MODIFIED", endpoint_slice([gone, draining]))
    assert await ask_many(proxy, 2) == ["pod-b", "pod-b"]


# -- propagation lag (kube-proxy programs a change about 1 s after it happens) ----------------------------------


@pytest.fixture
async def lagging(pods):
    """A proxy that lags 0.4 s behind its watches (its Service just listed)."""
    resolver = Resolver({(ip, 11434): ("127.0.0.1", pod.port) for ip, pod in zip(POD_IPS, pods, strict=True)})
    proxy = ServiceProxy(Path("/nonexistent/kubeconfig"), "127.0.0.1", {KEY: 0}, resolver, lag=0.4)
    await proxy._listen()
    proxy._on_service("SYNC", [service()])
    yield proxy
    await proxy.stop()


async def test_every_endpoint_change_takes_effect_only_after_the_lag(lagging, pods):
    proxy = lagging
    seen = time.monotonic()
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[0])])])
    assert await ask(proxy) == "RESET", "an endpoint added takes effect only after the lag"
    assert proxy.snapshot()[KEY]["pending"] == 2 and proxy.snapshot()[KEY]["lag"] == 0.4
    assert await proxy.wait_ready(KEY, 2)
    assert 0.35 <= time.monotonic() - seen < 1.0
    assert await ask_many(proxy, 2) == ["pod-a", "pod-a"]

    # pod-a is being deleted (SIGTERM soon), pod-b is the ready replacement: for the lag, new connections still go to
    # pod-a alone, as kube-proxy sends them to a Pod that already got SIGTERM
    seen = time.monotonic()
    terminating = endpoint(POD_IPS[0], ready=False, serving=True, terminating=True)
    proxy._on_endpointslice("MODIFIED", endpoint_slice([terminating, endpoint(POD_IPS[1])]))
    during = await ask_many(proxy, 3)
    assert time.monotonic() - seen < 0.35
    assert during == ["pod-a"] * 3
    await asyncio.sleep(0.45)
    assert await ask_many(proxy, 3) == ["pod-b"] * 3
    assert proxy.snapshot()[KEY]["pending"] == 0

    proxy._on_endpointslice("DELETED", endpoint_slice([]))
    assert await ask(proxy) == "pod-b:hello", "a removed endpoint still gets connections during the lag"
    await asyncio.sleep(0.45)
    assert await ask(proxy) == "RESET"


async def test_changes_take_effect_in_the_order_they_were_seen(lagging, pods):
    proxy = lagging
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[0])])])
    await asyncio.sleep(0.2)
    proxy._on_endpointslice("MODIFIED", endpoint_slice([endpoint(POD_IPS[1])]))
    await asyncio.sleep(0.25)  # the first change is in effect, the second not yet
    assert await ask_many(proxy, 2) == ["pod-a", "pod-a"]
    await asyncio.sleep(0.25)
    assert await ask_many(proxy, 2) == ["pod-b", "pod-b"]


def test_the_lag_comes_from_the_topology_by_default():
    from lab.serviceproxy import topology_lag

    assert topology_lag() == 1.0  # lab/topology.yaml kubernetes.proxy_lag_seconds
    assert topology_lag({"kubernetes": {"proxy_lag_seconds": 0.25}}) == 0.25
    assert topology_lag({"kubernetes": {}}) == 1.0
    assert ServiceProxy(Path("/x"), "127.0.0.1", {KEY: 0}, lambda ip, port: None).lag == 1.0
    assert ServiceProxy(Path("/x"), "127.0.0.1", {KEY: 0}, lambda ip, port: None, lag=0).lag == 0


async def test_no_endpoint_resets_the_connection_at_once(proxy, pods):
    assert await ask(proxy) == "RESET"  # Service known, no EndpointSlice yet
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[0], ready=False, serving=False)])])
    assert await ask(proxy) == "RESET"  # only a not-ready, not-serving endpoint
    proxy._on_service("DELETED", service())
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[0])])])
    assert await ask(proxy) == "RESET"  # slices without their Service
    snap = proxy.snapshot()[KEY]
    assert snap["connections"] == snap["rejected"] == 3
    assert sum(p.connections for p in pods) == 0


async def test_a_pod_ip_is_never_connected_to_only_resolved(proxy, pods):
    unknown = "10.42.9.9"
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(unknown)])])
    started = time.monotonic()
    assert await ask(proxy) == "RESET"
    assert time.monotonic() - started < 1, "a reset, not a connection attempt to a Pod IP that timed out"
    assert proxy.resolve.calls == [(unknown, 11434)]
    assert proxy.snapshot()[KEY]["rejected"] == 1


async def test_an_endpoint_whose_process_refuses_is_reset(proxy, pods):
    proxy.resolve.table[POD_IPS[0], 11434] = ("127.0.0.1", free_port())  # nothing listens there
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[0])])])
    assert await ask(proxy) == "RESET"
    assert proxy.snapshot()[KEY]["rejected"] == 1


async def test_established_connection_survives_an_endpoint_change(proxy, pods):
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[0])])])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.snapshot()[KEY]["port"])
    writer.write(b"one\n")
    assert await reader.readline() == b"pod-a:one\n"

    proxy._on_endpointslice("DELETED", endpoint_slice([]))  # the Pod left the Service
    assert await ask(proxy) == "RESET"  # new connections have nowhere to go
    writer.write(b"two\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"pod-a:two\n"  # like a conntrack entry
    assert proxy.snapshot()[KEY]["active"] == 1
    writer.close()


async def test_half_close_reaches_the_pod_and_its_answer_comes_back(proxy, pods):
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[1])])])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.snapshot()[KEY]["port"])
    writer.write(b"x" * 100_000 + b"\n")
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 5)  # until the proxy closes towards us
    assert data.endswith(b"pod-b:eof 100001\n")
    assert data.startswith(b"pod-b:xxx")
    writer.close()

    async def idle():
        while proxy.snapshot()[KEY]["active"]:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(idle(), 5)


async def test_the_pod_closing_its_side_closes_the_client(proxy, pods):
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[0])])])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.snapshot()[KEY]["port"])
    writer.write(b"hi\nbye\n")
    assert await reader.readline() == b"pod-a:hi\n"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the Pod's FIN reaches the client
    writer.close()

    async def idle():
        while proxy.snapshot()[KEY]["active"]:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(idle(), 5)


async def test_stop_resets_forwarded_connections(pods):
    resolver = Resolver({(POD_IPS[0], 11434): ("127.0.0.1", pods[0].port)})
    proxy = ServiceProxy(Path("/nonexistent"), "127.0.0.1", {KEY: 0}, resolver, lag=0)
    await proxy._listen()
    proxy._on_service("SYNC", [service()])
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint(POD_IPS[0])])])
    port = proxy.snapshot()[KEY]["port"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"a\n")
    assert await reader.readline() == b"pod-a:a\n"
    await asyncio.wait_for(proxy.stop(), 5)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_the_service_port_is_the_one_equal_to_the_exposed_port_else_the_first():
    metrics_first = [{"name": "metrics", "port": 9100}, {"name": "http", "port": 11434}]
    slices = [
        {
            **endpoint_slice([endpoint(POD_IPS[0])]),
            "ports": [{"name": "metrics", "port": 9101}, {"name": "http", "port": 11500}],
        }
    ]
    exposed = ServiceProxy(Path("/x"), "127.0.0.1", {KEY: 11434}, lambda ip, port: None, lag=0)
    exposed._on_service("SYNC", [service(ports=metrics_first)])
    exposed._on_endpointslice("SYNC", slices)
    assert [ep.port for ep in exposed._endpoints(KEY)] == [11500]

    other = ServiceProxy(Path("/x"), "127.0.0.1", {KEY: 8080}, lambda ip, port: None, lag=0)
    other._on_service("SYNC", [service(ports=metrics_first)])
    other._on_endpointslice("SYNC", slices)
    assert [ep.port for ep in other._endpoints(KEY)] == [9101]


def test_unnamed_ports_duplicates_and_nil_conditions():
    proxy = ServiceProxy(Path("/x"), "127.0.0.1", {KEY: 11434}, lambda ip, port: None, lag=0)
    proxy._on_service("ADDED", service(ports=[{"port": 11434}]))
    nil_conditions = {"addresses": [POD_IPS[0]], "conditions": {}}
    one = {**endpoint_slice([nil_conditions], name="a"), "ports": [{"port": 11434}]}
    two = {**endpoint_slice([endpoint(POD_IPS[0]), endpoint(POD_IPS[1])], name="b"), "ports": [{"port": 11434}]}
    proxy._on_endpointslice("ADDED", one)
    proxy._on_endpointslice("ADDED", two)
    proxy._on_endpointslice("ADDED", {**two, "metadata": {**two["metadata"], "namespace": "other"}})  # not ours
    endpoints = proxy._endpoints(KEY)
    assert [(ep.address, ep.ready, ep.serving, ep.terminating) for ep in endpoints] == [
        (POD_IPS[0], True, True, False),  # nil ready/serving count as true, nil terminating as false
        (POD_IPS[1], True, True, False),
    ]
    proxy._on_endpointslice("DELETED", two)
    assert [ep.address for ep in proxy._endpoints(KEY)] == [POD_IPS[0]]


async def test_wait_ready_needs_an_endpoint_the_kubelet_can_resolve(proxy, pods):
    assert await proxy.wait_ready(KEY, 0.1) is False
    proxy._on_endpointslice("SYNC", [endpoint_slice([endpoint("10.42.9.9")])])
    assert await proxy.wait_ready(KEY, 0.1) is False
    proxy._on_endpointslice("MODIFIED", endpoint_slice([endpoint(POD_IPS[0])]))
    assert await proxy.wait_ready(KEY, 1) is True


async def test_a_port_in_use_is_an_error_naming_address_and_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = free_port()
        proxy = ServiceProxy(Path("/x"), "127.0.0.1", {"ml/litellm": other, KEY: port}, lambda ip, p: None, lag=0)
        with pytest.raises(ServiceProxyError, match=f"127.0.0.1:{port}"):
            await proxy._listen()
    with socket.socket() as probe:  # the port bound before the failure was released again
        probe.bind(("127.0.0.1", other))


# -- the reflector (list + watch) with a fake API ----------------------------------------------------------------


class FakeResponse:
    def __init__(self, status: int = 200, data: bytes = b"", lines: list[dict] | None = None, block: bool = False):
        self.status = status
        self.data = data
        self.lines = lines or []
        self.block = block
        self.interrupted = threading.Event()
        self.closed = False

    def stream(self, amt=None, decode_content=False):
        for line in self.lines:
            yield json.dumps(line).encode() + b"\n"
        if self.block:  # a watch with nothing to say, until stop() shuts the socket down
            self.interrupted.wait(10)

    def shutdown(self):
        self.interrupted.set()

    def close(self):
        self.closed = True

    def release_conn(self):
        pass


class FakeList:
    """``list_*`` of the client: lists at resourceVersion 10, then 20; watches from a script."""

    def __init__(self, watches: list[FakeResponse]):
        self.watches = watches
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if kwargs.get("watch"):
            return self.watches.pop(0)
        version = "10" if len([c for c in self.calls if not c.get("watch")]) == 1 else "20"
        items = [{"metadata": {"name": f"svc-{version}", "resourceVersion": version}}]
        return FakeResponse(data=json.dumps({"metadata": {"resourceVersion": version}, "items": items}).encode())


def obj(name: str, version: str) -> dict:
    return {"metadata": {"name": name, "resourceVersion": version}}


async def test_reflector_lists_watches_resumes_and_lists_again_after_410():
    watches = [
        FakeResponse(
            lines=[{"type": "ADDED", "object": obj("a", "11")}, {"type": "BOOKMARK", "object": obj("", "15")}]
        ),
        FakeResponse(lines=[{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}]),
        FakeResponse(lines=[{"type": "DELETED", "object": obj("svc-20", "21")}], block=True),
    ]
    fake = FakeList(list(watches))
    events: list[tuple[str, object]] = []
    done = asyncio.Event()

    def handler(kind, data):
        events.append((kind, data))
        if kind == "DELETED":
            done.set()

    reflector = Reflector("test", fake, handler, asyncio.get_running_loop(), label_selector="x")
    reflector.start()
    await asyncio.wait_for(done.wait(), 5)
    started = time.monotonic()
    reflector.stop()
    await reflector.join()
    assert time.monotonic() - started < 2, "stop() interrupts the blocked watch"
    assert not reflector._thread.is_alive()
    assert watches[2].interrupted.is_set() and all(w.closed for w in watches)

    assert [(k, d if k == "SYNC" else d["metadata"]["name"]) for k, d in events] == [
        ("SYNC", [obj("svc-10", "10")]),
        ("ADDED", "a"),
        ("SYNC", [obj("svc-20", "20")]),  # 410 Gone: listed again
        ("DELETED", "svc-20"),
    ]
    watch_calls = [c for c in fake.calls if c.get("watch")]
    assert [c["resource_version"] for c in watch_calls] == ["10", "15", "20"]  # resumed after the bookmark
    assert all(c["label_selector"] == "x" and c["allow_watch_bookmarks"] for c in watch_calls)
    assert reflector.synced and reflector.relists == 2


async def test_reflector_backs_off_and_retries_after_an_error():
    calls = []

    def failing(**kwargs):
        calls.append(kwargs)
        if len(calls) < 3:
            raise ConnectionRefusedError("API server not up yet")
        if kwargs.get("watch"):
            return FakeResponse(block=True)
        return FakeResponse(data=b'{"metadata": {"resourceVersion": "1"}, "items": []}')

    synced = asyncio.Event()
    reflector = Reflector("flaky", failing, lambda k, d: synced.set(), asyncio.get_running_loop())
    reflector.start()
    await asyncio.wait_for(synced.wait(), 5)
    reflector.stop()
    await reflector.join()
    assert not reflector._thread.is_alive()
    assert len(calls) >= 3


# -- against a whole twin ------------------------------------------------------------------------------------------


OLLAMA_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "ollama", "namespace": "ml"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "ollama"}},
        "template": {
            "metadata": {"labels": {"app": "ollama"}},
            "spec": {
                "containers": [
                    {
                        "name": "ollama",
                        "image": "ollama/ollama:0.13.3",
                        "ports": [{"name": "http", "containerPort": 11434}],
                        "resources": {"requests": {"memory": "1Gi"}},
                    }
                ]
            },
        },
    },
}


def _ensure_namespace(core, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        core.create_namespace({"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def _connect(address: str, port: int, payload: bytes = b"GET / HTTP/1.0\r\n\r\n") -> bytes | str:
    """One request through the proxy: the answer, or "RESET" (the reset may come before connect() returns)."""
    try:
        with socket.create_connection((address, port), timeout=5) as sock:
            sock.sendall(payload)
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
            return b"".join(chunks)
    except ConnectionResetError:
        return "RESET"


@pytest.mark.slow
def test_live_service_without_a_resolvable_endpoint_is_reset_never_connected(twin, api, core):
    """A selector-less Service whose slice names a Pod IP no kubelet knows: reset at once, no connect attempt."""
    discovery = client.DiscoveryV1Api(api)
    _ensure_namespace(core, "ml")
    core.create_namespaced_service(
        "ml", {"metadata": {"name": "vllm-api"}, "spec": {"ports": [{"name": "http", "port": 8000}]}}
    )
    discovery.create_namespaced_endpoint_slice(
        "ml",
        {
            "metadata": {"name": "vllm-api-manual", "labels": {"kubernetes.io/service-name": "vllm-api"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.250.250"], "conditions": {"ready": True}}],
        },
    )
    address = twin.endpoints["address"]
    time.sleep(2)  # let the watch deliver the slice and the proxy apply it (its lag: 1 s)
    started = time.monotonic()
    assert _connect(address, 8000) == "RESET"
    assert time.monotonic() - started < 2
    core.delete_namespaced_service("vllm-api", "ml")
    discovery.delete_namespaced_endpoint_slice("vllm-api-manual", "ml")


@pytest.mark.slow
def test_live_service_follows_its_pods_ready_endpoints(twin, api, core, apps):
    """The Ollama Service answers through the proxy while its Pod is ready, and resets once it has no Pod."""
    discovery = client.DiscoveryV1Api(api)
    _ensure_namespace(core, "ml")
    apps.create_namespaced_deployment("ml", OLLAMA_DEPLOYMENT)
    core.create_namespaced_service(
        "ml",
        {
            "metadata": {"name": "ollama"},
            "spec": {
                "selector": {"app": "ollama"},
                "ports": [{"name": "http", "port": 11434, "targetPort": "http"}],
            },
        },
    )

    def ready_endpoints():
        slices = discovery.list_namespaced_endpoint_slice("ml", label_selector="kubernetes.io/service-name=ollama")
        return [
            ep
            for s in slices.items
            for ep in s.endpoints or []
            if ep.conditions and ep.conditions.ready and ep.target_ref
        ]

    endpoints = wait_for(ready_endpoints, timeout=120, what="a ready endpoint of ml/ollama")
    pod_ip = endpoints[0].addresses[0]
    assert not ipaddress.ip_address(pod_ip).is_loopback, f"a Pod IP (k3s: 10.42.0.0/16), not where it listens: {pod_ip}"
    address = twin.endpoints["address"]
    answer = wait_for(
        lambda: (a := _connect(address, 11434)) != "RESET" and a, timeout=30, what="an answer through the proxy"
    )
    assert b"Ollama is running" in answer

    apps.patch_namespaced_deployment_scale("ollama", "ml", {"spec": {"replicas": 0}})
    wait_for(lambda: not ready_endpoints(), timeout=60, what="no ready endpoint")
    assert wait_for(lambda: _connect(address, 11434) == "RESET", timeout=60, what="a reset once the Pod is gone")
    apps.delete_namespaced_deployment("ollama", "ml")
    core.delete_namespaced_service("ollama", "ml")
