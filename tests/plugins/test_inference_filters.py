"""The sizing formula reproduces the operator's numbers and fails clearly without a size."""

import json

import pytest
from ansible.errors import AnsibleFilterError
from inference import (
    detour_plan,
    detour_tier,
    helm_stuck_fix,
    litellm_routes,
    model_name_problem,
    model_requirements,
    ollama_tag,
    plan_detours,
    pod_problems,
    registry_manifest_path,
)


@pytest.mark.parametrize(
    ("size_gb", "limit", "mem_request", "lxc"),
    [
        (2.5, "4Gi", "2Gi", 8192),  # phi4-mini, story 25.2: 4Gi limit, 2Gi request, 8 GB LXC
        (9.0, "16Gi", "4Gi", 20480),  # qwen2.5:14b, story 12.8: 16Gi limit, 4Gi request, 20 GB LXC
        (1.3, "4Gi", "2Gi", 8192),  # llama3.2:1b
        (4.7, "8Gi", "2Gi", 12288),  # llama3.1:8b, not in the catalog
        (40, "64Gi", "16Gi", 69632),  # llama3.1:70b: larger than the 64 GiB host
    ],
)
def test_formula_matches_stories(size_gb, limit, mem_request, lxc):
    req = model_requirements({"size_gb": size_gb})
    assert (req["memory_limit"], req["memory_request"], req["lxc_memory_mib"]) == (limit, mem_request, lxc)
    assert req["source"] == "formula"


def test_registry_size_in_bytes_is_used_when_catalog_has_none():
    req = model_requirements({}, size_bytes=9_000_000_000)
    assert req["memory_limit"] == "16Gi"
    assert req["size_gb"] == 9.0


def test_catalog_values_win_over_formula():
    req = model_requirements({"size_gb": 2.5, "memory_limit": "6Gi", "memory_request": "3Gi", "lxc_memory_mib": 10240})
    assert (req["memory_limit"], req["memory_request"], req["lxc_memory_mib"], req["source"]) == (
        "6Gi",
        "3Gi",
        10240,
        "catalog",
    )


def test_partial_catalog_entry_mixes_sources():
    req = model_requirements({"size_gb": 9.0, "memory_limit": "16Gi"})
    assert req["source"] == "catalog+formula"
    assert req["lxc_memory_mib"] == 20480


def test_no_size_names_the_field():
    with pytest.raises(AnsibleFilterError, match="size_gb"):
        model_requirements({})


def test_bad_quantity_names_the_field():
    with pytest.raises(AnsibleFilterError, match="memory_limit"):
        model_requirements({"memory_limit": "16G", "memory_request": "4Gi", "lxc_memory_mib": 1})


@pytest.mark.parametrize(
    ("name", "tag", "path"),
    [
        ("phi4-mini", "phi4-mini:latest", "/v2/library/phi4-mini/manifests/latest"),
        ("qwen2.5:14b", "qwen2.5:14b", "/v2/library/qwen2.5/manifests/14b"),
        ("someone/custom:q4", "someone/custom:q4", "/v2/someone/custom/manifests/q4"),
    ],
)
def test_tags_and_manifest_paths(name, tag, path):
    assert ollama_tag(name) == tag
    assert registry_manifest_path(name) == path


def test_empty_tag_rejected():
    with pytest.raises(AnsibleFilterError, match="model="):
        ollama_tag("")


def test_quantity_mib_reads_kubelet_memory():
    from inference import quantity_mib

    assert quantity_mib("20709376Ki") == 20224.0
    assert quantity_mib("16Gi") == 16384.0
    with pytest.raises(AnsibleFilterError, match="not a Kubernetes quantity"):
        quantity_mib("lots")


@pytest.mark.parametrize(
    "name",
    [
        "phi4-mini",
        "qwen2.5:14b",
        "library/qwen2.5:14b",
        "registry.ollama.ai/library/llama3.2:1b",
        "hf.co/bartowski/model:Q4_K_M",
    ],
)
def test_valid_ollama_names_pass(name):
    assert model_name_problem(name, "ollama") == ""


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("qwen2.5:14b; rm -rf /", "model ''"),
        ("qwen2.5:14b;rm", "tag '14b;rm'"),
        ("../etc/passwd", "host '..'"),
        ("hf.co_x/m:1", "namespace 'hf.co_x'"),
        ("qwen2.5:", "tag"),
        ("-phi4", "model"),
        ("a/b/c/d", "at most"),
        ("x" * 81, "model"),
    ],
)
def test_malformed_ollama_names_are_refused_naming_the_part(name, part):
    problem = model_name_problem(name, "ollama")
    assert "not an Ollama model name" in problem and part in problem


