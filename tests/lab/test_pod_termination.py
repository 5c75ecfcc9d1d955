"""Pod termination in the twin's kubelet (lab/kubelet.py), without a twin: the preStop hooks, SIGTERM (an emulated
server drains, a process gets the signal) and SIGKILL at the end of the grace period, with real servers and
processes on 127.0.0.1. The same against the real API server, and with the service proxy's lag, is in
tests/lab/test_graceful_rollover.py."""

from __future__ import annotations

import asyncio
import stat
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from aiohttp import web

from lab.kubelet import Container, Kubelet, PodRuntime, grace_period, sleep_seconds
from lab.litellm_runner import LiteLLMProcess

# -- pure functions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "seconds"),
    [
        (["sleep", "5"], 5.0),
        (["/bin/sleep", "2.5"], 2.5),
        (["/bin/sh", "-c", "sleep 10"], 10.0),
        (["sh", "-c", "exec sleep 3"], 3.0),
        (["bash", "-c", " sleep 4s "], 4.0),
        (["/bin/sh", "-c", "sleep 5 && kill 1"], None),
        (["/bin/sh", "-c", "curl -s localhost/drain"], None),
        (["nginx", "-s", "quit"], None),
        (["sleep"], None),
        ([], None),
    ],
)
def test_an_exec_hook_is_run_only_when_it_is_a_sleep(command, seconds):
    assert sleep_seconds(command) == seconds


@pytest.mark.parametrize(
    ("metadata", "spec", "grace"),
    [
        ({"deletionGracePeriodSeconds": 7}, {"terminationGracePeriodSeconds": 30}, 7.0),  # what the API server set
        ({}, {"terminationGracePeriodSeconds": 12}, 12.0),
        ({}, {}, 30.0),  # Kubernetes' default
        ({"deletionGracePeriodSeconds": 0}, {}, 1.0),  # never below 1 s
    ],
)
def test_the_grace_period_is_the_deletions_else_the_pods(metadata, spec, grace):
    assert grace_period({"metadata": metadata, "spec": spec}) == grace


# -- a kubelet and its containers ------------------------------------------------------------------------------


@pytest.fixture
async def kubelet(tmp_path):
    cfg = SimpleNamespace(
        topology={"kubernetes": {"nodes": []}}, address="127.0.0.1", time_scale=0.01, log_dir=tmp_path, lab_dir=tmp_path
    )
    kubelet = Kubelet(SimpleNamespace(cfg=cfg))
    kubelet.loop = asyncio.get_running_loop()
    yield kubelet
    for task in list(kubelet._tasks):
        task.cancel()


HOOKS = web.AppKey("hooks", list)
STARTED = web.AppKey("started", list)


def app() -> web.Application:
    """An emulated server: ``GET /`` answers at once, ``GET /slow?s=N`` after N seconds; it counts hook calls."""
    application = web.Application()
    application[HOOKS] = []
    application[STARTED] = []

    async def root(_request):
        return web.Response(text="ok")

    async def slow(request):
        request.app[STARTED].append(time.monotonic())
        await asyncio.sleep(float(request.query["s"]))
        return web.Response(text="done")

    async def hook(request):
        request.app[HOOKS].append(request.path)
        return web.Response(text="draining", status=200 if request.path == "/drain" else 404)

    application.router.add_get("/", root)
    application.router.add_get("/slow", slow)
    application.router.add_get("/drain", hook)
    application.router.add_get("/missing", hook)
    return application


async def served(kubelet: Kubelet, tmp_path: Path, application: web.Application | None = None) -> Container:
    """A running container whose emulated server listens on 127.0.0.1 (as the kubelet starts Ollama's)."""
    container = Container("app", "ollama/ollama:0.13.3", kind="ollama", state="running")
    container.log_file = tmp_path / "app.log"
    await kubelet._serve(container, application or app())
    return container


