"""The whole twin through its command line and the real clients: lifecycle, files, the real control plane,
LXC -> node memory, and the workloads the kubelet brings to life behind the Services on the twin's address."""

from __future__ import annotations

import ipaddress
import json
import os
import ssl

import httpx
import pytest
from kubernetes.utils import parse_quantity

from tests.lab import manifests
from tests.twin import ROOT, answers, refused

pytestmark = pytest.mark.slow

NODES = {"k3s-master", "k3s-worker-01", "k3s-worker-02", "k3s-gpu-worker"}
RESERVED_MIB = 256  # kubernetes.reserved_memory_mib in lab/topology.yaml
HAS_LITELLM = (ROOT / ".venv-litellm" / "bin" / "litellm").exists()


def test_up_is_idempotent_and_status_prints_the_whole_state(twin):
    again = twin.lab("up")
    assert "already running" in again.stdout
    assert twin.address in again.stdout

    state = twin.state()
    assert {"controlplane", "address", "nodes", "workloads", "services", "kubernetes", "proxmox", "registry"} <= set(
        state
    )
    address = ipaddress.ip_address(state["address"])
    assert address in ipaddress.ip_network("127.0.0.0/8") and not str(address).startswith("127.0.")
    assert state["address"] == (twin.lab_dir / "address").read_text().strip() == twin.endpoints["address"]
    assert state["time_scale"] == 0.01

    components = state["controlplane"]
    assert set(components) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    for name, component in components.items():
        assert component["running"] is True, name
        os.kill(component["pid"], 0)  # a live process of this machine

    assert {c["vmid"] for c in state["proxmox"]["containers"]} == {100, 102, 103}
    assert {n["metadata"]["name"] for n in state["kubernetes"]["Node"]} == NODES
    assert set(state["nodes"]) == NODES
    assert all(node["running"] for node in state["nodes"].values())
    assert state["workloads"] == {}, "nothing is deployed yet"
    assert set(state["services"]) == {"ml/ollama", "ml/vllm-api", "ml/litellm"}
    assert state["services"]["ml/ollama"]["port"] == 11434
    assert "phi4-mini:latest" in state["registry"]["ollama_tags"]
    assert "phi4-mini:3.8b" not in state["registry"]["ollama_tags"]
    assert "Qwen/Qwen3-8B-AWQ" in state["registry"]["vllm_models"]

    human = twin.lab("status").stdout
    assert state["address"] in human
    for name in (*NODES, "kube-apiserver", "etcd"):
        assert name in human


def test_runtime_files_are_private_and_the_ca_verifies_the_apis(twin):
    private = [twin.lab_dir / "kubeconfig", *(twin.lab_dir / "secrets").iterdir()]
    private += [p for p in (twin.lab_dir / "pki").iterdir() if p.suffix in (".pem", ".kubeconfig")]
    assert any(p.name.endswith("-key.pem") for p in private), "the PKI's keys are where they are expected"
    for path in private:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"

    ctx = ssl.create_default_context(cafile=str(twin.lab_dir / "ca.pem"))
    endpoints = twin.endpoints
    assert endpoints["kubernetes"] == f"https://{twin.address}:6443"
    assert endpoints["proxmox"] == f"https://{twin.address}:8006"
    assert endpoints["registry"] == f"https://{twin.address}:5000"
    assert endpoints["paperless"] == f"https://{twin.address}:8010"
    token = f"PVEAPIToken={twin.secret('proxmox-token-id')}={twin.secret('proxmox-token-secret')}"
    requests = [
        (endpoints["kubernetes"] + "/version", {}),
        (endpoints["proxmox"] + "/api2/json/version", {"Authorization": token}),
        (endpoints["registry"] + "/v2/library/phi4-mini/manifests/latest", {}),
        (
            endpoints["paperless"] + "/api/document_types/",
            {"Authorization": f"Token {twin.secret('paperless-api-token')}"},
        ),
    ]
    for url, headers in requests:
        response = httpx.get(url, headers=headers, verify=ctx, timeout=10)
        assert response.status_code == 200, (url, response.text)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, headers=headers, timeout=10)  # the system CAs do not know the twin's CA
    assert httpx.get(endpoints["kubernetes"] + "/version", verify=ctx).json()["gitVersion"] == "v1.32.9"
    denied = httpx.get(endpoints["paperless"] + "/api/documents/", headers={"Authorization": "Token no"}, verify=ctx)
    assert denied.status_code == 401 and denied.json() == {"detail": "Invalid token."}


