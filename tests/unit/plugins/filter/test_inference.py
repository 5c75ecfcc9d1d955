"""The sizing formula reproduces the operator's numbers and fails clearly without a size."""

import json

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.homelab.inference.plugins.filter.inference import (
    _consumer_changes,
    canary_memory_problem,
    canary_problem,
    consumer_data,
    consumer_objects,
    consumer_reads,
    detour_plan,
    detour_tier_of,
    gate_champion,
    gate_reuse,
    helm_stuck_fix,
    litellm_routes,
    lxc_plan,
    model_name_problem,
    model_requirements,
    node_states,
    ollama_tag,
    plan_detours,
    pod_problems,
    registry_manifest_path,
    release_differs,
    runtime_problem,
    shown,
    state_drift,
    tier_plan,
    upgrade_changes,
    upgrade_input_problem,
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
    from ansible_collections.homelab.inference.plugins.filter.inference import quantity_mib

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
    assert detour_tier_of("vllm", NOW) == "ollama" and detour_tier_of("vllm", {"vllm": "m"}) is None
    # a tier the pins file still names but the inventory no longer defines is no detour
    assert detour_tier_of("vllm", {"vllm": "m", "gone": "x"}, tiers={"vllm": {}}) is None


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


RUNTIMES = {"ollama": {"runtime": "ollama"}, "vllm": {"runtime": "vllm"}}


@pytest.mark.parametrize(
    ("tier", "model", "says"),
    [
        ("ollama", 49, "model must be a string, not a number (49)"),  # -e model='{{ 7*7 }}' renders to an int
        ("ollama", ["qwen2.5:14b"], "model must be a string, not a list (['qwen2.5:14b'])"),
        ("ollama", {"a": 1}, "model must be a string, not a mapping"),
        ("ollama", True, "model must be a string, not a boolean"),
        (3, "phi4-mini", "tier must be a string, not a number (3)"),
        ("", "phi4-mini", "tier is not set"),
        ("ollama", None, "model is not set"),
        ("gpu", "phi4-mini", "tier='gpu' is not a tier of inference_tiers (ollama, vllm)"),
        ("ollama", "qwen2.5:14b; rm -rf /", "is not an Ollama model name"),
        ("vllm", "Qwen/Qwen3 8B", "is not a Hugging Face model id"),
    ],
)
def test_bad_upgrade_input_is_named_with_the_field_and_the_fix(tier, model, says):
    problem = upgrade_input_problem(tier, model, RUNTIMES)
    assert problem.startswith("Bad input: ") and says in problem, problem
    assert "Pass -e tier=<ollama|vllm> -e model=<name>" in problem or "e.g. " in problem


def test_good_upgrade_input_passes():
    assert upgrade_input_problem("ollama", "qwen2.5:14b", RUNTIMES) == ""
    assert upgrade_input_problem("vllm", "Qwen/Qwen3-8B-AWQ", RUNTIMES) == ""


@pytest.mark.parametrize("bad", ["x" * 300, "a/" * 150 + "b", "q:" + "t" * 300, 10**300, ["y" * 300]])
def test_messages_quote_at_most_80_characters_of_a_bad_value(bad):
    problem = upgrade_input_problem("ollama", bad, RUNTIMES)
    assert problem.startswith("Bad input: model")
    # no run of the bad value's characters longer than 80 survives in the message
    assert max(len(run) for run in __import__("re").findall(r"[xyt1-9/a]{2,}|0{2,}", problem)) <= 80, problem
    assert len(problem) < 520


def test_shown_cuts_long_values():
    assert shown("abc") == "'abc'"
    assert shown("x" * 200) == "'" + "x" * 76 + "..."
    assert len(shown(list(range(100)))) == 80


@pytest.mark.parametrize(
    ("now", "needed", "shrink", "target", "resize", "how"),
    [
        (8192, 20480, False, 20480, True, "grow"),  # story 12.8: phi4-mini -> qwen2.5:14b
        (8192, 8192, False, 8192, False, "same"),
        (20480, 8192, True, 8192, True, "shrink"),  # story 12-10: downsizing, when asked
        (20480, 8192, False, 20480, False, "kept larger (inference_lxc_shrink is false)"),
        (None, 8192, True, None, False, "none"),  # the GPU node has no LXC here
    ],
)
def test_lxc_plan_grows_shrinks_only_when_asked_and_says_which(now, needed, shrink, target, resize, how):
    plan = lxc_plan(now, needed, shrink)
    assert (plan["lxc_memory_target_mib"], plan["needs_resize"], plan["lxc_resize"]) == (target, resize, how)


def _node(name, unschedulable=False, ready=True):
    return {
        "metadata": {"name": name},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "Unknown", "message": "gone"}]},
    }


