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

import signal

import pytest

from tests.matrix.helpers import (
    GATE_FAILS,
    after,
    answers_through_litellm,
    assert_back_to_previous,
    playbook,
    pull_progress,
    record,
    release_status,
    start,
    stopped,
)

pytestmark = pytest.mark.slow

# -- restore-tier.yml: back to the previous state ------------------------------------------------------------------

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


def stop_then_restore(twin, instant, sig):
    """Start the upgrade of INSTANTS[instant], stop it there with sig, run restore-tier.yml: back to previous."""
    model, args, condition = INSTANTS[instant]
    run = start(twin, model, *args)
    stopped(run, lambda r: condition(twin, r), sig, instant)
    restored = playbook(twin, "restore-tier.yml")
    assert "Restored the state recorded by run" in restored.stdout, restored.stdout[-3000:]
    assert record(twin)["status"] == "restored"
    assert_back_to_previous(twin, restored)
    assert answers_through_litellm(twin, "ollama-qwen")


# the later instants are in test_stop_anywhere_late.py: a module per twin, so two workers share the cases
@pytest.mark.parametrize(
    ("instant", "sig"),
    [
        ("helm wait", signal.SIGKILL),
        ("pull", signal.SIGINT),
        ("gate", signal.SIGKILL),
        ("routed gate", signal.SIGINT),
    ],
    ids=lambda v: v if isinstance(v, str) else signal.Signals(v).name,
)
def test_stopped_inside_a_step_then_restore_tier(twin, instant, sig):
    stop_then_restore(twin, instant, sig)
