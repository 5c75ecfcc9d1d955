"""The fault matrix, runtimes that stay down: a model load out of memory (the rollback stays incomplete until
restore-tier.yml) and the Kubernetes API going down while Helm waits. See test_fault_runtimes.py; a module of its
own (its own twin), so that `make test` spreads the runtime faults over two pytest-xdist workers.
"""

from __future__ import annotations

import pytest

from tests.matrix.helpers import (
    Run,
    answers_through_litellm,
    dump,
    playbook,
    record,
    release_status,
    upgrade,
)
from tests.twin import wait_for

# in make extended, not make test: the CI's 90 minutes on a slow day (README "Tests and their budget")
pytestmark = [pytest.mark.slow, pytest.mark.extended]


def test_load_out_of_memory_leaves_the_rollback_incomplete_until_restored(twin):
    twin.fault("inject", "ollama-load-oom")
    run = upgrade(twin, "llama3.2:1b")
    assert run.returncode != 0 and "failed at step 'gate'" in run.stdout
    assert "requires more system memory" in run.stdout
    # the old model cannot load either while the fault lasts: the run must not claim it answers
    assert "it answers again" not in run.stdout and "restore-tier.yml" in run.stdout
    assert record(twin)["status"] == "rollback incomplete"
    twin.fault("clear")
    restored = playbook(twin, "restore-tier.yml")
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert dump(twin) == twin.baseline and answers_through_litellm(twin)


def test_the_kubernetes_api_down_during_the_helm_wait(twin):
    # the API server stops while Helm waits for the new Ollama Pod (k3s's server restarting, its host rebooting)
    # and stays down longer than the wait: helm fails, and the run's rollback starts while the API is still down.
    # It ends in the previous state, or says "rollback incomplete" naming the cause; then restore-tier.yml puts the
    # previous state back.
    run = Run(
        twin, "upgrade-model.yml", "-e", "tier=ollama", "-e", "model=qwen2.5:3b", "-e", "ollama_rollout_timeout=15"
    )
    run.stop_when(
        lambda r: r.task_started("Step deploy") is not None and release_status(twin, "ollama") == "pending-upgrade",
        0,  # signal 0: nothing is sent, the run goes on; the fault below is the event
        what="the Ollama release pending",
    )
    twin.fault("inject", "apiserver-down", "seconds=40")
    done = run.wait()
    assert done.returncode != 0 and "failed at step 'deploy'" in done.stdout, done.stdout[-3000:]
    assert "connection refused" in done.stdout.lower(), done.stdout[-3000:]
    wait_for(lambda: twin.kubectl("get", "nodes", check=False).returncode == 0, timeout=120, what="the API back")
    status = record(twin)["status"]
    if status != "rolled back":  # the record may still say running: the release of the lock met the API down too
        assert status in ("rollback incomplete", "running"), status
        assert "it answers again" not in done.stdout
        restored = playbook(twin, "restore-tier.yml")
        assert restored.returncode == 0, restored.stdout[-3000:]
        assert "Restored the state recorded by run" in restored.stdout
    assert dump(twin) == twin.baseline and answers_through_litellm(twin)