def test_node_states_keep_cordon_and_readiness_of_the_named_nodes():
    nodes = [_node("k3s-worker-02", unschedulable=True), _node("k3s-gpu-worker", ready=False), _node("k3s-master")]
    states = node_states(nodes, ["k3s-worker-02", "k3s-gpu-worker"])
    assert states == {
        "k3s-worker-02": {"unschedulable": True, "ready": True, "reason": "gone"},
        "k3s-gpu-worker": {"unschedulable": False, "ready": False, "reason": "gone"},
    }


RECORDED = {"revision": 5, "status": "deployed", "chart": "ollama-0.2.0", "values": {"model": "phi4-mini"}}


@pytest.mark.parametrize(
    ("now", "differs"),
    [
        ({**RECORDED, "revision": 8}, False),  # a restore made revision 8 from 5: the recorded release again
        ({**RECORDED, "revision": 6, "values": {"model": "qwen2.5:14b"}}, True),
        ({**RECORDED, "revision": 6, "status": "pending-upgrade"}, True),  # a helm killed while it waited
        ({**RECORDED, "revision": 6, "status": "failed"}, True),  # a helm stopped with Ctrl-C marks it failed
        ({**RECORDED, "chart": "ollama-0.3.0"}, True),
        ({}, True),  # uninstalled meanwhile
    ],
)
def test_a_release_differs_from_the_record_by_status_chart_or_values_not_revision(now, differs):
    assert release_differs(now, RECORDED) is differs


def test_a_release_the_run_installed_differs_from_none():
    assert release_differs({"revision": 1, "status": "deployed"}, {}) is True
    assert release_differs({}, {}) is False


OLLAMA_ENTRY = {"tier": "ollama", "runtime": "ollama", "node": "k3s-worker-02", "api_url": "http://t:11434"}


def test_a_runtime_that_does_not_answer_is_named_with_its_cause():
    pending = {
        "metadata": {"namespace": "ml", "name": "ollama-7c9"},
        "spec": {},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "message": "0/4 nodes are available: 1 node(s) were unschedulable.",
                }
            ],
        },
    }
    text = runtime_problem(
        OLLAMA_ENTRY,
        [pending],
        node_states([_node("k3s-worker-02", unschedulable=True)]),
        "Status code was -1: Connection refused",
    )
    assert text.startswith("tier ollama: Ollama does not answer at http://t:11434 (Status code was -1")
    assert (
        "node k3s-worker-02 is cordoned and Ollama's Pod ml/ollama-7c9 is Pending: not scheduled: "
        "0/4 nodes are available: 1 node(s) were unschedulable." in text
    )


def test_a_runtime_without_a_pod_or_node_says_so():
    text = runtime_problem(OLLAMA_ENTRY, [], {}, "")
    assert "node k3s-worker-02 is not in the cluster" in text and "Ollama has no Pod" in text
    down = runtime_problem(OLLAMA_ENTRY, [], node_states([_node("k3s-worker-02", ready=False)]))
    assert "node k3s-worker-02 is not Ready (gone)" in down


def test_the_detour_of_a_runtime_that_is_down_goes_to_a_tier_that_answers():
    models = {"ollama": "phi4-mini", "vllm": "Qwen/Qwen3-8B-AWQ"}
    assert detour_tier_of("ollama", models, ["ollama"]) == "vllm"
    assert detour_tier_of("ollama", models, ["ollama", "vllm"]) is None


