"""The fault matrix, rollouts: a runtime whose Pod never gets ready, a consumer whose rollout fails, a route whose
answers think. Each play fails naming the step and the cause, and the tier ends exactly in the previous state.

A module of its own (its own twin, as every module of tests/matrix) so that `make test` spreads the fault matrix
over more pytest-xdist workers (``--dist loadfile`` keeps a module on one worker).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.matrix.helpers import (
    answers_through_litellm,
    assert_failed_and_back,
    dump,
    record,
    upgrade,
)
from tests.twin import ROOT

# in make extended, not make test: the CI's 90 minutes on a slow day (README "Tests and their budget")
pytestmark = [pytest.mark.slow, pytest.mark.extended]


def test_a_runtime_that_never_gets_ready_names_its_own_cause(twin):
    # an image tag the registry does not have: Helm's --wait only says "context deadline exceeded"; the play
    # must say what the Pod says (ErrImagePull / ImagePullBackOff and the image)
    # (20 s for the Ollama release only: LiteLLM's detour and the rollback keep the inventory's wait, which a busy
    # machine needs)
    run = upgrade(twin, "qwen2.5:3b", "-e", "ollama_image_tag=0.13.99", "-e", "ollama_rollout_timeout=20")
    assert_failed_and_back(twin, run, "deploy", "context deadline exceeded", "Why: pod ml/ollama-", "ollama:0.13.99")
    assert "ImagePullBackOff" in run.stdout or "ErrImagePull" in run.stdout, run.stdout[-3000:]


def test_consumer_rollout_failing(twin):
    twin.fault("inject", "image-missing", "image=douaberigoale/paperless-metadata-ollama-processor:latest")
    # rollouts in the twin take seconds: wait 20 s for the consumer's (and its rollback's), not the inventory's 120 s;
    # the runtimes and LiteLLM keep theirs, a busy machine needs them
    run = upgrade(twin, "qwen2.5:3b", "-e", "llm_consumers_rollout_timeout=20")
    assert run.returncode != 0 and "failed at step 'switch'" in run.stdout, run.stdout[-3000:]
    # the consumer cannot roll back onto its old config either while its image is missing: said, not hidden
    assert "it answers again" not in run.stdout or record(twin)["status"] == "rolled back"
    assert dump(twin)["consumer_config"] == twin.baseline["consumer_config"]
    assert answers_through_litellm(twin)


def test_a_route_whose_answers_think_fails_the_routed_gate(twin):
    # a catalog entry that forgets Qwen3 thinks, and a route without JSON answers: the route then lacks the
    # thinking switch. The direct gate passes (it asks the model not to think); what clients get does not.
    group_vars = ROOT / "inventory" / "lab" / "group_vars" / "all"
    tiers = yaml.safe_load((group_vars / "main.yml").read_text())["inference_tiers"]
    catalog = yaml.safe_load((group_vars / "models.yml").read_text())["inference_model_catalog"]
    tiers["vllm"]["route_params"] = {}
    catalog["Qwen/Qwen3-8B-AWQ"]["thinks"] = False
    run = upgrade(
        twin,
        "Qwen/Qwen3-8B-AWQ",
        "-e",
        json.dumps({"inference_tiers": tiers, "inference_model_catalog": catalog}),
        tier="vllm",
    )
    assert run.returncode != 0 and "failed at step 'routed gate'" in run.stdout, run.stdout[-3000:]
    assert "Gate through LiteLLM failed for alias vllm-qwen" in run.stdout and "thinking" in run.stdout
    assert "Rolled back to Qwen/Qwen3-8B-AWQ; it answers again" in run.stdout
    assert dump(twin) == twin.baseline and answers_through_litellm(twin, "vllm-qwen")
