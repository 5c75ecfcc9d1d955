"""The long sweep (`make chaos`): upgrades stopped at many seeded random instants, each recovered.

Each round picks, from a seeded random generator, an upgrade (a move with or without an LXC resize, a gate that
passes or fails), an instant (a random time into the run: anywhere inside any step, a rollback included), a
signal (SIGKILL of the process group, or SIGINT as Ctrl-C sends it) and a recovery (the same upgrade run again,
or playbooks/restore-tier.yml). A run that ends before its instant counts as not stopped. After the recovery the
tier is exactly in the target state (the upgrade run again) or the previous state (restore-tier.yml), every node
is schedulable and every alias answers through LiteLLM.

Not part of `make test`. `make chaos` runs it: CHAOS_ROUNDS (default 20) rounds from CHAOS_SEED (default the
date), printed so a failing round can be replayed with the same seed.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.matrix.helpers import GATE_FAILS, Run, dump, every_alias_answers, forget_pins, playbook, record, upgrade

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

SEED = int(os.environ.get("CHAOS_SEED") or time.strftime("%Y%m%d"))
ROUNDS = int(os.environ.get("CHAOS_ROUNDS") or 20)

# (model, extra arguments, the run's rough length in seconds on this machine)
MOVES = [
    ("qwen2.5:14b", (), 135),  # the LXC grows: drain, resize, restart
    ("qwen2.5:3b", (), 115),
    ("qwen2.5:3b", ("-e", GATE_FAILS), 110),  # the gate fails: the instant may fall inside the rollback
]


def rounds():
    rng = random.Random(SEED)
    for n in range(ROUNDS):
        model, args, length = rng.choice(MOVES)
        yield pytest.param(
            model,
            args,
            round(rng.uniform(2.0, length), 1),
            rng.choice([signal.SIGKILL, signal.SIGINT]),
            # an upgrade whose gate fails cannot reach its target: restore-tier.yml recovers it
            "restore-tier" if args else rng.choice(["run again", "restore-tier"]),
            id=f"seed{SEED}-{n}",
        )


@pytest.mark.parametrize(("model", "args", "at", "sig", "recovery"), list(rounds()))
def test_stopped_at_a_random_instant_then_recovered(twin, model, args, at, sig, recovery):
    what = f"{model} {' '.join(args)[:40]} stopped at {at} s with {signal.Signals(sig).name}, {recovery}"
    print(f"CHAOS_SEED={SEED}: {what}")
    run = Run(twin, "upgrade-model.yml", "-e", "tier=ollama", "-e", f"model={model}", *args)
    try:
        run.stop_when(lambda r: time.monotonic() - r.started >= at, sig, what=f"{at} s")
    except AssertionError:
        pytest.skip(f"the run ended before {at} s")  # nothing was stopped: not a round of this sweep
    run.wait()
    if recovery == "run again":
        again = upgrade(twin, model, *args)
        assert again.returncode == 0, again.stdout[-3000:]
        state = dump(twin)
        assert state["values"]["ollama"]["model"] == model
        forget_pins(twin)  # the fixture then puts back the previous state with restore-tier.yml
    else:
        restored = playbook(twin, "restore-tier.yml")
        assert restored.returncode == 0, restored.stdout[-3000:]
        assert record(twin)["status"] == "restored"
        assert dump(twin) == twin.baseline
    assert not dump(twin)["unschedulable"] and every_alias_answers(twin)