def _snapshot(model="phi4-mini", memory=8192, cordoned=False, status="deployed", has=("phi4-mini:latest",)):
    config = yaml.safe_dump(
        {"model_list": [{"model_name": "ollama-qwen", "litellm_params": {"model": f"ollama_chat/{model}"}}]}
    )
    return {
        "tier_models": {"ollama": model},
        "lxc": {"103": {"memory": memory}},
        "nodes": {"k3s-worker-02": {"unschedulable": cordoned}},
        "releases": {"ollama": {"revision": 3, "status": status}},
        "litellm_config": {"config.yaml": config},
        "models": {"ollama": list(has)},
    }


PLAN = {
    "ollama": {
        "runtime": "ollama",
        "alias": "ollama-qwen",
        "model": "qwen2.5:14b",
        "served_model": "qwen2.5:14b",
        "vmid": 103,
        "lxc_memory_target_mib": 20480,
    }
}


def test_no_drift_after_a_succeeded_upgrade_left_as_it_was():
    record = {"run_id": "A", "status": "succeeded", "snapshot": _snapshot(), "plan": PLAN}
    now = _snapshot("qwen2.5:14b", 20480, has=("qwen2.5:14b",))
    assert state_drift(record, now) == []


def test_drift_names_every_piece_that_differs_from_what_the_run_left():
    record = {"run_id": "A", "status": "succeeded", "snapshot": _snapshot(), "plan": PLAN}
    now = _snapshot("phi4-mini", 8192, cordoned=True, status="failed")
    assert state_drift(record, now) == [
        "node k3s-worker-02 is cordoned",
        "LXC 103 has 8192 MiB, not 20480",
        "Helm release ollama is failed (revision 3)",
        "LiteLLM routes ollama-qwen to phi4-mini, not qwen2.5:14b",
        "Ollama of tier ollama does not have qwen2.5:14b",
    ]


def test_after_a_rollback_the_recorded_state_is_expected_and_unfinished_runs_are_not_compared():
    assert state_drift({"status": "rolled back", "snapshot": _snapshot(), "plan": PLAN}, _snapshot()) == []
    moved = _snapshot(memory=20480)
    assert state_drift({"status": "restored", "snapshot": _snapshot(), "plan": PLAN}, moved) == [
        "LXC 103 has 20480 MiB, not 8192"
    ]
    assert state_drift({"status": "running", "snapshot": _snapshot(), "plan": PLAN}, moved) == []
    assert state_drift(None, moved) == []


def test_node_problems_name_cordoned_not_ready_and_missing_nodes():
    from ansible_collections.homelab.inference.plugins.filter.inference import node_problems

    nodes = node_states([_node("a", unschedulable=True), _node("b", ready=False), _node("c")])
    assert node_problems(nodes, ["a", "b", "c", "d"]) == [
        "node a is cordoned",
        "node b is not Ready (gone)",
        "node d is not in the cluster",
    ]


# -- gate_reuse: a recorded gate stands only when nothing about the tier changed in the run --------------------------


SAME = {"tier": "ollama", "model": "qwen2.5:14b", "previous_model": "qwen2.5:14b", "needs_resize": False}


@pytest.mark.parametrize(
    ("entry", "changed", "force", "reuse"),
    [
        (SAME, {"ollama": False}, False, True),
        (SAME, {"ollama": False}, "false", True),
        (SAME, {"ollama": False}, True, False),  # inference_gate_force
        (SAME, {"ollama": False}, "yes", False),
        (SAME, {"ollama": True}, False, False),  # the release was upgraded or a model pulled
        (SAME, {}, False, False),  # the runtime role did not say (check mode, a failure before it)
        (SAME, {"vllm": False}, False, False),
        ({**SAME, "previous_model": "phi4-mini"}, {"ollama": False}, False, False),  # another model
        ({**SAME, "needs_resize": True}, {"ollama": False}, False, False),  # the LXC changes
        (None, {"ollama": False}, False, False),
    ],
)
def test_gate_reuse(entry, changed, force, reuse):
    assert gate_reuse(entry, changed, force) is reuse


