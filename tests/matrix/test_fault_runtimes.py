"""The fault matrix, runtimes: upgrades whose pull fails or whose disk is full, vLLM killed in the drill, a LiteLLM
config the proxy refuses (see test_fault_matrix.py for what every case checks; the model load out of memory and the
Kubernetes API down during the Helm wait are in test_fault_runtimes_down.py). A twin of its own, so the parts of the
matrix run side by side (make pytest's workers).
"""

from __future__ import annotations

import json

import pytest

from tests.matrix.helpers import (
    answers_through_litellm,
    assert_failed_and_back,
    dump,
    upgrade,
)

pytestmark = pytest.mark.slow


def test_ollama_pull_error_mid_stream(twin):
    twin.fault("inject", "ollama-pull-error", "percent=40")
    assert_failed_and_back(twin, upgrade(twin, "llama3.1:8b"), "deploy", "connection reset by peer")


def test_ollama_disk_full(twin):
    twin.fault("inject", "ollama-disk-full")
    assert_failed_and_back(twin, upgrade(twin, "llama3.1:8b"), "deploy", "no space left on device")


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
