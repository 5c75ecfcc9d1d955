"""roles/litellm's values template, rendered by Ansible itself: routes, detours while a tier is replaced, and
the router kept off the nodes that upgrades drain."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")

TIERS = {
    "ollama": {
        "runtime": "ollama",
        "node": "k3s-worker-02",
        "alias": "ollama-qwen",
        "service_url": "http://ollama.ml.svc:11434",
        "route_params": {"response_format": {"type": "json_object"}},
    },
    "vllm": {
        "runtime": "vllm",
        "node": "k3s-gpu-worker",
        "alias": "vllm-qwen",
        "service_url": "http://vllm-api.ml.svc:8000",
    },
}
CATALOG = {
    "phi4-mini": {"runtime": "ollama"},
    "qwen3:4b": {"runtime": "ollama", "thinks": True},
    "Qwen/Qwen3-8B-AWQ": {"runtime": "vllm", "thinks": True, "served_model_name": "Qwen/Qwen3-8B-AWQ"},
}


def render(tmp_path: Path, **extra) -> dict:
    """Render roles/litellm/templates/values.yaml.j2 with the role's defaults and ``extra`` vars."""
    out = tmp_path / "values.yaml"
    variables = {
        "inference_namespace": "ml",
        "inference_common_labels": {"app.kubernetes.io/part-of": "home-lab"},
        "inference_tiers": TIERS,
        "inference_model_catalog": CATALOG,
        "inference_preflight_target_models": {"ollama": "phi4-mini", "vllm": "Qwen/Qwen3-8B-AWQ"},
        "litellm_master_key": "unused",
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "vars_files": [str(ROOT / "roles" / "litellm" / "defaults" / "main.yml")],
            "tasks": [
                {
                    "ansible.builtin.template": {
                        "src": str(ROOT / "roles" / "litellm" / "templates" / "values.yaml.j2"),
                        "dest": str(out),
                        "mode": "0600",
                    }
                }
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    (tmp_path / "v.json").write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    run = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"), "-e", f"@{tmp_path}/v.json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return yaml.safe_load(out.read_text())


def routes(values: dict) -> dict:
    return {m["model_name"]: m["litellm_params"] for m in values["config"]["model_list"]}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return render(tmp_path_factory.mktemp("plain"))


def test_each_alias_routes_to_its_own_tier_with_its_request_options(plain):
    got = routes(plain)
    assert got["ollama-qwen"]["model"] == "ollama_chat/phi4-mini:latest"
    assert got["ollama-qwen"]["api_base"] == "http://ollama.ml.svc:11434"
    assert got["ollama-qwen"]["response_format"] == {"type": "json_object"}
    assert got["vllm-qwen"]["model"] == "openai/Qwen/Qwen3-8B-AWQ"
    assert got["vllm-qwen"]["api_base"] == "http://vllm-api.ml.svc:8000/v1"
    assert got["vllm-qwen"]["extra_body"] == {"chat_template_kwargs": {"enable_thinking": False}}
    assert "response_format" not in got["vllm-qwen"]


def test_a_detour_serves_the_alias_from_the_other_tier(tmp_path, plain):
    got = routes(render(tmp_path, litellm_detours={"ollama": "vllm"}))
    # the alias keeps its name (clients change nothing); the other tier's runtime, model and options answer it
    assert got["ollama-qwen"] == routes(plain)["vllm-qwen"]
    assert got["vllm-qwen"] == routes(plain)["vllm-qwen"]


def test_a_detour_uses_the_models_it_is_given(tmp_path):
    got = routes(
        render(
            tmp_path,
            litellm_tier_models={"ollama": "qwen3:4b", "vllm": "Qwen/Qwen3-8B-AWQ"},
            litellm_detours={"vllm": "ollama"},
        )
    )
    assert got["vllm-qwen"]["model"] == "ollama_chat/qwen3:4b"
    assert got["vllm-qwen"]["think"] is False  # the serving model's request options come along
    assert got["vllm-qwen"]["api_base"] == "http://ollama.ml.svc:11434"


def test_the_router_is_kept_off_the_tier_nodes(plain):
    terms = plain["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["k3s-gpu-worker", "k3s-worker-02"]}
            ]
        }
    ]


def test_no_affinity_when_no_node_is_avoided(tmp_path):
    assert "affinity" not in render(tmp_path, litellm_avoid_nodes=[])
