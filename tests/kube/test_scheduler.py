"""The real kube-scheduler over the twin's nodes: selectors, taints and the GPU, cordons, memory, a node that grows.

The last test reboots k3s-worker-02 with more memory (the twin of tests/kube is shared): keep it last.
"""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client, watch

from tests.kube.kube_helpers import (
    deployment,
    events,
    kjson,
    live_pods,
    node_ready,
    proxmox,
    unschedulable_message,
    wait_running,
)
from tests.twin import Twin

pytestmark = pytest.mark.slow

GPU_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}]
        }
    }
}


def _create(api, namespace: str, manifest: dict) -> None:
    client.AppsV1Api(api).create_namespaced_deployment(namespace, manifest)


def _gpu_deployment(name: str, **pod_spec) -> dict:
    manifest = deployment(name, strategy="Recreate", affinity=GPU_AFFINITY, runtimeClassName="nvidia", **pod_spec)
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"nvidia.com/gpu": "1", "memory": "8Gi"}
    }
    return manifest


def _mib(quantity: str) -> int:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(int(quantity[: -len(suffix)]) * factor)
    return int(quantity) // 2**20


def test_node_selector_mismatch_stays_pending_with_failed_scheduling(twin: Twin, api, namespace):
    label = "contract-test/pin"
    _create(api, namespace, deployment("pinned", nodeSelector={label: namespace}))
    message = unschedulable_message(twin, namespace, "app=pinned")
    assert message.startswith("0/4 nodes are available:")
    assert "3 node(s) didn't match Pod's node affinity/selector" in message
    assert "1 node(s) had untolerated taint {gpu: true}" in message  # the GPU node fails on its taint first
    (pod,) = live_pods(twin, namespace, "app=pinned")
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]

    failed = twin.wait_for(lambda: events(twin, namespace, "FailedScheduling"), what="FailedScheduling event")
    assert failed[0]["type"] == "Warning"
    assert failed[0]["involvedObject"]["name"] == pod["metadata"]["name"]
    assert "default-scheduler" in (failed[0].get("reportingComponent"), failed[0]["source"].get("component"))
    out = twin.kubectl("-n", namespace, "get", "events", "--field-selector", "reason=FailedScheduling").stdout
    assert "didn't match Pod's node affinity/selector" in out

    # a node that gets the label takes the Pod (the scheduler retries when nodes change)
    twin.kubectl("label", "node", "k3s-worker-01", f"{label}={namespace}")
    try:
        (pod,) = wait_running(twin, namespace, "app=pinned")
        assert pod["spec"]["nodeName"] == "k3s-worker-01"
    finally:
        twin.kubectl("label", "node", "k3s-worker-01", f"{label}-")