# -- upgrade_changes: an upgrade to the model a tier serves has nothing to do only when nothing differs -----------

CHART = {"name": "ollama", "version": "0.3.0", "appVersion": "0.12.6"}
LITELLM_CHART = {"name": "litellm", "version": "0.2.0", "appVersion": "1.106.2"}
VALUES = {"model": "qwen2.5:14b", "resources": {"limits": {"memory": "16Gi"}}, "nodeSelector": {"n": "w2"}}
LITELLM_VALUES = {"config": {"model_list": [{"model_name": "ollama-qwen"}]}}
CONSUMER_TIERS = {"ollama": {"service_url": "http://ollama.ml.svc:11434"}}
CONSUMER = {"name": "paperless-ai", "tier": "ollama", "model_key": "OLLAMA_MODEL", "url_key": "OLLAMA_API_URL"}
LABELS = {"app.kubernetes.io/part-of": "home-lab"}
NOOP_ENTRY = {
    "tier": "ollama",
    "runtime": "ollama",
    "release": "ollama",
    "model": "qwen2.5:14b",
    "previous_model": "qwen2.5:14b",
    "needs_resize": False,
    "keep_models": ["llama3.2:1b"],
}


def _helm_read(name, chart, values, status="deployed"):
    return {
        "item": name,
        "status": {
            "status": status,
            "chart": f"{chart['name']}-{chart['version']}",
            "app_version": chart["appVersion"],
            "values": values,
        },
    }


def _noop_inputs():
    configmap = {
        "metadata": {"labels": dict(LABELS)},
        "data": {"OLLAMA_MODEL": "qwen2.5:14b", "OLLAMA_API_URL": "http://ollama.ml.svc:11434", "OTHER": "kept"},
    }
    return {
        "releases": [
            _helm_read("ollama", CHART, json.loads(json.dumps(VALUES))),
            _helm_read("litellm", LITELLM_CHART, dict(LITELLM_VALUES)),
        ],
        "desired": {
            "ollama": {"chart": CHART, "values": VALUES},
            "litellm": {"chart": LITELLM_CHART, "values": LITELLM_VALUES},
        },
        "consumers": consumer_reads(
            [{"item": CONSUMER, "resources": [configmap]}], {"ollama": "qwen2.5:14b"}, CONSUMER_TIERS, LABELS
        ),
        "models_present": ["qwen2.5:14b", "llama3.2:1b"],
        "pins": {"ollama": "qwen2.5:14b"},
        "targets": {"ollama": "qwen2.5:14b"},
    }


