"""charts/ollama: CPU worker pinning, Recreate, kept models volume, no pull at start, env and resources."""

from __future__ import annotations

import pytest
from charts_helpers import container, env_map, find, load_values, one, schedulable_nodes


@pytest.fixture
def rendered(helm):
    return helm.template("ollama", ["ollama.yaml"])


def test_pinned_to_the_cpu_worker_with_recreate(rendered):
    deployment = one(rendered, "Deployment", "ollama")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = deployment["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "k3s-worker-02"}
    assert schedulable_nodes(spec) == ["k3s-worker-02"]


def test_default_is_kept_off_the_tainted_gpu_node(helm):
    spec = one(helm.template("ollama"), "Deployment")["spec"]["template"]["spec"]
    assert "k3s-gpu-worker" not in schedulable_nodes(spec)
    assert "tolerations" not in spec and "runtimeClassName" not in spec


def test_models_volume_is_kept_on_uninstall_and_mounted_at_root_ollama(rendered):
    values = load_values("ollama")["persistence"]
    pvc = one(rendered, "PersistentVolumeClaim", "ollama")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["resources"]["requests"]["storage"] == values["size"]
    assert pvc["spec"]["storageClassName"] == values["storageClass"]
    assert pvc["spec"]["accessModes"] == values["accessModes"]
    deployment = one(rendered, "Deployment")
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == "ollama"
    assert {"name": volume["name"], "mountPath": "/root/.ollama"} in container(deployment)["volumeMounts"]


def test_existing_claim_and_disabled_persistence(helm):
    objs = helm.template("ollama", ["ollama.yaml"], values={"persistence": {"existingClaim": "ollama-models-old"}})
    assert not find(objs, "PersistentVolumeClaim")
    (volume,) = one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == "ollama-models-old"
    objs = helm.template("ollama", values={"persistence": {"enabled": False}})
    assert not find(objs, "PersistentVolumeClaim")
    (volume,) = one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert volume == {"name": "models", "emptyDir": {}}
    objs = helm.template("ollama", values={"persistence": {"storageClass": "-"}})
    assert one(objs, "PersistentVolumeClaim")["spec"]["storageClassName"] == ""


def test_no_model_pull_at_pod_start(rendered, helm):
    for objs in (rendered, helm.template("ollama")):
        spec = one(objs, "Deployment")["spec"]["template"]["spec"]
        assert "initContainers" not in spec
        for ctr in spec["containers"]:
            # the only hook is the preStop delay of a graceful rollover (test_chart_rollover.py): nothing at start
            assert set(ctr.get("lifecycle", {})) <= {"preStop"}
            assert set(ctr.get("lifecycle", {}).get("preStop", {})) <= {"sleep"}
            assert "command" not in ctr
            assert ctr["args"] == ["serve"]
            assert not any("pull" in str(v) for v in ctr.get("env", []))
        assert not find(objs, "Job") and not find(objs, "Pod")


def test_ollama_environment(rendered, helm):
    env = env_map(container(one(rendered, "Deployment")))
    assert env["OLLAMA_HOST"]["value"] == "0.0.0.0:11434"
    assert env["OLLAMA_KEEP_ALIVE"]["value"] == "-1"
    assert env["OLLAMA_LOAD_TIMEOUT"]["value"] == "10m"
    assert env["OLLAMA_NUM_PARALLEL"]["value"] == "1"
    assert env["OLLAMA_MAX_LOADED_MODELS"]["value"] == "1"
    assert env["OLLAMA_FLASH_ATTENTION"]["value"] == "0"
    values = {
        "ollama": {"keepAlive": "30m", "loadTimeout": "20m", "numParallel": 2, "maxLoadedModels": 3},
        "extraEnv": [{"name": "OLLAMA_KEEP_ALIVE", "value": "1h"}],
    }
    env = env_map(container(one(helm.template("ollama", values=values), "Deployment")))
    assert env["OLLAMA_KEEP_ALIVE"]["value"] == "1h"  # extraEnv replaces the chart's entry, once
    assert env["OLLAMA_LOAD_TIMEOUT"]["value"] == "20m"
    assert env["OLLAMA_NUM_PARALLEL"]["value"] == "2"
    assert env["OLLAMA_MAX_LOADED_MODELS"]["value"] == "3"


@pytest.mark.parametrize(
    ("model", "requests", "limits"),
    [("phi4-mini", "2Gi", "4Gi"), ("qwen2.5:14b", "4Gi", "16Gi")],
)
def test_resources_and_model_annotation_follow_the_catalog(helm, model, requests, limits):
    values = {"model": model, "resources": {"requests": {"memory": requests}, "limits": {"memory": limits}}}
    deployment = one(helm.template("ollama", ["ollama.yaml"], values=values), "Deployment")
    resources = container(deployment)["resources"]
    assert resources["requests"]["memory"] == requests
    assert resources["limits"]["memory"] == limits
    assert not any("gpu" in key for key in resources["limits"])
    assert deployment["spec"]["template"]["metadata"]["annotations"]["inference.home-lab/model"] == model


def test_no_model_annotation_without_a_model(helm):
    annotations = one(helm.template("ollama"), "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    assert "inference.home-lab/model" not in annotations


def test_service_and_probes_on_port_11434(rendered):
    service = one(rendered, "Service", "ollama")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 11434 and port["targetPort"] == "http"
    ctr = container(one(rendered, "Deployment"))
    assert {"name": "http", "containerPort": 11434, "protocol": "TCP"} in ctr["ports"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert ctr[probe]["httpGet"] == {"path": "/", "port": "http"}


def test_more_than_one_replica_is_refused(helm):
    res = helm.template_text("ollama", values={"replicaCount": 2})
    assert res.returncode != 0 and "replicaCount" in res.output
    deployment = one(helm.template("ollama", values={"replicaCount": 0}), "Deployment")
    assert deployment["spec"]["replicas"] == 0