def test_taints_tolerations_and_the_gpu_extended_resource(twin: Twin, api, namespace):
    _create(api, namespace, _gpu_deployment("vllm-a"))
    message = unschedulable_message(twin, namespace, "app=vllm-a")
    assert "1 node(s) had untolerated taint {gpu: true}" in message
    assert "3 node(s) didn't match Pod's node affinity/selector" in message

    toleration = {"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    _create(api, namespace, _gpu_deployment("vllm-b", tolerations=[toleration]))
    (pod,) = wait_running(twin, namespace, "app=vllm-b")
    assert pod["spec"]["nodeName"] == "k3s-gpu-worker"
    # requests default to the limits; the extended resource is counted by the scheduler
    assert pod["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["runtimeClassName"] == "nvidia"

    _create(api, namespace, _gpu_deployment("vllm-c", tolerations=[{"key": "gpu", "operator": "Exists"}]))
    message = unschedulable_message(twin, namespace, "app=vllm-c")
    assert "1 Insufficient nvidia.com/gpu" in message
    assert "3 node(s) didn't match Pod's node affinity/selector" in message

    # once the GPU is free again, the waiting Pod gets it
    client.AppsV1Api(api).delete_namespaced_deployment("vllm-b", namespace)
    (pod,) = wait_running(twin, namespace, "app=vllm-c")
    assert pod["spec"]["nodeName"] == "k3s-gpu-worker"
    node = kjson(twin, "get", "node", "k3s-gpu-worker")
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"


def test_cordoned_node_is_unschedulable(twin: Twin, api, namespace):
    node = "k3s-worker-02"
    twin.kubectl("cordon", node)
    try:
        taints = kjson(twin, "get", "node", node)["spec"]["taints"]
        assert {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"} in [
            {k: t[k] for k in ("key", "effect")} for t in taints
        ]
        _create(api, namespace, deployment("cordoned", nodeSelector={"kubernetes.io/hostname": node}))
        message = unschedulable_message(twin, namespace, "app=cordoned")
        assert "1 node(s) were unschedulable" in message
        assert "1 node(s) had untolerated taint {gpu: true}" in message
        assert "2 node(s) didn't match Pod's node affinity/selector" in message
    finally:
        twin.kubectl("uncordon", node)
    (pod,) = wait_running(twin, namespace, "app=cordoned")
    assert pod["spec"]["nodeName"] == node


def test_requests_of_running_pods_count(twin: Twin, api, namespace):
    node = {"kubernetes.io/hostname": "k3s-worker-01"}
    _create(api, namespace, deployment("first", memory="6Gi", nodeSelector=node))
    wait_running(twin, namespace, "app=first")
    _create(api, namespace, deployment("second", memory="4Gi", nodeSelector=node))
    assert "1 Insufficient memory" in unschedulable_message(twin, namespace, "app=second")
    client.AppsV1Api(api).delete_namespaced_deployment("first", namespace)
    (pod,) = wait_running(twin, namespace, "app=second")
    assert pod["spec"]["nodeName"] == "k3s-worker-01"


def test_a_pod_deleted_while_its_node_is_down_stays_terminating(twin: Twin, api, namespace):
    # What a drain of a node that is already down runs into on k3s: the Pod object waits for its kubelet. Its
    # ReplicaSet does not count a terminating Pod, so it creates a replacement at once, which cannot be scheduled
    # while the only node it may run on is down.
    name, vmid = "k3s-worker-01", 102
    manifest = deployment("stranded", strategy="Recreate", nodeSelector={"kubernetes.io/hostname": name})
    _create(api, namespace, manifest)
    (pod,) = wait_running(twin, namespace, "app=stranded")
    pve = proxmox(twin)

    def power(action: str) -> None:
        upid = getattr(pve.nodes("pve").lxc(vmid).status, action).post()
        twin.wait_for(lambda: pve.nodes("pve").tasks(upid).status.get()["status"] == "stopped", what=action)

    old = pod["metadata"]["name"]
    power("stop")
    try:
        twin.wait_for(lambda: node_ready(kjson(twin, "get", "node", name)) != "True", what=f"{name} NotReady")
        twin.kubectl("-n", namespace, "delete", "pod", old, "--wait=false")
        time.sleep(3)
        pods = {
            p["metadata"]["name"]: p for p in kjson(twin, "-n", namespace, "get", "pods", "-l", "app=stranded")["items"]
        }
        assert old in pods, "the Pod must wait for its kubelet"
        assert pods[old]["metadata"]["deletionTimestamp"]
        assert "Terminating" in twin.kubectl("-n", namespace, "get", "pods").stdout
        replacements = [p for n, p in pods.items() if n != old]
        assert all(p["status"].get("phase") == "Pending" for p in replacements), "nothing runs on a node that is down"
    finally:
        power("start")
    twin.wait_for(lambda: node_ready(kjson(twin, "get", "node", name)) == "True", what=f"{name} Ready")
    # the kubelet, back, finishes the deletion; the replacement runs
    (new,) = wait_running(twin, namespace, "app=stranded")
    assert new["metadata"]["name"] != old
    twin.wait_for(
        lambda: old not in [p["metadata"]["name"] for p in kjson(twin, "-n", namespace, "get", "pods")["items"]],
        what="the old Pod to be gone",
    )


def test_insufficient_memory_until_the_node_grows(twin: Twin, api, namespace):
    """Story 12-10: the kubelet reads the LXC's memory when it starts; resize, reboot, and the Pod fits."""
    name, vmid = "k3s-worker-02", 103
    core = client.CoreV1Api(api)
    pve = proxmox(twin)
    lxc_mib = int(pve.nodes("pve").lxc(vmid).config.get()["memory"])
    allocatable_mib = _mib(kjson(twin, "get", "node", name)["status"]["allocatable"]["memory"])
    assert allocatable_mib == lxc_mib - 256  # the kubelet keeps 256 MiB back

    wanted_mib = allocatable_mib + 2048
    manifest = deployment(
        "ollama", memory=f"{wanted_mib}Mi", strategy="Recreate", nodeSelector={"kubernetes.io/hostname": name}
    )
    _create(api, namespace, manifest)
    message = unschedulable_message(twin, namespace, "app=ollama")
    assert "1 Insufficient memory" in message
    assert "2 node(s) didn't match Pod's node affinity/selector" in message
    assert "preemption: 0/4 nodes are available" in message

    # the LXC grows at once, but the node's capacity is what its kubelet read at start
    pve.nodes("pve").lxc(vmid).config.put(memory=lxc_mib + 4096)
    assert _mib(kjson(twin, "get", "node", name)["status"]["allocatable"]["memory"]) == allocatable_mib
    assert live_pods(twin, namespace, "app=ollama")[0]["spec"].get("nodeName") is None

    since = core.list_node(field_selector=f"metadata.name={name}").metadata.resource_version
    upid = pve.nodes("pve").lxc(vmid).status.reboot.post()
    task = twin.wait_for(
        lambda: (t := pve.nodes("pve").tasks(upid).status.get())["status"] == "stopped" and t, what="reboot task"
    )
    assert task["exitstatus"] == "OK"

    def grown():
        node = kjson(twin, "get", "node", name)
        return (
            node
            if node_ready(node) == "True" and _mib(node["status"]["allocatable"]["memory"]) > allocatable_mib
            else None
        )

    node = twin.wait_for(grown, timeout=60, what=f"{name} Ready with the new memory")
    assert _mib(node["status"]["allocatable"]["memory"]) == lxc_mib + 4096 - 256
    assert _mib(node["status"]["capacity"]["memory"]) == lxc_mib + 4096
    # on its way the node went NotReady (the kubelet stopped with its machine)
    readiness = [
        next(c.status for c in e["object"].status.conditions if c.type == "Ready")
        for e in watch.Watch().stream(
            core.list_node, field_selector=f"metadata.name={name}", resource_version=since, timeout_seconds=1
        )
    ]
    assert "False" in readiness and readiness[-1] == "True", readiness

    (pod,) = wait_running(twin, namespace, "app=ollama")
    assert pod["spec"]["nodeName"] == name
    assert json.dumps(pod["spec"]["containers"][0]["resources"]["requests"]) == json.dumps(
        {"memory": f"{wanted_mib}Mi"}
    )
