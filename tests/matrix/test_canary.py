"""The canary over the twin: after the gate, LiteLLM serves ollama-qwen from phi4-mini and qwen2.5:14b side by side
while the twin's traffic generator (lab/traffic.py, standing in for Paperless-AI) sends live requests; the play
reads the proxy's per-deployment counts and promotes or rolls back. qwen2.5:14b's 16Gi limit holds both models
(11 + 3.5 GiB); qwen2.5:3b's 4Gi does not, and that canary is refused before anything changes.

On the matrix's shared twin (phi4-mini on Ollama): the failing canary ends where it began; the healthy one is
promoted and the twin fixture restores the baseline after it.
"""

from __future__ import annotations

import json

import pytest
import yaml

from lab.traffic import Traffic
from tests.matrix.helpers import answers_through_litellm, dump, upgrade

# in make extended, not make test: two upgrades with an LXC resize on the shared twin, 11 minutes on a loaded machine
# (README "Tests and their budget"); tests/gate/test_litellm_canary.py proves the module against the real proxy in
# make test
pytestmark = [pytest.mark.slow, pytest.mark.extended]

ALIAS = "ollama-qwen"
CANARY = ["-e", '{"inference_canary": "{{ lab_canary }}"}']


def report(twin) -> tuple[dict, str]:
    """The newest ollama upgrade report: report.json and report.md."""
    runs = sorted((twin.lab_dir / "reports").glob("*-upgrade-ollama-*"), key=lambda p: p.stat().st_mtime)
    return json.loads((runs[-1] / "report.json").read_text()), (runs[-1] / "report.md").read_text()


def litellm_model_list(twin) -> list[dict]:
    data = json.loads(twin.kubectl("-n", "ml", "get", "configmap", "litellm-config", "-o", "json").stdout)["data"]
    return yaml.safe_load(data["config.yaml"])["model_list"]


def traffic(twin) -> Traffic:
    return Traffic(twin.endpoints["services"]["ml/litellm"], twin.secret("litellm-master-key"), ALIAS, workers=2)


def test_a_canary_whose_two_models_do_not_fit_together_is_refused_before_any_change(twin):
    run = upgrade(twin, "qwen2.5:3b", *CANARY)
    assert run.returncode != 0
    assert "would serve phi4-mini" in run.stdout and "side by side" in run.stdout, run.stdout[-3000:]
    assert "Nothing was changed." in run.stdout
    assert dump(twin) == twin.baseline


def test_a_canary_whose_new_model_fails_live_requests_is_rolled_back_to_the_old_model(twin):
    live = traffic(twin)

    def break_new_model_and_send_traffic():
        # after the gate (which passed on the healthy model): its runner now crashes on 40 % of the requests
        twin.fault("inject", "ollama-chat-error", "model=qwen2.5:14b", "percent=40")
        live.start()

    try:
        run = upgrade(twin, "qwen2.5:14b", *CANARY, at_step=("canary", break_new_model_and_send_traffic))
    finally:
        seen = live.stop()
    assert run.returncode != 0
    assert "failed at step 'canary'" in run.stdout, run.stdout[-3000:]
    assert "Rolled back to phi4-mini" in run.stdout, run.stdout[-3000:]
    result, markdown = report(twin)
    assert result["status"] == "rolled back", result["status"]
    canary = result["canary"]["ollama"]
    assert canary["verdict"] == "failed" and canary["passed"] is False and canary["decided_by"] == "verdict"
    new, old = canary["challenger"], canary["champion"]
    assert new["failures"] > 0 and new["requests"] >= 20 and old["requests"] > 0
    failure = canary["failures"][0]
    assert failure.startswith("success_rate ") and ("minimum 0.90" in failure or "allowed drop of 0.05" in failure)
    assert failure in run.stdout, "the play's failure names the metric, the values and the threshold"
    assert f"{ALIAS} - ROLLED BACK" in markdown and "| new (challenger) |" in markdown
    # the clients saw both models while it lasted, and the alias is on the old model alone again
    assert seen["served_by"].get(f"{ALIAS}.champion", 0) > 0 and seen["requests"] > 0
    assert dump(twin) == twin.baseline
    assert [e["litellm_params"]["model"] for e in litellm_model_list(twin) if e["model_name"] == ALIAS] == [
        "ollama_chat/phi4-mini:latest"
    ]
    assert answers_through_litellm(twin, ALIAS)


def test_a_healthy_canary_is_promoted(twin):
    live = traffic(twin)
    try:
        run = upgrade(twin, "qwen2.5:14b", *CANARY, at_step=("canary", live.start))
    finally:
        seen = live.stop()
    assert run.returncode == 0, run.stdout[-3000:]
    result, markdown = report(twin)
    canary = result["canary"]["ollama"]
    assert canary["verdict"] == "passed" and canary["passed"] is True, canary.get("msg")
    new = canary["challenger"]
    assert new["failures"] == 0 and new["requests"] >= 20 and new["rate"]["low"] >= 0.90
    assert {c["verdict"] for c in canary["checks"]} == {"passed"}
    assert f"{ALIAS} - promoted" in markdown
    # live requests reached both deployments while the canary ran; afterwards the alias serves the new model alone
    assert seen["served_by"].get(f"{ALIAS}.challenger", 0) > 0 and seen["served_by"].get(f"{ALIAS}.champion", 0) > 0
    entries = [e for e in litellm_model_list(twin) if e["model_name"] == ALIAS]
    assert [e["litellm_params"]["model"] for e in entries] == ["ollama_chat/qwen2.5:14b"]
    assert "weight" not in entries[0]["litellm_params"] and "model_info" not in entries[0]
    assert result["serving"][ALIAS] == "qwen2.5:14b" and answers_through_litellm(twin, ALIAS)
