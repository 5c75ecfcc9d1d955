"""report_charts: the report's pictures exist, have a size, and show what the data behind them says."""

from __future__ import annotations

import json

from ansible_collections.homelab.inference.plugins.module_utils.gate_stats import evaluate
from ansible_collections.homelab.inference.plugins.modules import report_charts


def answers(count, wrong, latency, prefix="doc"):
    classes = ["invoice", "letter", "receipt"]
    docs = []
    for i in range(count):
        expected = classes[i % 3]
        got = None if i in wrong.get("invalid", ()) else ("letter" if i in wrong.get("type", ()) else expected)
        docs.append(
            {
                "id": f"{prefix}-{i}",
                "expected": expected,
                "got": got,
                "valid": got is not None,
                "correct": got == expected,
                "latency": latency + i * 0.01,
                "thinking": False,
            }
        )
    return docs


def gate_result():
    challenger = answers(12, {"type": {0}, "invalid": {3}}, 0.5)
    champion = answers(12, {}, 0.4)
    thresholds = {"min_valid_json": 0.5, "min_accuracy": 0.5, "max_p95_latency": 0.9, "max_accuracy_drop": 0.05}
    evaluation = evaluate(challenger, thresholds, champion_docs=champion)
    return {
        "model": "qwen2.5:14b",
        "per_document": challenger,
        "champion_per_document": champion,
        "baseline": {"source": "recorded", "model": "phi4-mini:latest"},
        "thresholds": thresholds,
        "checks": evaluation["checks"],
    }


def probe_events(path):
    events = []
    for i in range(40):
        group = "ollama-qwen" if i < 15 or i >= 25 else "vllm-qwen"  # a detour and back
        events.append(
            {
                "alias": "ollama-qwen",
                "start": 1000 + i * 0.5,
                "duration": 0.2,
                "ok": i != 20,
                "model_group": group if i != 20 else None,
            }
        )
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + '{"alias": "ollama-qwen", "sta')  # cut short
    return events


def test_the_pictures_and_the_data_behind_them(module_runner, tmp_path):
    events = tmp_path / "probe.jsonl"
    probe_events(events)
    args = {"dest": str(tmp_path / "report"), "gate": {"ollama": gate_result()}, "probe_events_file": str(events)}
    result = module_runner(report_charts, args)
    assert not result.failed, result.get("msg")
    files = {c["file"]: c for c in result["charts"]}
    assert set(files) == {
        "gate-ollama-latency.png",
        "gate-ollama-confusion.png",
        "gate-ollama-rates.png",
        "probe.png",
    }
    for name, chart in files.items():
        png = (tmp_path / "report" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and chart["width"] >= 400 and chart["height"] >= 200, name
    confusion = files["gate-ollama-confusion.png"]["data"]
    challenger = confusion["challenger qwen2.5:14b"]
    assert challenger["columns"] == ["invoice", "letter", "receipt", "(no valid answer)"]
    assert challenger["counts"] == [[2, 1, 0, 1], [0, 4, 0, 0], [0, 0, 4, 0]], "one invoice as a letter, one invalid"
    assert confusion["champion phi4-mini:latest"]["counts"] == [[4, 0, 0, 0], [0, 4, 0, 0], [0, 0, 4, 0]]
    latency = files["gate-ollama-latency.png"]["data"]
    assert latency["limit"] == 0.9 and len(latency["series"]["champion phi4-mini:latest"]) == 12
    rows = files["gate-ollama-rates.png"]["data"]["rows"]
    assert [(r["label"], r["verdict"]) for r in rows] == [
        ("valid_json", "passed"),
        ("accuracy", "passed"),
        ("accuracy change vs champion", "inconclusive"),
    ]
    assert rows[2]["threshold"] == -0.05 and rows[2]["low"] < rows[2]["value"] < rows[2]["high"]
    probe = files["probe.png"]["data"]["aliases"]["ollama-qwen"]
    assert probe["requests"] == 40 and probe["failed"] == 1
    assert [(c["from"], c["to"]) for c in probe["changes"]] == [
        ("ollama-qwen", "vllm-qwen"),
        ("vllm-qwen", "ollama-qwen"),
    ]
    assert json.loads((tmp_path / "report" / "charts.json").read_text()) == result["charts"]
    again = module_runner(report_charts, args)
    assert again["changed"] is False, "the same data draws the same bytes"


def test_check_mode_draws_nothing_and_a_gate_without_answers_gets_no_picture(module_runner, tmp_path):
    args = {"dest": str(tmp_path / "r"), "gate": {"ollama": gate_result(), "vllm": {"skipped": True}}}
    preview = module_runner(report_charts, args, check_mode=True)
    assert preview["changed"] is True and not (tmp_path / "r").exists()
    assert [c["file"] for c in preview["charts"]] == [
        "gate-ollama-latency.png",
        "gate-ollama-confusion.png",
        "gate-ollama-rates.png",
    ]


def test_an_interval_bound_a_rounding_error_inside_its_estimate_is_drawn(tmp_path):
    from ansible_collections.homelab.inference.plugins.module_utils.report_charts import rates_chart

    # statsmodels' Wilson interval of 10 of 10 ends at 0.9999999999999999, below the estimate 1.0
    check = {
        "metric": "valid_json",
        "kind": "absolute",
        "verdict": "inconclusive",
        "threshold": 0.95,
        "value": 1.0,
        "low": 0.7224672001371107,
        "high": 0.9999999999999999,
    }
    assert rates_chart(tmp_path / "r.png", [check])["rows"][0]["high"] < 1.0
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_a_picture_that_cannot_be_drawn_is_named_and_the_others_are_drawn(module_runner, tmp_path):
    broken = gate_result()
    broken["checks"] = [
        {
            "metric": "accuracy",
            "kind": "absolute",
            "verdict": "passed",
            "threshold": 0.5,
            "value": "not a number",
            "low": 0.1,
            "high": 0.9,
        }
    ]
    result = module_runner(report_charts, {"dest": str(tmp_path), "gate": {"ollama": broken}})
    assert not result.failed
    assert [c["file"] for c in result["charts"]] == ["gate-ollama-latency.png", "gate-ollama-confusion.png"]
    assert len(result["problems"]) == 1 and result["problems"][0].startswith("gate-ollama-rates.png: TypeError")
    assert not list(tmp_path.glob(".chart-*")), "no scratch file is left behind"