def test_nothing_to_change_when_the_tier_is_as_requested():
    assert upgrade_changes(NOOP_ENTRY, **_noop_inputs()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e, i: e.update(previous_model="phi4-mini"), "the tier serves phi4-mini, not qwen2.5:14b"),
        (lambda e, i: e.update(needs_resize=True, lxc_resize="grow"), "the LXC is resized (grow)"),
        (lambda e, i: i.update(pins={}), "the model pins file does not record"),
        (lambda e, i: i["releases"].pop(0), "release ollama is not installed"),
        (lambda e, i: i["releases"][0]["status"].update(status="failed"), "release ollama is failed, not deployed"),
        (lambda e, i: i["releases"][0]["status"].update(chart="ollama-0.2.0"), "chart ollama-0.2.0 -> ollama-0.3.0"),
        (lambda e, i: i["releases"][0]["status"].update(app_version="0.11"), "appVersion 0.11 -> 0.12.6"),
        (
            lambda e, i: i["desired"]["ollama"].update(values={**VALUES, "resources": {"limits": {"memory": "8Gi"}}}),
            "release ollama: values differ at resources.limits.memory",
        ),
        (
            lambda e, i: i["desired"]["litellm"].update(values={"config": {"model_list": []}}),
            "release litellm: values differ at config.model_list",
        ),
        (lambda e, i: i["consumers"][0].update(configmap=None), "consumer paperless-ai: ConfigMap is missing"),
        (
            lambda e, i: i["consumers"][0]["data"].update(OLLAMA_MODEL="phi4-mini"),
            "consumer paperless-ai: OLLAMA_MODEL 'qwen2.5:14b' -> 'phi4-mini'",
        ),
        (lambda e, i: i["consumers"][0].update(labels={"team": "x"}), "consumer paperless-ai: labels differ"),
        (lambda e, i: i.update(models_present=["llama3.2:1b"]), "qwen2.5:14b is not on Ollama (it would be pulled)"),
        (
            lambda e, i: i["models_present"].append("phi4-mini"),
            "phi4-mini:latest would be pruned (not on the keep-list)",
        ),
        (lambda e, i: i.update(models_present=None), "the models on Ollama could not be listed"),
    ],
)
def test_each_difference_is_named(change, expected):
    entry, inputs = dict(NOOP_ENTRY), _noop_inputs()
    change(entry, inputs)
    changes = upgrade_changes(entry, **inputs)
    assert len(changes) == 1 and expected in changes[0], changes


def test_a_vllm_tier_does_not_ask_ollama():
    entry = {**NOOP_ENTRY, "runtime": "vllm", "release": "vllm"}
    inputs = _noop_inputs()
    inputs["releases"][0]["item"] = "vllm"
    inputs["desired"]["vllm"] = inputs["desired"].pop("ollama")
    assert upgrade_changes(entry, **{**inputs, "models_present": None}) == []


def test_consumer_data_names_a_bad_tier():
    assert consumer_data({"tier": "ollama", "model_key": "M"}, {"ollama": "m"}, CONSUMER_TIERS) == {"M": "m"}
    with pytest.raises(AnsibleFilterError, match=r"consumer paperless-ai: tier 'gpu' is not in inference_tiers"):
        consumer_data({**CONSUMER, "tier": "gpu"}, {"ollama": "m"}, CONSUMER_TIERS)


PLAN_TIERS = {
    "ollama": {
        "runtime": "ollama",
        "release": "ollama",
        "node": "k3s-worker-cpu",
        "alias": "ollama-qwen",
        "api_url": "https://ollama.lab",
        "service_url": "http://ollama:11434",
    },
    "vllm": {
        "runtime": "vllm",
        "release": "vllm",
        "node": "k3s-gpu",
        "alias": "vllm-qwen",
        "api_url": "https://vllm.lab",
        "service_url": "http://vllm:8000",
    },
}
PLAN_CATALOG = {
    "qwen2.5:14b": {"size_gb": 9.0},
    "qwen3:4b": {"size_gb": 2.5, "thinks": True},
    "Qwen/Qwen3-8B-AWQ": {
        "runtime": "vllm",
        "vram_gib": 10,
        "served_model_name": "Qwen/Qwen3-8B-AWQ",
        "memory_limit": "16Gi",
        "memory_request": "8Gi",
        "lxc_memory_mib": 0,
    },
    "Qwen/Qwen2.5-32B-AWQ": {
        "runtime": "vllm",
        "vram_gib": 20,
        "memory_limit": "16Gi",
        "memory_request": "8Gi",
        "lxc_memory_mib": 0,
    },
}
NODES = ["k3s-worker-cpu", "k3s-gpu"]


def _reads(present=(), manifest_status=200, layers=(5_000_000_000,), memory=8192, free_mib=20000, **extra):
    reads = {
        "tags": {"status": 200, "json": {"models": [{"name": n, "size": 2_500_000_000} for n in present]}},
        "manifest": {"status": manifest_status, "json": {"layers": [{"size": b} for b in layers]}}
        if manifest_status not in (None, -1)
        else ({"status": -1, "msg": "Connection refused"} if manifest_status == -1 else {"skipped": True}),
        "lxc": {"config": {"memory": memory}, "host_memory": {"free_mib": free_mib}},
        "nodes": NODES,
        "previous_model": "phi4-mini:latest",
    }
    reads.update(extra)
    return reads