def test_empty_name_and_vllm_ids():
    assert model_name_problem("", "ollama") == "the model name is empty"
    assert model_name_problem("Qwen/Qwen3-8B-AWQ", "vllm") == ""
    assert "Hugging Face" in model_name_problem("Qwen/Qwen3 8B; ls", "vllm")
    assert "Hugging Face" in model_name_problem("a/b/c", "vllm")


def test_litellm_routes_map_aliases_to_models_without_the_provider():
    config = """
model_list:
  - model_name: ollama-qwen
    litellm_params: {model: ollama_chat/phi4-mini:latest, api_base: http://x:11434}
  - model_name: vllm-qwen
    litellm_params: {model: openai/Qwen/Qwen3-8B-AWQ}
"""
    assert litellm_routes(config) == {"ollama-qwen": "phi4-mini:latest", "vllm-qwen": "Qwen/Qwen3-8B-AWQ"}
    assert litellm_routes("") == {} and litellm_routes(": not yaml: [") == {}


TIERS = {"ollama": {"alias": "ollama-qwen"}, "vllm": {"alias": "vllm-qwen"}}
NOW = {"ollama": "phi4-mini", "vllm": "Qwen/Qwen3-8B-AWQ"}


def test_detour_to_the_other_tier_when_its_alias_answers():
    got = detour_plan("ollama", TIERS, NOW, True, True, {"model_group": "vllm-qwen", "failed": False})
    assert got["detour"] == "vllm"
    assert "ollama-qwen is served by tier vllm" in got["detour_note"]


@pytest.mark.parametrize(
    ("needed", "enabled", "now", "check", "why"),
    [
        (False, True, NOW, None, "nothing about tier ollama is replaced"),
        (True, False, NOW, None, "inference_detour is false"),
        (True, True, {"ollama": "phi4-mini"}, None, "no other tier"),
        (True, True, NOW, {"model_group": "ollama-qwen", "msg": "served by a fallback"}, "does not answer"),
        (True, True, NOW, {"failed": True, "msg": "HTTP 500"}, "HTTP 500"),
    ],
)
def test_no_detour_says_why(needed, enabled, now, check, why):
    got = detour_plan("ollama", TIERS, now, needed, enabled, check)
    assert got["detour"] is None and why in got["detour_note"]


def test_plan_detours_and_detour_tier():
    assert plan_detours({"ollama": {"detour": "vllm"}, "vllm": {"detour": None}, "x": {}}) == {"ollama": "vllm"}
    assert detour_tier(NOW, "vllm") == "ollama" and detour_tier({"vllm": "m"}, "vllm") is None


def test_helm_stuck_fix_rolls_back_to_the_newest_good_revision():
    history = [
        {"revision": 4, "status": "superseded"},
        {"revision": 5, "status": "deployed"},
        {"revision": 6, "status": "pending-upgrade"},
    ]
    assert helm_stuck_fix(history, "ollama", "ml") == "helm rollback ollama 5 -n ml"
    assert helm_stuck_fix(json.dumps(history[:1] + history[2:]), "ollama", "ml") == "helm rollback ollama 4 -n ml"
    assert helm_stuck_fix([{"revision": 1, "status": "pending-install"}], "x", "ml") == "helm uninstall x -n ml"


def _pod(name, ready=False, node="k3s-gpu-worker", containers=(), scheduled=None):
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if scheduled:
        conditions.append({"type": "PodScheduled", "status": "False", "message": scheduled})
    return {
        "metadata": {"namespace": "ml", "name": name},
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": "Running" if node else "Pending",
            "conditions": conditions,
            "containerStatuses": list(containers),
        },
    }


def test_pod_problems_says_why_a_release_is_not_ready():
    crashing = _pod(
        "vllm-server-1",
        containers=[
            {
                "name": "vllm",
                "restartCount": 3,
                "state": {
                    "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}
                },
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
            }
        ],
    )
    pending = _pod("ollama-2", node=None, scheduled="0/4 nodes are available: 1 Insufficient memory.")
    logs = [{"item": crashing, "log_lines": ["INFO starting", "", "ValueError: not enough KV cache memory"]}]
    got = pod_problems([crashing, pending, _pod("litellm-3", ready=True)], logs, 2)
    assert got == (
        "pod ml/vllm-server-1 (node k3s-gpu-worker): container vllm CrashLoopBackOff: back-off 40s restarting failed"
        " container, last exit code 1 (Error), 3 restarts; log: INFO starting | ValueError: not enough KV cache memory."
        " pod ml/ollama-2 (node none): not scheduled: 0/4 nodes are available: 1 Insufficient memory."
    )
    assert pod_problems([_pod("ok", ready=True)]) == ""
