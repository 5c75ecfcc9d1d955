"""A run stopped in the detour's LiteLLM roll, then in the consumer's rollout, each recovered by the same upgrade
run again: see test_stop_and_run_again.py. A module of its own (its own twin), so that `make test` runs it on
another pytest-xdist worker than the drain chain (``--dist loadfile``).
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
    record,
    release_status,
    start,
    stopped,
    upgrade,
)

# in make extended, not make test: the CI's 90 minutes (README "Tests and their budget")
pytestmark = [pytest.mark.slow, pytest.mark.extended]


# -- run again: the same upgrade restores the record first, then reaches its target ------------------------------


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