OPTIONS = {
    "vmid": 103,
    "gpu_memory_gib": 12,
    "registry_url": "https://registry.ollama.ai",
    "shrink": False,
    "host_headroom_mib": 1024,
    "proxmox_node": "pve",
}


def test_tier_plan_grows_the_lxc_for_a_model_from_the_registry():
    plan = tier_plan("ollama", "qwen2.5:14b", PLAN_TIERS, PLAN_CATALOG, _reads(), OPTIONS)
    assert plan["problem"] == "" and plan["notes"] == []
    entry = plan["entry"]
    assert entry["served_model"] == "qwen2.5:14b" and entry["previous_model"] == "phi4-mini:latest"
    assert entry["requirements"]["memory_limit"] == "16Gi" and entry["lxc_memory_needed_mib"] == 20480
    assert (entry["lxc_memory_now_mib"], entry["lxc_memory_target_mib"]) == (8192, 20480)
    assert entry["needs_resize"] is True and entry["lxc_resize"] == "grow" and entry["vmid"] == 103


def test_tier_plan_sizes_a_model_ollama_has_from_its_tags_and_keeps_a_larger_lxc():
    plan = tier_plan(
        "ollama", "qwen3:4b", PLAN_TIERS, {}, _reads(present=["qwen3:4b"], manifest_status=None, memory=20480), OPTIONS
    )
    assert plan["problem"] == ""
    assert plan["entry"]["requirements"]["size_gb"] == 2.5  # /api/tags' size: 2.5 GB
    assert plan["entry"]["lxc_resize"].startswith("kept larger") and plan["entry"]["needs_resize"] is False
    assert len(plan["notes"]) == 1 and "It stays larger because inference_lxc_shrink is false" in plan["notes"][0]


def test_tier_plan_warns_of_a_thinking_model_first():
    plan = tier_plan("ollama", "qwen3:4b", PLAN_TIERS, PLAN_CATALOG, _reads(memory=20480), OPTIONS)
    assert plan["notes"][0].startswith("qwen3:4b emits thinking tokens") and len(plan["notes"]) == 2


@pytest.mark.parametrize(
    "tier, model, reads, options, fragment",
    [
        ("ollama", "phi4-mini:3.8b", {"manifest_status": 404}, {}, "Model tag phi4-mini:3.8b does not exist"),
        (
            "ollama",
            "llama3.1:8b",
            {"manifest_status": -1},
            {},
            "the Ollama registry https://registry.ollama.ai could not be reached (Connection refused)",
        ),
        ("ollama", "llama3.1:8b", {"manifest_status": 503}, {}, "answered HTTP 503"),
        ("vllm", "Qwen/Qwen2.5-7B", {}, {}, "is not in inference_model_catalog with runtime: vllm and vram_gib"),
        ("vllm", "Qwen/Qwen2.5-32B-AWQ", {}, {}, "needs 20 GiB of GPU memory but k3s-gpu has 12 GiB"),
        ("ollama", "qwen2.5:14b", {"nodes": ["k3s-gpu"]}, {}, "Node k3s-worker-cpu (inference_tiers.ollama.node)"),
        (
            "ollama",
            "qwen2.5:14b",
            {"free_mib": 5000},
            {},
            "too large for the Proxmox host pve: it needs 16Gi to run, so the LXC 103 (k3s-worker-cpu) must grow from "
            "8192 to 20480 MiB (+12288 MiB), but the host has 5000 MiB free and keeps 1024 MiB headroom",
        ),
        (
            "ollama",
            "qwen2.5:14b",
            {"lxc": {"failed": True, "msg": "cannot use the Proxmox VE API at https://pve"}},
            {},
            "cannot use the Proxmox VE API at https://pve. Nothing was changed.",
        ),
    ],
)
def test_tier_plan_names_the_first_problem_and_plans_nothing(tier, model, reads, options, fragment):
    plan = tier_plan(tier, model, PLAN_TIERS, PLAN_CATALOG, _reads(**reads), dict(OPTIONS, **options))
    assert fragment in plan["problem"], plan["problem"]
    assert plan["problem"].endswith("Nothing was changed.") and plan["entry"] is None


