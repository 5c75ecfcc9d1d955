"""The whole twin through its command line and the real clients: lifecycle, kubelet wiring, LXC -> node memory."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest
from proxmoxer import ProxmoxAPI

pytestmark = pytest.mark.slow


def test_up_is_idempotent_and_status_prints_the_whole_state(twin):
    again = twin.lab("up")
    assert "already running" in again.stdout
    state = twin.state()
    assert state["time_scale"] == 0.01
    assert {c["vmid"] for c in state["proxmox"]["containers"]} == {100, 102, 103}
    assert {n["metadata"]["name"] for n in state["kubernetes"]["Node"]} >= {"k3s-worker-02", "k3s-gpu-worker"}
    assert "phi4-mini:latest" in state["registry"]["ollama_tags"]
    assert "phi4-mini:3.8b" not in state["registry"]["ollama_tags"]
    assert "Qwen/Qwen3-8B-AWQ" in state["registry"]["vllm_models"]
    human = twin.lab("status").stdout
    assert "k3s-worker-02" in human


def test_runtime_files_are_private_and_the_ca_verifies_the_apis(twin):
    secrets = twin.lab_dir / "secrets"
    for path in secrets.iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    ctx = ssl.create_default_context(cafile=str(twin.lab_dir / "ca.pem"))
    response = httpx.get(twin.endpoints["registry"] + "/v2/library/phi4-mini/manifests/latest", verify=ctx)
    assert response.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(twin.endpoints["registry"] + "/v2/library/phi4-mini/manifests/latest")  # system CAs only


def test_kubectl_sees_the_lab_nodes(twin):
    nodes = json.loads(twin.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(by_name) == {"k3s-master", "k3s-worker-01", "k3s-worker-02", "k3s-gpu-worker"}
    gpu = by_name["k3s-gpu-worker"]
    assert gpu["spec"]["taints"][0]["key"] == "gpu"
    assert gpu["status"]["capacity"]["nvidia.com/gpu"] == "1"
    # 8192 MiB LXC, 256 MiB kept back by the kubelet
    assert by_name["k3s-worker-02"]["status"]["allocatable"]["memory"] == f"{(8192 - 256) * 1024}Ki"


def _proxmox(twin) -> ProxmoxAPI:
    port = int(twin.endpoints["proxmox"].rsplit(":", 1)[1])
    return ProxmoxAPI(
        "127.0.0.1",
        port=port,
        user="root@pam",
        token_name="inference",
        token_value=twin.secret("proxmox-token-secret"),
        verify_ssl=str(twin.lab_dir / "ca.pem"),
    )


def _allocatable(twin, node: str) -> str:
    return json.loads(twin.kubectl("get", "node", node, "-o", "json").stdout)["status"]["allocatable"]["memory"]


def test_node_memory_follows_the_lxc_only_after_a_restart(twin):
    pve = _proxmox(twin)
    before = _allocatable(twin, "k3s-worker-01")
    pve.nodes("pve").lxc(102).config.put(memory=12288)
    assert _allocatable(twin, "k3s-worker-01") == before, "the kubelet caches machine memory until it restarts"
    upid = pve.nodes("pve").lxc(102).status.reboot.post()
    twin.wait_for(lambda: pve.nodes("pve").tasks(upid).status.get()["status"] == "stopped", what="reboot task")
    twin.wait_for(lambda: _allocatable(twin, "k3s-worker-01") == f"{(12288 - 256) * 1024}Ki", what="new capacity")


OLLAMA = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: ollama, namespace: ml}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {app: ollama}}
  template:
    metadata: {labels: {app: ollama}}
    spec:
      nodeSelector: {kubernetes.io/hostname: k3s-worker-02}
      containers:
        - name: ollama
          image: ollama/ollama:0.13.3
          env: [{name: OLLAMA_KEEP_ALIVE, value: "-1"}]
          resources: {requests: {memory: 2Gi}, limits: {memory: 4Gi}}
"""


def test_a_running_ollama_pod_brings_the_emulated_server_up_and_replicas_0_stops_it(twin):
    twin.kubectl("create", "namespace", "ml", check=False)
    twin.kubectl("apply", "-f", "-", stdin=OLLAMA)
    twin.kubectl("rollout", "status", "deployment/ollama", "-n", "ml", "--timeout=60s")
    url = twin.endpoints["services"]["ml/ollama"]
    assert httpx.get(url + "/").text == "Ollama is running"
    assert twin.state()["workloads"]["ml/ollama"]["ready"] is True

    twin.kubectl("scale", "deployment/ollama", "-n", "ml", "--replicas=0")

    def stopped():
        try:
            httpx.get(url + "/", timeout=1)
        except httpx.ConnectError:
            return True
        return False

    twin.wait_for(stopped, what="Ollama to stop")
    assert "ml/ollama" not in twin.state()["workloads"]


def test_pod_that_fits_no_node_stays_pending(twin):
    too_big = (
        OLLAMA.replace("name: ollama, namespace: ml", "name: too-big, namespace: ml")
        .replace("requests: {memory: 2Gi}", "requests: {memory: 64Gi}")
        .replace("app: ollama", "app: too-big")
    )
    twin.kubectl("apply", "-f", "-", stdin=too_big)

    def pending_reason():
        pods = json.loads(twin.kubectl("get", "pods", "-n", "ml", "-l", "app=too-big", "-o", "json").stdout)["items"]
        if not pods:
            return None
        cond = [c for c in pods[0]["status"].get("conditions", []) if c["type"] == "PodScheduled"]
        return cond and cond[0].get("reason")

    assert twin.wait_for(pending_reason, what="FailedScheduling") == "Unschedulable"
    twin.kubectl("delete", "deployment", "too-big", "-n", "ml")


LITELLM = """
apiVersion: v1
kind: Secret
metadata: {name: litellm-secrets, namespace: ml}
stringData: {master-key: sk-test-master}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: litellm-config, namespace: ml}
data:
  config.yaml: |
    model_list:
      - model_name: ollama-qwen
        litellm_params: {model: ollama_chat/phi4-mini, api_base: "OLLAMA_URL", timeout: 5}
    general_settings: {master_key: os.environ/LITELLM_MASTER_KEY}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: litellm, namespace: ml}
spec:
  replicas: 1
  selector: {matchLabels: {app: litellm}}
  template:
    metadata: {labels: {app: litellm}}
    spec:
      containers:
        - name: litellm
          image: ghcr.io/berriai/litellm:main-v1.106.2
          args: [--config, /app/config.yaml, --port, "4000"]
          env:
            - name: LITELLM_MASTER_KEY
              valueFrom: {secretKeyRef: {name: litellm-secrets, key: master-key}}
          volumeMounts: [{name: config, mountPath: /app/config.yaml, subPath: config.yaml}]
      volumes: [{name: config, configMap: {name: litellm-config}}]
"""


def test_litellm_pod_runs_the_real_proxy_with_the_configmap_and_secret(twin):
    twin.kubectl("create", "namespace", "ml", check=False)
    manifest = LITELLM.replace("OLLAMA_URL", twin.endpoints["services"]["ml/ollama"])
    twin.kubectl("apply", "-f", "-", stdin=manifest)
    twin.kubectl("rollout", "status", "deployment/litellm", "-n", "ml", "--timeout=120s")
    url = twin.endpoints["services"]["ml/litellm"]
    models = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer sk-test-master"}, timeout=10)
    assert models.status_code == 200
    assert [m["id"] for m in models.json()["data"]] == ["ollama-qwen"]
    denied = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert denied.status_code != 200
