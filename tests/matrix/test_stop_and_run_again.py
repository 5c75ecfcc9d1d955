"""Runs stopped inside a step, recovered by the same upgrade run again: it restores what the stopped run recorded,
then reaches its own target (see test_stop_anywhere.py for the instants that restore-tier.yml recovers). Two
chains, each from the previous state to a target and back, so each ends where it started; together they stop the
detour's LiteLLM roll, the drain, the LXC restart wait of a shrink and the consumer's rollout, and show the LXC
kept larger without inference_lxc_shrink and shrunk with it.
"""

from __future__ import annotations

import signal

import pytest

from tests.matrix.helpers import (
    after,
    assert_back_to_previous,
    dump,
    every_alias_answers,
    forget_pins,
    lxc_memory,
    node_cordoned,
    start,
    stopped,
    upgrade,
)

# in make extended, not make test: the CI's 90 minutes on a slow day (README "Tests and their budget")
pytestmark = [pytest.mark.slow, pytest.mark.extended]


# -- run again: the same upgrade restores the record first, then reaches its target ------------------------------


def test_ctrl_c_in_the_drain_then_kill_in_the_lxc_restart_wait_of_a_shrink_each_run_again(twin):
    # story 12.8's upgrade: the LXC grows from 8 to 20 GB; Ctrl-C while the node drains leaves it cordoned and
    # Ollama Pending (the case)
    run = start(twin, "qwen2.5:14b")
    task = stopped(run, lambda r: after(r, "Cordon and drain", 1.0) and node_cordoned(twin), signal.SIGINT, "drain")
    assert "Cordon and drain" in task
    assert node_cordoned(twin)
    again = upgrade(twin, "qwen2.5:14b")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Restoring the state recorded by run" in again.stdout and "took over the lock" in again.stdout
    state = dump(twin)
    assert state["values"]["ollama"]["model"] == "qwen2.5:14b" and state["lxc_memory"] == 20480
    assert not state["unschedulable"] and every_alias_answers(twin)

    # back to phi4-mini: without inference_lxc_shrink the LXC is kept larger, and the plan says so
    preview = upgrade(twin, "phi4-mini", "--check")
    assert preview.returncode == 0, preview.stdout[-3000:]
    assert "kept larger (inference_lxc_shrink is false)" in preview.stdout
    assert "It stays larger because inference_lxc_shrink is false" in preview.stdout

    # with it, the LXC shrinks to what phi4-mini needs (drain, resize, restart, uncordon); killed while the LXC
    # restarts with its new size, the same run again restores the 20 GB state, then shrinks it
    shrink = ("-e", "inference_lxc_shrink=true")
    run = start(twin, "phi4-mini", *shrink)
    task = stopped(
        run, lambda r: after(r, "Resize the LXC and restart it") and lxc_memory(twin) == 8192, signal.SIGKILL, "restart"
    )
    assert "Resize the LXC and restart it" in task
    again = upgrade(twin, "phi4-mini", *shrink)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Restoring the state recorded by run" in again.stdout
    assert (
        "20480 -> 8192 (shrink)"
        in (twin.lab_dir / "reports")
        .joinpath(
            sorted(p.name for p in (twin.lab_dir / "reports").glob("*-upgrade-ollama-phi4_mini"))[-1], "report.md"
        )
        .read_text()
    )
    forget_pins(twin)
    assert_back_to_previous(twin, again)