def test_tier_plan_of_a_tier_without_an_lxc_reads_none():
    plan = tier_plan("vllm", "Qwen/Qwen3-8B-AWQ", PLAN_TIERS, PLAN_CATALOG, _reads(lxc=None), dict(OPTIONS, vmid=None))
    entry = plan["entry"]
    assert plan["problem"] == "" and entry["vmid"] is None and entry["lxc_resize"] == "none"
    assert entry["served_model"] == "Qwen/Qwen3-8B-AWQ" and entry["needs_resize"] is False


def test_tier_plan_without_a_size_fails_clearly():
    with pytest.raises(AnsibleFilterError, match="no size_gb in the catalog"):
        tier_plan("ollama", "qwen2.5:14b", PLAN_TIERS, {}, _reads(layers=()), OPTIONS)


def test_consumer_objects_read_each_consumer_configmap_and_carry_the_consumer():
    consumer = dict(CONSUMER, namespace="docs", configmap="paperless-ai-config")
    assert consumer_objects([consumer]) == [
        {"kind": "ConfigMap", "namespace": "docs", "name": "paperless-ai-config", "item": consumer}
    ]
    assert consumer_objects(None) == []


def test_consumer_changes_name_what_the_consumers_role_would_change():
    reads = _noop_inputs()["consumers"]
    assert _consumer_changes(reads) == []
    changed = consumer_reads(
        [{"item": CONSUMER, "resources": [reads[0]["configmap"]]}], {"ollama": "phi4-mini"}, CONSUMER_TIERS, LABELS
    )
    assert _consumer_changes(changed) == ["consumer paperless-ai: OLLAMA_MODEL 'qwen2.5:14b' -> 'phi4-mini'"]
    missing = consumer_reads([{"item": CONSUMER, "resources": []}], {"ollama": "phi4-mini"}, CONSUMER_TIERS, LABELS)
    assert _consumer_changes(missing) == ["consumer paperless-ai: ConfigMap is missing"]


# -- gate_champion: the model a gate compares its candidate with -----------------------------------------------------


def test_gate_champion_names_the_previous_model_as_its_api_does():
    catalog = {
        "Qwen/Qwen2.5-7B-Instruct-AWQ": {"runtime": "vllm", "served_model_name": "qwen2.5-7b", "vram_gib": 6},
        "phi4-mini": {"runtime": "ollama"},
    }
    ollama = {"runtime": "ollama", "model": "qwen2.5:14b", "previous_model": "phi4-mini"}
    assert gate_champion(ollama, catalog) == {"model": "phi4-mini:latest", "identity": {"runtime": "ollama"}}
    vllm = {"runtime": "vllm", "model": "Qwen/Qwen3-8B-AWQ", "previous_model": "Qwen/Qwen2.5-7B-Instruct-AWQ"}
    assert gate_champion(vllm, catalog) == {
        "model": "qwen2.5-7b",
        "identity": catalog["Qwen/Qwen2.5-7B-Instruct-AWQ"],
    }
    assert gate_champion(dict(vllm, previous_model="org/unknown"), catalog) == {"model": "org/unknown", "identity": {}}
    assert gate_champion(dict(ollama, previous_model=""), catalog) == {}, "a rebuild from empty has no champion"
    assert gate_champion(dict(ollama, previous_model="qwen2.5:14b"), catalog) == {}, "the same model: no champion"
    assert gate_champion(None) == {}


TIERS = {"ollama": {"runtime": "ollama", "alias": "ollama-qwen"}, "vllm": {"runtime": "vllm", "alias": "vllm-qwen"}}


