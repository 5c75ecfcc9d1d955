"""charts/vllm: GPU node pinning, Recreate, args built from values, Service vllm-api, probes, HF token, cache."""

from __future__ import annotations

import pytest
from charts_helpers import container, env_map, find, load_values, one, schedulable_nodes


def parse_args(args: list[str]) -> dict[str, str | bool]:
    """vLLM-style `--flag value` / `--flag` arguments as a dict (a flag without a value maps to True)."""
    parsed: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        assert args[i].startswith("--"), args
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            parsed[args[i]] = args[i + 1]
            i += 2
        else:
            parsed[args[i]] = True
            i += 1
    return parsed


@pytest.fixture
def rendered(helm):
    return helm.template("vllm", ["vllm.yaml"], release="vllm")


def test_pinned_to_the_gpu_node_with_recreate(rendered):
    deployment = one(rendered, "Deployment", "vllm-server")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = deployment["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "k3s-gpu-worker", "nvidia.com/gpu": "true"}
    assert {"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia"
    assert container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert schedulable_nodes(spec) == ["k3s-gpu-worker"]


def test_defaults_already_target_the_gpu_node(helm):
    deployment = one(helm.template("vllm", release="anything"), "Deployment", "vllm-server")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert spec["runtimeClassName"] == "nvidia"
    assert schedulable_nodes(spec) == ["k3s-gpu-worker"]
    # Without the toleration the tainted GPU node refuses the pod: nothing is left to schedule on.
    assert schedulable_nodes({**spec, "tolerations": []}) == []


def test_args_are_built_from_values(rendered):
    model = load_values("vllm")["model"]
    ctr = container(one(rendered, "Deployment"))
    assert "command" not in ctr
    args = parse_args(ctr["args"][:-2])
    assert ctr["args"][-2:] == ["--dtype", "auto"]  # extraArgs come last, in order
    assert args["--model"] == model["name"]
    assert args["--served-model-name"] == model["servedModelName"]
    assert args["--max-model-len"] == str(model["maxModelLen"])
    assert float(args["--gpu-memory-utilization"]) == model["gpuMemoryUtilization"]
    assert args["--quantization"] == model["quantization"]
    assert args["--enforce-eager"] is True
    assert args["--port"] == "8000"
    annotations = one(rendered, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["inference.home-lab/model"] == model["servedModelName"]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            {"name": "Qwen/Qwen2.5-7B-Instruct-AWQ", "servedModelName": "qwen-7b", "maxModelLen": 32768},
            {"--model": "Qwen/Qwen2.5-7B-Instruct-AWQ", "--served-model-name": "qwen-7b", "--max-model-len": "32768"},
        ),
        (
            {"name": "TheBloke/deepseek-coder-6.7B-instruct-AWQ", "servedModelName": "", "maxModelLen": 0},
            {
                "--model": "TheBloke/deepseek-coder-6.7B-instruct-AWQ",
                "--served-model-name": "TheBloke/deepseek-coder-6.7B-instruct-AWQ",
            },
        ),
    ],
)
def test_served_model_name_matches_values(helm, model, expected):
    values = {"model": {**model, "quantization": "", "enforceEager": False, "gpuMemoryUtilization": 0.85}}
    args = parse_args(container(one(helm.template("vllm", values=values), "Deployment"))["args"])
    for flag, value in expected.items():
        assert args[flag] == value
    assert args["--gpu-memory-utilization"] == "0.85"
    assert "--quantization" not in args and "--enforce-eager" not in args
    if not model["maxModelLen"]:
        assert "--max-model-len" not in args


@pytest.mark.parametrize("bad", [{"gpuMemoryUtilization": 1.5}, {"gpuMemoryUtilization": 0}, {"name": ""}])
def test_schema_refuses_impossible_model_settings(helm, bad):
    res = helm.template_text("vllm", values={"model": bad})
    assert res.returncode != 0
    assert next(iter(bad)) in res.output


def test_service_vllm_api_and_health_probes(rendered):
    service = one(rendered, "Service", "vllm-api")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8000 and port["targetPort"] == "http"
    assert service["spec"]["selector"] == one(rendered, "Deployment")["spec"]["selector"]["matchLabels"]
    ctr = container(one(rendered, "Deployment"))
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in ctr["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert ctr[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = ctr["startupProbe"]
    # Generous: a first start downloads and loads the weights; at least 10 minutes before liveness applies.
    assert startup["initialDelaySeconds"] + startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_hf_token_only_from_an_existing_secret(rendered, helm):
    env = env_map(container(one(rendered, "Deployment")))
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    assert "HF_TOKEN" not in env_map(container(one(helm.template("vllm"), "Deployment")))
    res = helm.template_text("vllm", values={"hfToken": {"value": "hf_abcdef"}})
    assert res.returncode != 0 and "value" in res.output


def test_cache_volume_emptydir_or_kept_pvc(rendered, helm):
    pvc = one(rendered, "PersistentVolumeClaim", "vllm-server-cache")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "40Gi"
    spec = one(rendered, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == "vllm-server-cache"
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts == {"cache": "/root/.cache/huggingface", "shm": "/dev/shm"}  # noqa: S108 (the pod's mount)

    objs = helm.template("vllm", values={"cache": {"sizeLimit": "20Gi"}, "shm": {"enabled": False}})
    assert not find(objs, "PersistentVolumeClaim")
    spec = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert spec["volumes"] == [{"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}}]
    assert [m["name"] for m in spec["containers"][0]["volumeMounts"]] == ["cache"]


def test_gpu_count_and_resource_name(helm):
    values = {"gpu": {"count": 2, "resourceName": "nvidia.com/mig-1g.5gb"}, "resources": {"limits": {"cpu": "4"}}}
    limits = container(one(helm.template("vllm", values=values), "Deployment"))["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.5gb"] == 2 and limits["cpu"] == "4"
    assert "nvidia.com/gpu" not in limits
    limits = container(one(helm.template("vllm", values={"gpu": {"count": 0}}), "Deployment"))["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits


def test_more_than_one_replica_is_refused(helm):
    res = helm.template_text("vllm", values={"replicaCount": 2})
    assert res.returncode != 0 and "replicaCount" in res.output
