"""Per-deployment counts from LiteLLM's Prometheus metrics (plugins/module_utils/litellm_metrics.py): the text as
LiteLLM 1.106.2 serves it, and increases across a restarted proxy's counter resets."""

from __future__ import annotations

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.litellm_metrics import (
    CounterTracker,
    MetricsError,
    deployment_counts,
)

LABELS = (
    'api_base="http://127.0.0.1:1/v1",api_key_alias="None",api_provider="openai",client_ip="127.0.0.1",'
    'hashed_api_key="litellm_proxy_master_key",litellm_model_name="{model}",model_group="{group}",model_id="{mid}",'
    'requested_model="{group}",team="None",team_alias="None",user_agent="{agent}"'
)


def metrics(rows):
    """Exposition text with one sample per (counter, model id, value, user agent) row, as LiteLLM writes it."""
    lines = []
    for counter in ("total_requests", "success_responses", "failure_responses"):
        lines += [f"# HELP litellm_deployment_{counter} x", f"# TYPE litellm_deployment_{counter} counter"]
        for name, mid, value, agent in rows:
            if name == counter:
                labels = LABELS.format(model=mid.split(".")[-1], group="ollama-qwen", mid=mid, agent=agent)
                lines.append(f"litellm_deployment_{counter}_total{{{labels}}} {value}")
                lines.append(f"litellm_deployment_{counter}_created{{{labels}}} 1.79e+09")
    return "\n".join(lines) + "\n"


def test_counts_are_summed_per_deployment_over_the_other_labels():
    text = metrics(
        [
            ("total_requests", "ollama-qwen.champion", 18.0, "curl"),
            ("total_requests", "ollama-qwen.champion", 2.0, "paperless-ai"),
            ("success_responses", "ollama-qwen.champion", 20.0, "curl"),
            ("total_requests", "ollama-qwen.challenger", 5.0, "curl"),
            ("success_responses", "ollama-qwen.challenger", 3.0, "curl"),
            ("failure_responses", "ollama-qwen.challenger", 2.0, "curl"),
        ]
    )
    counts = deployment_counts(text, "ollama-qwen")
    assert counts == {
        "ollama-qwen.champion": {"requests": 20, "successes": 20, "failures": 0},
        "ollama-qwen.challenger": {"requests": 5, "successes": 3, "failures": 2},
    }
    assert deployment_counts(text, "vllm-qwen") == {}  # another alias's deployments are not counted


def test_a_text_that_does_not_parse_is_an_error():
    with pytest.raises(MetricsError, match="do not parse"):
        deployment_counts('litellm_deployment_total_requests_total{model_id="a" 1\n', "ollama-qwen")


def test_increases_survive_a_counter_reset():
    def counts(requests, successes):
        return {"c": {"requests": requests, "successes": successes, "failures": requests - successes}}

    tracker = CounterTracker(counts(10, 10))  # before the window: not counted
    assert tracker.update(counts(15, 14))["c"] == {"requests": 5, "successes": 4, "failures": 1}
    # the proxy restarted: its counters begin again at 0, and the 3 requests since then are increase
    assert tracker.update(counts(3, 3))["c"] == {"requests": 8, "successes": 7, "failures": 1}
    assert tracker.resets == 1
    assert tracker.update(counts(4, 4))["c"]["requests"] == 9
    assert tracker.of("missing") == {"requests": 0, "successes": 0, "failures": 0}