def test_no_canary_and_good_settings_are_no_problem():
    assert canary_problem({}, TIERS) == "" and canary_problem(None, TIERS) == ""
    good = {"tiers": ["ollama"], "share_percent": 20, "min_requests": 20, "max_requests": 100, "duration": 1800}
    assert canary_problem(dict(good, min_success_rate=None, on_inconclusive="pass"), TIERS) == ""


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"tiers": ["vllm"]}, "runtime is vllm: a canary serves the old and the new model side by side"),
        ({"tiers": ["gpu"]}, "inference_canary.tiers names 'gpu', which is not a tier of inference_tiers"),
        ({"tiers": "ollama"}, "inference_canary.tiers must be a list of tier names"),
        ({"share_percent": 100}, "inference_canary.share_percent must be a whole percent from 1 to 99, got 100"),
        ({"share_percent": "20"}, "share_percent must be a whole percent"),
        ({"min_requests": 0}, "inference_canary.min_requests must be a whole number of requests, at least 1"),
        ({"min_requests": 50, "max_requests": 10}, "max_requests must be at least inference_canary.min_requests"),
        ({"duration": 0}, "inference_canary.duration must be a positive number of seconds"),
        ({"min_success_rate": 95}, "inference_canary.min_success_rate must be a fraction from 0 to 1"),
        ({"confidence": 1}, "inference_canary.confidence must be between 0 and 1"),
        ({"on_inconclusive": "retry"}, "inference_canary.on_inconclusive must be fail or pass"),
        ({"share": 20}, "inference_canary has unknown key(s) share"),
        (["ollama"], "inference_canary must be a mapping"),
    ],
)
def test_bad_canary_settings_name_the_field(settings, expected):
    assert expected in canary_problem(settings, TIERS)


def _plan_entry(model, previous, catalog):
    return {
        "tier": "ollama",
        "runtime": "ollama",
        "model": model,
        "previous_model": previous,
        "requirements": model_requirements(catalog.get(model)),
    }


def test_a_canary_whose_two_models_do_not_fit_together_is_refused_naming_both():
    catalog = {
        "phi4-mini": {"size_gb": 2.5, "memory_limit": "4Gi"},
        "qwen2.5:3b": {"size_gb": 1.9},
        "qwen2.5:14b": {"size_gb": 9.0},
    }
    tags = {"json": {"models": [{"name": "phi4-mini:latest", "size": 2_500_000_000}]}}
    problem = canary_memory_problem(_plan_entry("qwen2.5:3b", "phi4-mini", catalog), tags, catalog)
    # phi4-mini 2.5 * 1.2 + 1 = 4.0 GiB and qwen2.5:3b 3.28 GiB: 7.3 GiB against qwen2.5:3b's 4Gi limit
    assert "would serve phi4-mini (about 4.0 GiB to run) and qwen2.5:3b (about 3.3 GiB) side by side" in problem
    assert "7.3 GiB in all" in problem and "memory limit of 4Gi for qwen2.5:3b" in problem
    assert "remove ollama from inference_canary.tiers" in problem
    # qwen2.5:14b (11.8 GiB) and phi4-mini (4.0) fit its 16Gi limit
    assert canary_memory_problem(_plan_entry("qwen2.5:14b", "phi4-mini", catalog), tags, catalog) == ""


def test_no_memory_problem_without_two_models_or_when_unknown():
    catalog = {"qwen2.5:3b": {"size_gb": 1.9}}
    assert canary_memory_problem(_plan_entry("qwen2.5:3b", "", catalog), {}, catalog) == "", "no old model"
    assert canary_memory_problem(_plan_entry("qwen2.5:3b", "qwen2.5:3b", catalog), {}, catalog) == "", "same"
    # the old model's size is unknown (not in the catalog, not in /api/tags): nothing to tell
    assert canary_memory_problem(_plan_entry("qwen2.5:3b", "mystery:7b", catalog), {}, catalog) == ""
    vllm = dict(_plan_entry("qwen2.5:3b", "phi4-mini", catalog), runtime="vllm")
    assert canary_memory_problem(vllm, {}, catalog) == ""
