"""The champion/challenger gate over the twin, each case asserting the verdict and the report: a better challenger
passes after more documents, a clearly worse one fails on the relative threshold and is rolled back, the vLLM
champion (which cannot be loaded beside its challenger) is compared from its recorded gate, the operator's
Paperless-ngx documents are used (and the shipped ones stand in when the token is wrong), and the report's pictures
show what their data says.

The cases run in order on a twin of this file's own (not the matrix's shared one: the rebuild recorded the gates of
phi4-mini and Qwen3-8B-AWQ on the first 10 documents and nothing else is recorded); each starts from the state the
one before left. What the emulated models
answer is deterministic (lab/ollama/behaviour.py): on the 22 shipped documents phi4-mini answers 8 of the first 10
right, qwen2.5:14b 9 of 10 and 21 of 22, llama3.2:1b 3 of 10 (6 of them valid JSON).
"""

from __future__ import annotations

import json

import pytest

from tests.matrix.helpers import GATE, SharedLab, answers_through_litellm, upgrade

# in make extended, not make test: about 11 minutes on one worker on a good day, 25 on a slow one (README "Tests and
# their budget"); tests/gate/ proves the same rules against the emulators in make test
pytestmark = [pytest.mark.usefixtures("lab"), pytest.mark.slow, pytest.mark.extended]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A twin of this file's own, rebuilt from the lab inventory; its cases leave it where they end."""
    own = SharedLab(tmp_path_factory)
    yield own.get()
    own.stop()


def report(twin, tier: str) -> dict:
    """The newest upgrade report of ``tier``."""
    runs = sorted((twin.lab_dir / "reports").glob(f"*-upgrade-{tier}-*"), key=lambda p: p.stat().st_mtime)
    return json.loads((runs[-1] / "report.json").read_text())


def gate(*settings: dict, **override) -> str:
    """``-e`` of the lab's gate settings with ``settings`` and ``override`` (a None leaves a threshold out)."""
    merged = dict(GATE)
    for more in (*settings, override):
        merged.update(more)
    return json.dumps({"inference_gate": merged})


STRICT = {"on_inconclusive": "fail", "max_documents": 22, "min_valid_json": 0.7, "max_valid_json_drop": None}


def test_a_borderline_challenger_is_sampled_further_and_passes_against_its_recorded_champion(lab):
    run = upgrade(lab, "qwen2.5:14b", "-e", gate(STRICT, min_accuracy=0.7, max_accuracy_drop=0.3))
    assert run.returncode == 0, run.stdout[-3000:]
    result = report(lab, "ollama")["gate"]["ollama"]
    # 9 of 10 right (95 % CI 0.60 to 0.98) cannot tell 70 %: the gate classifies more until it can
    assert result["rounds"][0] == {"documents": 10, "verdict": "inconclusive"}
    assert result["verdict"] == "passed" and result["decided_by"] == "checks"
    assert result["documents_sent"] == result["rounds"][-1]["documents"] > 10
    baseline = result["baseline"]
    assert baseline["source"] == "recorded" and baseline["model"] == "phi4-mini:latest" and baseline["documents"] == 10
    relative = next(c for c in result["checks"] if c["kind"] == "relative" and c["metric"] == "accuracy")
    assert relative["verdict"] == "passed" and relative["champion"] == 0.8 and relative["champion_n"] == 10
    assert relative["challenger"] > relative["champion"]
    markdown = (sorted((lab.lab_dir / "reports").glob("*-upgrade-ollama-*"))[-1] / "report.md").read_text()
    assert f"Verdict: **passed** after {result['documents_sent']} documents" in markdown
    assert "Baseline (the champion): phi4-mini:latest, its gate recorded by run" in markdown