def test_kubectl_sees_the_lab_nodes_and_the_server_is_v1_32_9(twin):
    version = json.loads(twin.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.32.9"
    assert version["clientVersion"]["gitVersion"] == "v1.32.9"

    nodes = json.loads(twin.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(by_name) == NODES
    for node in nodes:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", node["metadata"]["name"]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.32.9"
    assert "node-role.kubernetes.io/control-plane" in by_name["k3s-master"]["metadata"]["labels"]
    gpu = by_name["k3s-gpu-worker"]
    assert gpu["spec"]["taints"][0]["key"] == "gpu"
    assert gpu["status"]["capacity"]["nvidia.com/gpu"] == "1"
    # 8192 MiB LXC, 256 MiB kept back by the kubelet
    allocatable = by_name["k3s-worker-02"]["status"]["allocatable"]["memory"]
    assert parse_quantity(allocatable) == (8192 - RESERVED_MIB) * 2**20
    assert "k3s-worker-02" in twin.kubectl("get", "nodes").stdout


def _allocatable_mib(twin, node: str) -> int:
    status = json.loads(twin.kubectl("get", "node", node, "-o", "json").stdout)["status"]
    return int(parse_quantity(status["allocatable"]["memory"]) / 2**20)


def test_node_memory_follows_the_lxc_only_after_a_restart(twin):
    pve = twin.proxmox()
    before = _allocatable_mib(twin, "k3s-worker-01")
    assert before == 8192 - RESERVED_MIB
    pve.nodes("pve").lxc(102).config.put(memory=12288)
    assert pve.nodes("pve").lxc(102).config.get()["memory"] == 12288
    assert _allocatable_mib(twin, "k3s-worker-01") == before, "the kubelet caches machine memory until it restarts"
    upid = pve.nodes("pve").lxc(102).status.reboot.post()
    task = twin.wait_for(
        lambda: (t := pve.nodes("pve").tasks(upid).status.get())["status"] == "stopped" and t,
        timeout=60,
        what="the reboot task",
    )
    assert task["exitstatus"] == "OK"
    twin.wait_for(
        lambda: _allocatable_mib(twin, "k3s-worker-01") == 12288 - RESERVED_MIB, timeout=60, what="the new capacity"
    )


def test_a_running_ollama_pod_brings_the_emulated_server_up_and_replicas_0_stops_it(twin):
    twin.kubectl("create", "namespace", "ml", check=False)
    twin.kubectl("apply", "-f", "-", stdin=manifests.ollama(node="k3s-worker-02", request="2Gi"))
    twin.kubectl("rollout", "status", "deployment/ollama", "-n", "ml", "--timeout=120s")
    url = twin.endpoints["services"]["ml/ollama"]
    assert url == f"http://{twin.address}:11434"
    assert twin.wait_for(lambda: answers(url + "/"), timeout=30, what="the Service to answer")
    assert httpx.get(url + "/", timeout=10).text == "Ollama is running"
    assert httpx.get(url + "/api/version", timeout=10).json()["version"] == "0.13.3"

    state = twin.state()
    workload = state["workloads"]["ml/ollama"]
    assert workload["ready"] is True
    (pod,) = workload["pods"]
    assert pod["node"] == "k3s-worker-02" and pod["state"] == "running"
    (endpoint,) = state["services"]["ml/ollama"]["endpoints"]
    assert endpoint["ready"] is True and endpoint["address"] == pod["ip"]
    direct = f"http://{twin.address}:{pod['port']}/"  # where the emulated server itself listens
    assert httpx.get(direct, timeout=10).text == "Ollama is running"

    twin.kubectl("scale", "deployment/ollama", "-n", "ml", "--replicas=0")
    twin.wait_for(lambda: refused(url + "/"), timeout=60, what="the Service to stop answering")
    twin.wait_for(lambda: refused(direct), timeout=60, what="the emulated server to stop")
    assert "ml/ollama" not in twin.state()["workloads"]


def test_pod_that_fits_no_node_stays_pending(twin):
    twin.kubectl("create", "namespace", "ml", check=False)
    too_big = manifests.ollama(request="64Gi", limit="64Gi", name="too-big").split("---", 1)[1]
    twin.kubectl("apply", "-f", "-", stdin=too_big)

    def unschedulable():
        pods = json.loads(twin.kubectl("get", "pods", "-n", "ml", "-l", "app=too-big", "-o", "json").stdout)["items"]
        if not pods:
            return None
        cond = [c for c in pods[0]["status"].get("conditions", []) if c["type"] == "PodScheduled"]
        return cond and cond[0].get("reason") == "Unschedulable" and pods[0]

    pod = twin.wait_for(unschedulable, timeout=60, what="FailedScheduling")
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")
    scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "Insufficient memory" in scheduled["message"]
    twin.kubectl("delete", "deployment", "too-big", "-n", "ml")


@pytest.mark.skipif(not HAS_LITELLM, reason="LiteLLM is not installed in .venv-litellm (make venv)")
def test_litellm_pod_runs_the_real_proxy_with_the_configmap_and_secret(twin):
    twin.kubectl("create", "namespace", "ml", check=False)
    manifest = manifests.litellm(twin.endpoints["services"]["ml/ollama"])
    twin.kubectl("apply", "-f", "-", stdin=manifest)
    twin.kubectl("rollout", "status", "deployment/litellm", "-n", "ml", "--timeout=180s")
    url = twin.endpoints["services"]["ml/litellm"]
    assert url == f"http://{twin.address}:4000"
    # the service proxy takes the ready endpoint a moment after the rollout (its lag, as kube-proxy's)
    twin.wait_for(lambda: answers(url + "/health/liveliness"), timeout=30, what="the Service to answer")
    models = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer sk-test-master"}, timeout=30)
    assert models.status_code == 200, models.text
    assert [m["id"] for m in models.json()["data"]] == ["ollama-qwen"]
    denied = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=30)
    assert denied.status_code in (400, 401, 403), denied.text
    workload = twin.state()["workloads"]["ml/litellm"]
    assert workload["ready"] is True and workload["kind"] == "litellm"
