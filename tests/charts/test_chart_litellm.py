"""charts/litellm: config.yaml in the ConfigMap, no literal secrets, checksum roll, probes, off the GPU node."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import time

import httpx
import pytest
import yaml
from charts_helpers import ROOT, container, env_map, load_values, one, schedulable_nodes

LITELLM = ROOT / ".venv-litellm" / "bin" / "litellm"


@pytest.fixture
def rendered(helm):
    return helm.template("litellm", ["litellm.yaml"])


def config_of(objs: list[dict]) -> dict:
    return yaml.safe_load(one(objs, "ConfigMap", "litellm-config")["data"]["config.yaml"])


def checksum_of(objs: list[dict]) -> str:
    return one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_configmap_holds_the_model_list_and_fallbacks(rendered):
    values = load_values("litellm")["config"]
    config = config_of(rendered)
    assert config == values
    assert [m["model_name"] for m in config["model_list"]] == ["vllm-qwen", "ollama-qwen", "openai-gpt4o"]
    assert config["router_settings"]["fallbacks"] == [{"vllm-qwen": ["ollama-qwen", "openai-gpt4o"]}]
    params = {m["model_name"]: m["litellm_params"] for m in config["model_list"]}
    assert params["vllm-qwen"]["model"] == "openai/Qwen/Qwen3-8B-AWQ"
    assert params["vllm-qwen"]["api_base"].endswith("/v1")
    assert params["ollama-qwen"]["model"] == "ollama_chat/phi4-mini"
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"


def test_default_config_is_the_home_lab_chain(helm):
    config = config_of(helm.template("litellm", release="router"))
    assert config["router_settings"]["fallbacks"] == [{"vllm-qwen": ["ollama-qwen", "openai-gpt4o"]}]
    assert {m["model_name"] for m in config["model_list"]} == {"vllm-qwen", "ollama-qwen", "openai-gpt4o"}


def test_config_is_mounted_and_passed_as_args(rendered):
    deployment = one(rendered, "Deployment", "litellm")
    ctr = container(deployment)
    assert ctr["args"] == ["--config", "/app/config.yaml", "--port", "4000"]
    (mount,) = [m for m in ctr["volumeMounts"] if m["mountPath"] == "/app/config.yaml"]
    assert mount["subPath"] == "config.yaml"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mount["name"]]["configMap"]["name"] == "litellm-config"


def test_checksum_changes_with_the_config_only(helm, rendered):
    base = checksum_of(rendered)
    assert len(base) == 64
    same = helm.template("litellm", ["litellm.yaml"], values={"resources": {"limits": {"memory": "2Gi"}}})
    assert checksum_of(same) == base
    config = copy.deepcopy(load_values("litellm")["config"])
    config["model_list"][1]["litellm_params"]["model"] = "ollama_chat/qwen2.5:14b"
    changed = helm.template("litellm", ["litellm.yaml"], values={"config": config})
    assert checksum_of(changed) != base
    assert config_of(changed)["model_list"][1]["litellm_params"]["model"] == "ollama_chat/qwen2.5:14b"
    config["router_settings"]["fallbacks"] = [{"vllm-qwen": ["openai-gpt4o"]}]
    assert checksum_of(helm.template("litellm", ["litellm.yaml"], values={"config": config})) not in (
        base,
        checksum_of(changed),
    )


def _config(**sections) -> dict:
    base = {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_key": "os.environ/M_KEY"}}],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    base.update(sections)
    return base


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (_config(general_settings={"master_key": "sk-1234"}), "config.general_settings.master_key"),
        (
            _config(model_list=[{"model_name": "m", "litellm_params": {"model": "openai/m", "api_key": "sk-live-9"}}]),
            "config.model_list[0].litellm_params.api_key",
        ),
        (
            _config(environment_variables={"OPENAI_API_KEY": "sk-proj-abc"}),
            "config.environment_variables.OPENAI_API_KEY",
        ),
        (
            _config(litellm_settings={"cache": True, "cache_params": {"type": "redis", "password": "hunter2"}}),
            "config.litellm_settings.cache_params.password",
        ),
        (
            _config(general_settings={"master_key": "os.environ/K", "database_url": "postgresql://u:p@db/x"}),
            "database_url",
        ),
        (
            _config(litellm_settings={"langfuse_secret_key": "sk-lf-1", "success_callback": ["langfuse"]}),
            "config.litellm_settings.langfuse_secret_key",
        ),
        (_config(general_settings={"master_key": 12345}), "config.general_settings.master_key"),
    ],
    ids=["master_key", "api_key", "env-var", "nested-password", "database_url", "secret_key", "non-string"],
)
def test_literal_secrets_in_the_config_are_refused(helm, config, path):
    res = helm.template_text("litellm", values={"config": config})
    assert res.returncode != 0
    assert path in res.output and "os.environ/" in res.output, res.output
    assert "kind: ConfigMap" not in res.stdout


def test_environment_references_and_non_secret_keys_pass(helm):
    config = _config(
        environment_variables={"OPENAI_API_KEY": "os.environ/OPENAI_API_KEY", "LITELLM_LOG": "INFO"},
        litellm_settings={"max_tokens": 512, "cache_params": {"password": "os.environ/REDIS_PASSWORD"}},
    )
    config["model_list"][0]["model_info"] = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0}
    config["model_list"].append({"model_name": "no-key", "litellm_params": {"model": "ollama_chat/x", "api_key": None}})
    assert config_of(helm.template("litellm", values={"config": config}))["model_list"][0]["model_info"]


def test_schema_refuses_model_info_fields_litellm_would_drop(helm):
    config = _config()
    config["model_list"][0]["model_info"] = {"tier": "gpu"}
    res = helm.template_text("litellm", values={"config": config})
    assert res.returncode != 0 and "tier" in res.output
    config["model_list"][0]["model_info"] = {"tier": "free", "home_lab_tier": "gpu"}
    assert (
        config_of(helm.template("litellm", values={"config": config}))["model_list"][0]["model_info"]["tier"] == "free"
    )


def test_literal_secret_in_extra_env_is_refused(helm):
    res = helm.template_text("litellm", values={"extraEnv": [{"name": "OPENAI_API_KEY", "value": "sk-1"}]})
    assert res.returncode != 0 and "OPENAI_API_KEY" in res.output
    ref = {"secretKeyRef": {"name": "provider-keys", "key": "openai"}}
    objs = helm.template("litellm", values={"extraEnv": [{"name": "OPENAI_API_KEY", "valueFrom": ref}]})
    assert env_map(container(one(objs, "Deployment")))["OPENAI_API_KEY"]["valueFrom"] == ref


def test_keys_come_from_existing_secrets(rendered):
    ctr = container(one(rendered, "Deployment"))
    env = env_map(ctr)
    assert env["LITELLM_MASTER_KEY"] == {
        "name": "LITELLM_MASTER_KEY",
        "valueFrom": {"secretKeyRef": {"name": "litellm-secrets", "key": "master-key"}},
    }
    assert ctr["envFrom"] == [{"secretRef": {"name": "litellm-provider-keys"}}]
    assert all("value" not in e or not e["name"].endswith(("_KEY", "_SECRET", "_TOKEN")) for e in env.values())
    assert not [o for o in rendered if o["kind"] == "Secret"]


def test_probes_and_service_on_port_4000(rendered):
    ctr = container(one(rendered, "Deployment"))
    assert {"name": "http", "containerPort": 4000, "protocol": "TCP"} in ctr["ports"]
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/health/liveliness", "port": "http"}
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/health/readiness", "port": "http"}
    (port,) = one(rendered, "Service", "litellm")["spec"]["ports"]
    assert port["port"] == 4000 and port["targetPort"] == "http"
    assert one(rendered, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"


def test_not_scheduled_on_the_gpu_node(rendered, helm):
    spec = one(rendered, "Deployment")["spec"]["template"]["spec"]
    # The realistic values add their own required term; the GPU exclusion is ANDed into it.
    assert schedulable_nodes(spec) == ["k3s-master", "k3s-worker-01", "k3s-worker-02"]
    default = one(helm.template("litellm"), "Deployment")["spec"]["template"]["spec"]
    (term,) = default["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "nvidia.com/gpu", "operator": "NotIn", "values": ["true"]}]
    # Even a toleration for the GPU taint does not bring it onto the GPU node.
    tolerate = {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    spec = one(helm.template("litellm", values=tolerate), "Deployment")["spec"]["template"]["spec"]
    assert "k3s-gpu-worker" not in schedulable_nodes(spec)
    # Two user terms (ORed): each one gets the exclusion.
    terms = [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["k3s-gpu-worker"]}]},
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["k3s-worker-01"]}]},
    ]
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}
    spec = one(helm.template("litellm", values={**tolerate, "affinity": affinity}), "Deployment")["spec"]["template"]
    assert schedulable_nodes(spec["spec"]) == ["k3s-worker-01"]
    off = one(helm.template("litellm", values={**tolerate, "keepOffGpuNodes": {"enabled": False}}), "Deployment")
    assert "affinity" not in off["spec"]["template"]["spec"]
    assert "k3s-gpu-worker" in schedulable_nodes(off["spec"]["template"]["spec"])


def test_strategy_can_be_switched_to_recreate(helm):
    strategy = one(helm.template("litellm", values={"strategy": {"type": "Recreate"}}), "Deployment")["spec"][
        "strategy"
    ]
    assert strategy == {"type": "Recreate"}


def test_configmap_name_override(helm):
    objs = helm.template("litellm", values={"configMap": {"name": "router-config"}})
    one(objs, "ConfigMap", "router-config")
    volumes = one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "config", "configMap": {"name": "router-config"}}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not LITELLM.exists(), reason="the real LiteLLM proxy (.venv-litellm) is not installed")
def test_real_litellm_proxy_loads_the_rendered_config(rendered, tmp_path):
    """The rendered config.yaml, with keys in env as the Secrets give them, starts the real LiteLLM 1.106 proxy."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(rendered, "ConfigMap", "litellm-config")["data"]["config.yaml"])
    port = _free_port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": "sk-chart-test",
        "OPENAI_API_KEY": "sk-not-used",
        "VLLM_API_KEY": "not-used",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "NO_PROXY": "*",
    }
    log = (tmp_path / "litellm.log").open("w")
    proc = subprocess.Popen(
        [str(LITELLM), "--config", str(config_file), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "litellm.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "litellm.log").read_text()[-3000:]
            time.sleep(0.3)
        assert httpx.get(f"{base}/health/readiness", timeout=10).status_code == 200
        # The master key is enforced (1.106 answers 500 or 400 here rather than 401: it has no database).
        assert httpx.get(f"{base}/v1/models", timeout=10).status_code != 200
        models = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer sk-chart-test"}, timeout=10)
        assert models.status_code == 200, models.text
        assert {m["id"] for m in models.json()["data"]} == {"vllm-qwen", "ollama-qwen", "openai-gpt4o"}
        # LiteLLM drops a deployment it cannot build with only an error in its log (e.g. model_info.tier "gpu").
        assert "Error creating deployment" not in (tmp_path / "litellm.log").read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
