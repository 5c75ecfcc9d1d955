"""A run stopped at any instant, inside any step, is recovered: by the same upgrade run again, or by
playbooks/restore-tier.yml.

Each case starts an upgrade and stops it while an operation is under way (the twin shows it: a cordoned node, an
LXC whose memory just changed, a Helm release pending, a pull's progress, a gate's requests, a consumer rolling
out, vLLM scaled to 0 by the drill, a rollback's own Helm rollback). It stops it the two ways an operator's run
ends without its `rescue`/`always`: SIGKILL of the process group (a lost laptop, `kill -9`) or SIGINT to the
process group (Ctrl-C in a terminal). Then either the same upgrade runs again (it restores the record first,
then reaches the target) or restore-tier.yml runs (the previous state). Each ends exactly in the target or the
previous state (the normalised dump), with every node schedulable and every alias answering through LiteLLM.

`make test` covers every step this way (the instants below); `make chaos` stops runs at many seeded random
instants (test_chaos.py).
"""

from __future__ import annotations

import json
import signal

import pytest
import yaml

from tests.matrix.helpers import (
    ROOT,
    Run,
    answers_through_litellm,
    dump,
    every_alias_answers,
    lxc_memory,
    node_cordoned,
    playbook,
    pull_progress,
    record,
    release_status,
    upgrade,
)

pytestmark = pytest.mark.slow

UPGRADE = "upgrade-model.yml"


def start(twin, model: str, *args: str, tier: str = "ollama") -> Run:
    return Run(twin, UPGRADE, "-e", f"tier={tier}", "-e", f"model={model}", *args)


def stopped(run: Run, condition, sig: int, what: str) -> str:
    """Stop ``run`` with ``sig`` once ``condition`` holds; check it ended without a rescue, its record left
    ``running``; return the task it was in."""
    task = run.stop_when(condition, sig, what=what)
    done = run.wait()
    if sig == signal.SIGKILL:
        assert done.returncode == -signal.SIGKILL
    else:  # Ctrl-C: ansible-playbook ends with "User interrupted execution", running no rescue and no always
        assert done.returncode != 0 and "User interrupted execution" in done.stdout, done.stdout[-2000:]
    assert record(run.twin)["status"] == "running", "a stopped run runs no rescue: its record stays unfinished"
    return task


def after(run: Run, text: str, seconds: float = 0.0):
    """The run is at least ``seconds`` into the last task whose name contains ``text``."""
    started = run.task_started(text)
    return started is not None and started >= seconds


def assert_back_to_previous(twin, recovered) -> None:
    assert recovered.returncode == 0, recovered.stdout[-3000:]
    state = dump(twin)
    assert state == twin.baseline, {k: (state[k], twin.baseline[k]) for k in state if state[k] != twin.baseline[k]}
    assert not state["unschedulable"] and every_alias_answers(twin)


def forget_pins(twin) -> None:
    """A successful upgrade pins its model in the inventory's pins file; the rebuilt baseline has none."""
    (twin.lab_dir / "model-pins.yml").unlink(missing_ok=True)


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
            sorted(p.name for p in (twin.lab_dir / "reports").glob("*-upgrade-ollama-phi4-mini"))[-1], "report.md"
        )
        .read_text()
    )
    forget_pins(twin)
    assert_back_to_previous(twin, again)


def test_ctrl_c_in_the_detour_roll_then_kill_in_the_consumer_roll_each_run_again(twin):
    # the detour is the run's first change: LiteLLM rolls to serve ollama-qwen from vLLM; Ctrl-C while Helm waits
    run = start(twin, "qwen2.5:3b")
    stopped(
        run,
        lambda r: (
            after(r, "Install or upgrade the release", 1.0)
            and r.task_started("Step capacity") is None
            and release_status(twin, "litellm") == "pending-upgrade"
        ),
        signal.SIGINT,
        "the detour's LiteLLM roll",
    )
    assert record(twin)["step"] == "detour"
    again = upgrade(twin, "qwen2.5:3b")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Restoring the state recorded by run" in again.stdout
    assert dump(twin)["values"]["ollama"]["model"] == "qwen2.5:3b" and every_alias_answers(twin)

    # back to phi4-mini, killed while the consumer rolls onto its new config
    run = start(twin, "phi4-mini")
    stopped(run, lambda r: after(r, "Roll the consumer so it reads the new config", 1.0), signal.SIGKILL, "consumer")
    assert record(twin)["step"] == "switch"
    again = upgrade(twin, "phi4-mini")
    assert "Restoring the state recorded by run" in again.stdout
    forget_pins(twin)
    assert_back_to_previous(twin, again)


# -- restore-tier.yml: back to the previous state ------------------------------------------------------------------

# an accuracy no model reaches: the gate fails and the run rolls back
GATE = yaml.safe_load((ROOT / "inventory" / "lab" / "group_vars" / "all" / "main.yml").read_text())["inference_gate"]
GATE_FAILS = json.dumps({"inference_gate": {**GATE, "min_accuracy": 1.01}})

INSTANTS = {
    # the Ollama release's helm upgrade --wait: the release is pending-upgrade, the new Pod starting
    "helm wait": (
        "qwen2.5:3b",
        (),
        lambda twin, r: (
            after(r, "Install or upgrade the release", 0.5)
            and r.task_started("Step deploy") is not None
            and release_status(twin, "ollama") == "pending-upgrade"
        ),
    ),
    # the model pull (an async job): it must stop with the run, not finish behind the restore's back
    "pull": (
        "qwen2.5:14b",
        (),
        lambda twin, r: after(r, "Wait for the pulls") and 1 < pull_progress(twin, "qwen2.5:14b"),
    ),
    "gate": ("qwen2.5:3b", (), lambda twin, r: after(r, "Classify the shipped documents", 1.0)),
    "routed gate": ("qwen2.5:3b", (), lambda twin, r: after(r, "Classify through LiteLLM", 1.0)),
    # the drill scaled vLLM to 0: no Helm rollback brings it back (its three-way merge keeps the live scale)
    "fallback drill": ("qwen2.5:3b", (), lambda twin, r: after(r, "Check the alias falls back", 0.5)),
    # the prune removes the old model: the restore pulls it again
    "prune": ("qwen2.5:3b", (), lambda twin, r: after(r, "Remove models not on the keep-list", 0.2)),
    # the gate fails; the rollback's own Helm rollback of Ollama is under way
    "rollback": (
        "qwen2.5:3b",
        ("-e", GATE_FAILS),
        lambda twin, r: (
            after(r, "Roll back release ollama", 0.3) and release_status(twin, "ollama") == "pending-rollback"
        ),
    ),
}


@pytest.mark.parametrize(
    ("instant", "sig"),
    [
        ("helm wait", signal.SIGKILL),
        ("pull", signal.SIGINT),
        ("gate", signal.SIGKILL),
        ("routed gate", signal.SIGINT),
        ("fallback drill", signal.SIGKILL),
        ("prune", signal.SIGINT),
        ("rollback", signal.SIGKILL),
    ],
    ids=lambda v: v if isinstance(v, str) else signal.Signals(v).name,
)
def test_stopped_inside_a_step_then_restore_tier(twin, instant, sig):
    model, args, condition = INSTANTS[instant]
    run = start(twin, model, *args)
    stopped(run, lambda r: condition(twin, r), sig, instant)
    restored = playbook(twin, "restore-tier.yml")
    assert "Restored the state recorded by run" in restored.stdout, restored.stdout[-3000:]
    assert record(twin)["status"] == "restored"
    assert_back_to_previous(twin, restored)
    assert answers_through_litellm(twin, "ollama-qwen")