def test_a_challenger_clearly_worse_than_its_champion_fails_on_the_relative_threshold_and_is_rolled_back(lab):
    run = upgrade(lab, "llama3.2:1b", "-e", gate(STRICT, min_valid_json=0.5, min_accuracy=0.3, max_accuracy_drop=0.05))
    assert run.returncode != 0
    result = report(lab, "ollama")
    assert result["status"] == "rolled back", result["status"]
    gate_result = result["gate"]["ollama"]
    assert gate_result["verdict"] == "failed" and gate_result["baseline"]["model"] == "qwen2.5:14b"
    absolute = [c for c in gate_result["checks"] if c["kind"] == "absolute" and c["metric"] == "accuracy"]
    assert absolute[0]["verdict"] != "failed", "on its own it is not shown to miss 0.30"
    failure = gate_result["failures"][0]
    assert (
        failure.startswith("accuracy 0.30 (n=10) against the champion's ")
        and "is worse than the allowed drop of 0.05" in failure
    )
    assert failure in run.stdout, "the play's failure names the metric, both values and the threshold"
    assert result["serving"]["ollama-qwen"] == "qwen2.5:14b" and answers_through_litellm(lab, "ollama-qwen")


def test_the_vllm_champion_is_compared_from_its_recorded_gate(lab):
    run = upgrade(lab, "Qwen/Qwen2.5-7B-Instruct-AWQ", tier="vllm")
    assert run.returncode == 0, run.stdout[-3000:]
    result = report(lab, "vllm")["gate"]["vllm"]
    baseline = result["baseline"]
    assert baseline["source"] == "recorded" and baseline["documents"] == 10, baseline
    assert {c["metric"] for c in result["checks"] if c["kind"] == "relative"} == {"accuracy", "valid_json"}
    assert result["statistics"]["champion"]["n"] == 10 and result["passed"] is True


def test_the_operators_paperless_documents_are_gated_and_the_report_draws_them(lab):
    run = upgrade(
        lab,
        "qwen2.5:3b",
        "-e",
        '{"inference_gate_paperless": "{{ lab_paperless }}"}',
        "-e",
        "inference_report_charts_enabled=true",
    )
    assert run.returncode == 0, run.stdout[-3000:]
    full = report(lab, "ollama")
    result = full["gate"]["ollama"]
    source = result["document_source"]
    assert source["source"] == "paperless" and source["documents"] == 40 and source["unmapped"] == ["Vertrag"]
    assert all(d["id"].startswith("paperless-") for d in result["per_document"])
    assert result["baseline"]["source"] == "none", "the champion's gate was recorded on the shipped documents"
    run_dir = sorted((lab.lab_dir / "reports").glob("*-upgrade-ollama-*"), key=lambda p: p.stat().st_mtime)[-1]
    charts = json.loads((run_dir / "charts.json").read_text())
    names = {c["file"] for c in charts}
    assert {"gate-ollama-latency.png", "gate-ollama-confusion.png", "gate-ollama-rates.png", "probe.png"} <= names
    for chart in charts:
        png = (run_dir / chart["file"]).read_bytes()
        assert png.startswith(b"\x89PNG") and chart["width"] > 300 and chart["height"] > 150, chart["file"]
    confusion = next(c for c in charts if c["file"] == "gate-ollama-confusion.png")["data"]
    counts = confusion["challenger qwen2.5:3b"]["counts"]
    assert sum(map(sum, counts)) == result["documents_sent"]
    assert sum(counts[i][i] for i in range(3)) == sum(1 for d in result["per_document"] if d["correct"])
    probe = next(c for c in charts if c["file"] == "probe.png")["data"]["aliases"]
    assert probe["ollama-qwen"]["requests"] > 0 and probe["ollama-qwen"]["failed"] == 0
    markdown = (run_dir / "report.md").read_text()
    assert "Documents: 40 drawn from Paperless-ngx at https://" in markdown and "![" in markdown


def test_with_a_wrong_token_the_shipped_documents_stand_in_and_the_report_says_why(lab):
    run = upgrade(
        lab, "phi4-mini", "-e", '{"inference_gate_paperless": "{{ lab_paperless }}"}', "-e", "paperless_api_token=wrong"
    )
    assert run.returncode == 0, run.stdout[-3000:]
    result = report(lab, "ollama")["gate"]["ollama"]
    source = result["document_source"]
    assert source["source"] == "shipped" and "returned HTTP 401: Invalid token." in source["reason"], source
    assert not any(d["id"].startswith("paperless-") for d in result["per_document"])
    assert "wrong" not in json.dumps(source)