async def slow_request_started(application: web.Application, timeout: float = 10.0) -> None:
    """Wait until the server is handling a ``/slow`` request: on a busy machine a request sent 0.1 s earlier may not
    have reached it yet, and a server with nothing in flight rightly exits at once on SIGTERM."""
    deadline = time.monotonic() + timeout
    while not application[STARTED]:
        assert time.monotonic() < deadline, "the slow request never reached the server"
        await asyncio.sleep(0.01)


def terminating(grace: float) -> PodRuntime:
    """A Pod whose termination starts now, with ``grace`` seconds."""
    runtime = PodRuntime("uid-1", "ml", "app-1", "node", {"metadata": {}, "spec": {}})
    runtime.terminating_since, runtime.grace = time.monotonic(), grace
    return runtime


def url(container: Container, path: str = "/") -> str:
    return f"http://127.0.0.1:{container.port}{path}"


async def get(address: str, timeout: float = 30) -> int | str:
    """One request on a new connection: the status, or the error's class name."""
    async with httpx.AsyncClient() as client:
        try:
            return (await client.get(address, timeout=timeout)).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__


# -- emulated servers -------------------------------------------------------------------------------------------


async def test_prestop_sleep_serves_on_then_sigterm_stops_accepting_and_finishes_the_requests_in_flight(
    kubelet, tmp_path
):
    application = app()
    container = await served(kubelet, tmp_path, application)
    address = url(container)
    idle = httpx.AsyncClient()  # a kept-alive connection (as the readiness probe's) must not hold the exit back
    assert (await idle.get(address)).status_code == 200
    in_flight = asyncio.create_task(get(url(container, "/slow?s=1.6")))
    await slow_request_started(application)
    started = time.monotonic()
    spec = {"lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}
    killing = asyncio.create_task(kubelet._kill(terminating(grace=30), container, spec))

    await asyncio.sleep(0.5)
    assert await get(address) == 200, "new connections are served during the preStop delay"
    await asyncio.sleep(0.8)  # past the delay: SIGTERM
    assert await get(address) == "ConnectError", "after SIGTERM nothing accepts connections"
    assert container.state == "running", "the server still finishes the request in flight"

    assert await in_flight == 200
    await asyncio.wait_for(killing, 5)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.9, f"done once the request in flight ended, long before the grace period: {elapsed:.1f}s"
    with pytest.raises(httpx.HTTPError):  # the idle connection was closed (and nothing listens any more)
        await idle.get(address)
    await idle.aclose()
    assert (container.state, container.exit_code, container.reason) == ("terminated", 0, "Completed")
    assert container.runner is None and container.port is None
    log = container.log_file.read_text()
    assert log.index("PreStop hook: sleep 1 s") < log.index("(SIGTERM)") < log.index("exited (0)")


async def test_a_request_longer_than_the_grace_period_is_cut_by_sigkill(kubelet, tmp_path):
    """The grace period only ever gets shorter (a second delete with --grace-period=1), and the container still gets
    upstream's 2 s after its SIGTERM; then SIGKILL: the connection is reset, exit code 137."""
    application = app()
    container = await served(kubelet, tmp_path, application)
    in_flight = asyncio.create_task(get(url(container, "/slow?s=20")))
    await slow_request_started(application)
    runtime = terminating(grace=30)
    started = time.monotonic()
    killing = asyncio.create_task(kubelet._kill(runtime, container, {}))
    await asyncio.sleep(0.3)
    runtime.grace = 1
    await asyncio.wait_for(killing, 10)
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 3.5, f"killed 2 s after SIGTERM, not after 30 s nor at once: {elapsed:.1f}s"
    assert await asyncio.wait_for(in_flight, 5) in ("RemoteProtocolError", "ReadError")
    assert (container.state, container.exit_code, container.reason) == ("terminated", 137, "Error")
    assert "killed (SIGKILL)" in container.log_file.read_text()


async def test_a_prestop_hook_longer_than_the_grace_period_is_cut(kubelet, tmp_path):
    container = await served(kubelet, tmp_path)
    started = time.monotonic()
    spec = {"lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 30"]}}}}
    await asyncio.wait_for(kubelet._kill(terminating(grace=1), container, spec), 10)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2, f"the hook is cut at the end of the grace period; nothing was in flight: {elapsed:.1f}s"
    assert (container.exit_code, container.reason) == (0, "Completed")
    assert "PreStop hook cut" in container.log_file.read_text()


