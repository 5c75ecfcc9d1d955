"""The fault matrix, runtimes: upgrades whose pull or model load fails, vLLM killed in the drill, a LiteLLM config
the proxy refuses, and the Kubernetes API going down while Helm waits (see test_fault_matrix.py for what every case
checks). A twin of its own, so the two halves of the matrix run side by side (make pytest's workers).
"""

from __future__ import annotations

import json

import pytest

from tests.matrix.helpers import (
    Run,
    answers_through_litellm,
    assert_failed_and_back,
    dump,
    playbook,
    record,
    release_status,
    upgrade,
)
from tests.twin import wait_for

pytestmark = pytest.mark.slow


def test_ollama_pull_error_mid_stream(twin):
    twin.fault("inject", "ollama-pull-error", "percent=40")
    assert_failed_and_back(twin, upgrade(twin, "llama3.1:8b"), "deploy", "connection reset by peer")


def test_ollama_disk_full(twin):
    twin.fault("inject", "ollama-disk-full")
    assert_failed_and_back(twin, upgrade(twin, "llama3.1:8b"), "deploy", "no space left on device")


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


def test_vllm_down_during_the_drill(twin):
    # the routing changes (another vLLM model), so the drill runs; vLLM is killed as it starts
    run = upgrade(
        twin,
        "Qwen/Qwen2.5-7B-Instruct-AWQ",
        tier="vllm",
        at_step=("fallback drill", lambda: twin.fault("inject", "kill", "deployment=vllm-server")),
    )
    if run.returncode == 0:  # the drill waited out the restart: the target state
        assert dump(twin)["values"]["vllm"]["model"]["name"] == "Qwen/Qwen2.5-7B-Instruct-AWQ"
    else:
        assert "failed at step 'fallback drill'" in run.stdout, run.stdout[-3000:]
        assert dump(twin) == twin.baseline
    assert answers_through_litellm(twin, "vllm-qwen")


def test_litellm_crashing_on_a_bad_config(twin):
    # a model entry the proxy cannot load: LiteLLM exits at start ("Application startup failed"), the new Pod
    # never gets ready; the old one keeps serving (RollingUpdate, maxUnavailable 0) until the rollback. The first
    # LiteLLM change of the run is the detour, so that is the step that fails
    openai = {
        "model_name": "openai-gpt4o",
        "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://127.0.0.1:9/v1", "timeout": 1},
    }
    bad = json.dumps(
        {
            "litellm_extra_models": [openai, {"model_name": "broken", "litellm_params": {"model": 42}}],
            "litellm_rollout_timeout": 30,  # the new Pod's wait; the rollback keeps the inventory's
        }
    )
    run = upgrade(twin, "qwen2.5:3b", "-e", bad)
    assert_failed_and_back(twin, run, "detour", "LiteLLM")


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
