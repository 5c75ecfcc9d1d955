"""The control plane's supervisor (lab/controlplane/supervisor.py) with stand-in processes: restart of a component
that exits, back-off and start limit for one that exits at once, hold/release, and a stop that stays stopped.

The restart policy's times are shortened here; the whole-twin tests (test_outage.py) use the real ones with the
real components.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from lab.controlplane.supervisor import Component, ControlPlane


def _control_plane(tmp_path: Path) -> ControlPlane:
    cp = ControlPlane(tmp_path, "127.0.0.1", {}, tmp_path, pki=None, time_scale=0.01)
    cp.restart_sec, cp.stable_after, cp.restart_max, cp.start_limit = 0.05, 1.0, 0.2, 3
    cp._healthy = lambda url: True  # "healthy" = the process runs
    return cp


def _sleeper(tmp_path: Path, name: str = "sleeper") -> Component:
    # the LAB_DIR in the command line tells this test's processes from any other
    argv = [sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path)]
    return Component(name, argv, "", tmp_path / "logs" / f"{name}.log")


async def _until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def _ours(tmp_path: Path) -> list[int]:
    """Pids of live processes started with this test's tmp_path on their command line."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().split()[2]
            except OSError:
                continue
            if str(tmp_path).encode() in cmdline and state != "Z":
                pids.append(int(entry.name))
    return pids


async def test_a_component_that_exits_is_started_again_with_the_same_command_line(tmp_path):
    cp = _control_plane(tmp_path)
    component = await cp._launch(_sleeper(tmp_path))
    cp.supervise()
    try:
        first = component.process.pid
        os.kill(first, signal.SIGKILL)
        await _until(lambda: component.restarts == 1 and component.state == "running")
        assert component.process.pid != first and component.running
        assert component.last_exit["signal"] == "SIGKILL" and component.last_exit["reason"] == "exited"
        assert component.argv[-1] == str(tmp_path)
        described = cp.snapshot()["sleeper"]
        assert described["restarts"] == 1 and described["last_exit"]["code"] == -9 and described["running"]
        text = component.log_file.read_text()
        assert "lab-supervisor: sleeper killed by SIGKILL after" in text and "restart 1 in 0.1 s" in text
        assert f"started again (pid {component.process.pid}, restart 1)" in text
    finally:
        await cp.stop()
    assert _ours(tmp_path) == []


async def test_a_component_that_exits_at_once_backs_off_then_is_given_up_until_released(tmp_path):
    cp = _control_plane(tmp_path)
    crasher = Component("crasher", ["sh", "-c", "exit 3", str(tmp_path)], "", tmp_path / "crasher.log")
    cp._healthy = lambda url: False  # never healthy: it exits first
    started = time.monotonic()
    await cp._launch(crasher)
    cp.supervise()
    try:
        await _until(lambda: crasher.state == "failed")
        # restarts after 0.05, 0.1, 0.2 s (doubling, capped at 0.2), then the start limit (3 quick exits)
        assert crasher.restarts == 3 and crasher.last_exit["code"] == 3
        assert time.monotonic() - started >= 0.35
        await asyncio.sleep(0.5)
        assert crasher.restarts == 3 and crasher.state == "failed", "no spinning once given up"
        assert "not restarted any more (start limit)" in crasher.log_file.read_text()
        cp.release("crasher")
        await _until(lambda: crasher.restarts >= 4)
    finally:
        await cp.stop()


async def test_hold_keeps_a_component_down_until_release(tmp_path):
    cp = _control_plane(tmp_path)
    component = await cp._launch(_sleeper(tmp_path, "kube-apiserver"))
    cp.supervise()
    try:
        killed = await cp.hold("kube-apiserver")
        assert killed is not None and not component.running
        await asyncio.sleep(0.4)  # many restart delays
        assert component.state == "held" and component.restarts == 0 and not component.running
        assert component.last_exit["reason"] == "held down"
        cp.release("kube-apiserver")
        await _until(lambda: component.running and component.state == "running")
        assert component.restarts == 1 and component.process.pid != killed
        assert await cp.wait_healthy("kube-apiserver", 1)
    finally:
        await cp.stop()


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.06, 0.2])
async def test_a_stopped_control_plane_stays_stopped_whatever_the_restarter_was_doing(tmp_path, delay):
    cp = _control_plane(tmp_path)
    component = await cp._launch(_sleeper(tmp_path))
    cp.supervise()
    await cp.kill("sleeper")  # the supervisor restarts it after 0.05 s: stop before, during and after that
    await asyncio.sleep(delay)
    await cp.stop()
    assert component.state == "stopped" and not component.running
    await asyncio.sleep(0.3)
    assert _ours(tmp_path) == [], "a process started after stop()"
    assert cp.components == []