async def test_http_get_hooks_reach_the_server_and_a_failing_hook_does_not_stop_the_termination(kubelet, tmp_path):
    application = app()
    for path, status in (("/drain", 200), ("/missing", 404)):
        container = await served(kubelet, tmp_path, application)
        spec = {"lifecycle": {"preStop": {"httpGet": {"path": path, "port": "http"}}}}
        await asyncio.wait_for(kubelet._kill(terminating(grace=30), container, spec), 10)
        assert (container.exit_code, container.reason) == (0, "Completed")
        assert f"{path}: {status}" in container.log_file.read_text()
    assert application[HOOKS] == ["/drain", "/missing"]
    assert "FailedPreStopHook: GET" in container.log_file.read_text()


async def test_an_exec_hook_that_is_not_a_sleep_is_skipped_and_a_plain_container_exits_at_sigterm(kubelet, tmp_path):
    container = Container("sidecar", "busybox:1.36", state="running")  # nothing to emulate
    container.log_file = tmp_path / "sidecar.log"
    started = time.monotonic()
    spec = {"lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "nginx -s quit"]}}}}
    await asyncio.wait_for(kubelet._kill(terminating(grace=30), container, spec), 5)
    assert time.monotonic() - started < 0.5
    assert (container.state, container.exit_code, container.reason) == ("terminated", 0, "Completed")
    assert "is not emulated (only sleeps are), skipped" in container.log_file.read_text()


# -- processes (LiteLLM's runner) ------------------------------------------------------------------------------

GRACEFUL = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as uvicorn: drain, then exit 0
time.sleep(60)
"""
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[-1] + ".child", "w").write(str(child.pid))
time.sleep(60)
"""


async def process_container(tmp_path: Path, name: str, code: str) -> Container:
    script = tmp_path / name
    script.write_text(f"#!{sys.executable}\n{code}")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    container = Container(name, "ghcr.io/berriai/litellm:main-v1.106.2", kind="litellm", state="running")
    container.log_file = tmp_path / f"{name}.log"
    container.process = LiteLLMProcess(script, tmp_path / f"work-{name}", 0, "", {}, container.log_file)
    await container.process.start()
    await asyncio.sleep(0.3)  # its signal handler is in place
    return container


async def test_a_process_gets_a_real_sigterm_and_its_exit_code_is_reported(kubelet, tmp_path):
    container = await process_container(tmp_path, "graceful", GRACEFUL)
    started = time.monotonic()
    await asyncio.wait_for(kubelet._kill(terminating(grace=30), container, {}), 5)
    assert time.monotonic() - started < 1
    assert (container.state, container.exit_code, container.reason) == ("terminated", 0, "Completed")


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_a_process_that_ignores_sigterm_is_killed_with_its_children_after_the_grace_period(kubelet, tmp_path):
    container = await process_container(tmp_path, "stubborn", STUBBORN)
    child = int((tmp_path / "work-stubborn" / "0.child").read_text())  # written by the script (its port is 0)
    assert alive(child)
    started = time.monotonic()
    await asyncio.wait_for(kubelet._kill(terminating(grace=1), container, {}), 10)
    assert 1.9 <= time.monotonic() - started < 3.5, "killed 2 s after SIGTERM (upstream's minimum)"
    assert (container.state, container.exit_code, container.reason) == ("terminated", 137, "Error")
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not alive(child), "the container's other processes die with it"
