"""The scheduler and the node lifecycle: selectors, affinity, taints, memory, capacity changes, NotReady."""

from __future__ import annotations

import json

from kubernetes import client

from tests.kube.harness import KubeServer


def _deployment(name: str, memory: str = "1Gi", **pod_spec) -> dict:
    spec = {
        "containers": [
            {
                "name": "main",
                "image": "ollama/ollama:0.5.7",
                "resources": {"requests": {"memory": memory}, "limits": {"memory": memory}},
            }
        ]
    }
    spec.update(pod_spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def _pods(server: KubeServer, app: str) -> list[dict]:
    return server.call(server.cluster.list, "v1", "Pod", "default", f"app={app}")


def _pending_message(server: KubeServer, app: str) -> str:
    def message():
        pods = server.cluster.list("v1", "Pod", "default", f"app={app}")
        for cond in (pods[0]["status"].get("conditions") or []) if pods else []:
            if cond["type"] == "PodScheduled" and cond["status"] == "False":
                return cond["message"]
        return None

    return server.wait_for(message, what=f"{app} unschedulable")


def _events(server: KubeServer, name_prefix: str, reason: str) -> list[dict]:
    events = server.call(server.cluster.list, "v1", "Event", "default")
    return [e for e in events if e["reason"] == reason and e["involvedObject"]["name"].startswith(name_prefix)]


def _apps(server: KubeServer) -> client.AppsV1Api:
    return client.AppsV1Api(server.api_client())


def test_node_selector_mismatch_stays_pending_with_failed_scheduling(fresh_server: KubeServer):
    k = fresh_server
    _apps(k).create_namespaced_deployment(
        "default", _deployment("pinned", nodeSelector={"kubernetes.io/hostname": "k3s-worker-03"})
    )
    message = _pending_message(k, "pinned")
    assert message.startswith("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")
    pod = _pods(k, "pinned")[0]
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]
    events = _events(k, "pinned-", "FailedScheduling")
    assert events and events[0]["type"] == "Warning" and events[0]["source"]["component"] == "default-scheduler"
    # kubectl shows it the way operators know it
    out = k.kubectl("get", "events", "--field-selector", "reason=FailedScheduling").stdout
    assert "didn't match Pod's node affinity/selector" in out

    k.call(k.cluster.add_node, "k3s-worker-03", labels={}, taints=[], capacity={"cpu": "4", "memory": "8Gi"})
    k.wait_for(
        lambda: (
            (p := k.cluster.list("v1", "Pod", "default", "app=pinned"))
            and p[0]["spec"].get("nodeName") == "k3s-worker-03"
            and p[0]["status"]["phase"] == "Running"
        ),
        what="pod scheduled to the new node",
    )


def test_insufficient_memory_until_the_node_grows(fresh_server: KubeServer):
    k = fresh_server
    _apps(k).create_namespaced_deployment(
        "default", _deployment("ollama", memory="16Gi", nodeSelector={"kubernetes.io/hostname": "k3s-worker-02"})
    )
    message = _pending_message(k, "ollama")
    assert "1 Insufficient memory" in message
    assert "2 node(s) didn't match Pod's node affinity/selector" in message
    assert "preemption: 0/3 nodes are available" in message
    # the LXC grows to 20 GiB and the kubelet restarts: the node reports the new capacity
    k.call(
        k.cluster.set_node_capacity, "k3s-worker-02", {"cpu": "6", "memory": "20Gi"}, {"cpu": "6", "memory": "19712Mi"}
    )
    pod = k.wait_for(
        lambda: (
            (p := k.cluster.list("v1", "Pod", "default", "app=ollama"))
            and p[0]["status"]["phase"] == "Running"
            and p[0]
        ),
        what="ollama running",
    )
    assert pod["spec"]["nodeName"] == "k3s-worker-02"
    node = json.loads(k.kubectl("get", "node", "k3s-worker-02", "-o", "json").stdout)
    assert node["status"]["allocatable"]["memory"] == "19712Mi"


def test_requests_of_running_pods_count(fresh_server: KubeServer):
    k = fresh_server
    apps = _apps(k)
    apps.create_namespaced_deployment(
        "default", _deployment("first", memory="6Gi", nodeSelector={"kubernetes.io/hostname": "k3s-worker-01"})
    )
    k.wait_for(
        lambda: (p := k.cluster.list("v1", "Pod", "default", "app=first")) and p[0]["status"]["phase"] == "Running",
        what="first running",
    )
    apps.create_namespaced_deployment(
        "default", _deployment("second", memory="4Gi", nodeSelector={"kubernetes.io/hostname": "k3s-worker-01"})
    )
    assert "1 Insufficient memory" in _pending_message(k, "second")
    apps.delete_namespaced_deployment("first", "default")
    k.wait_for(
        lambda: (
            (p := k.cluster.list("v1", "Pod", "default", "app=second"))
            and p[0]["spec"].get("nodeName") == "k3s-worker-01"
        ),
        what="second scheduled after first went away",
    )


def test_taints_tolerations_affinity_and_extended_resources(fresh_server: KubeServer):
    k = fresh_server
    k.call(
        k.cluster.add_node,
        "k3s-gpu-worker",
        labels={"nvidia.com/gpu": "true"},
        taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}],
        capacity={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
    )
    apps = _apps(k)
    gpu_limits = {"limits": {"nvidia.com/gpu": "1", "memory": "8Gi"}}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}]
            }
        }
    }
    untolerated = _deployment("vllm-a", affinity=affinity, runtimeClassName="nvidia")
    untolerated["spec"]["template"]["spec"]["containers"][0]["resources"] = gpu_limits
    apps.create_namespaced_deployment("default", untolerated)
    message = _pending_message(k, "vllm-a")
    assert "1 node(s) had untolerated taint {gpu: true}" in message
    assert "3 node(s) didn't match Pod's node affinity/selector" in message

    tolerated = _deployment(
        "vllm-b",
        affinity=affinity,
        runtimeClassName="nvidia",
        tolerations=[{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
    )
    tolerated["spec"]["template"]["spec"]["containers"][0]["resources"] = gpu_limits
    apps.create_namespaced_deployment("default", tolerated)
    pod = k.wait_for(
        lambda: (
            (p := k.cluster.list("v1", "Pod", "default", "app=vllm-b"))
            and p[0]["status"]["phase"] == "Running"
            and p[0]
        ),
        what="vllm-b running on the GPU node",
    )
    assert pod["spec"]["nodeName"] == "k3s-gpu-worker"
    assert pod["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"

    second = _deployment("vllm-c", affinity=affinity, tolerations=[{"key": "gpu", "operator": "Exists"}])
    second["spec"]["template"]["spec"]["containers"][0]["resources"] = gpu_limits
    apps.create_namespaced_deployment("default", second)
    assert "1 Insufficient nvidia.com/gpu" in _pending_message(k, "vllm-c")


def test_cordoned_node_is_unschedulable(fresh_server: KubeServer):
    k = fresh_server
    k.kubectl("cordon", "k3s-worker-02")
    _apps(k).create_namespaced_deployment(
        "default", _deployment("cordoned", nodeSelector={"kubernetes.io/hostname": "k3s-worker-02"})
    )
    message = _pending_message(k, "cordoned")
    assert "1 node(s) were unschedulable" in message
    k.kubectl("uncordon", "k3s-worker-02")
    k.wait_for(
        lambda: (p := k.cluster.list("v1", "Pod", "default", "app=cordoned")) and p[0]["status"]["phase"] == "Running",
        what="scheduled after uncordon",
    )


def test_node_not_ready_stops_pods_and_ready_starts_them_again(fresh_server: KubeServer):
    k = fresh_server
    _apps(k).create_namespaced_deployment(
        "default", _deployment("worker", nodeSelector={"kubernetes.io/hostname": "k3s-worker-02"})
    )
    pod = k.wait_for(
        lambda: (
            (p := k.cluster.list("v1", "Pod", "default", "app=worker"))
            and p[0]["status"]["phase"] == "Running"
            and p[0]
        ),
        what="worker running",
    )
    name = pod["metadata"]["name"]
    k.call(k.cluster.set_node_ready, "k3s-worker-02", False)
    assert ("stop", name) in [(e, n) for e, n, _t in k.kubelet.calls]
    pod = k.call(k.cluster.get, "v1", "Pod", "default", name)
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert pod["spec"]["nodeName"] == "k3s-worker-02"  # not evicted
    deployment = k.wait_for(
        lambda: (
            (d := k.cluster.get("apps/v1", "Deployment", "default", "worker"))["status"].get("unavailableReplicas") == 1
            and d
        ),
        what="deployment unavailable",
    )
    assert {c["type"]: c["status"] for c in deployment["status"]["conditions"]}["Available"] == "False"
    node = json.loads(k.kubectl("get", "node", "k3s-worker-02", "-o", "json").stdout)
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "Unknown"
    assert "NotReady" in k.kubectl("get", "node", "k3s-worker-02").stdout

    starts_before = sum(1 for e, n, _t in k.kubelet.calls if e == "start" and n == name)
    k.call(k.cluster.set_node_ready, "k3s-worker-02", True)
    k.wait_for(
        lambda: (
            (p := k.cluster.get("v1", "Pod", "default", name))
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])
        ),
        what="pod ready again",
    )
    assert sum(1 for e, n, _t in k.kubelet.calls if e == "start" and n == name) == starts_before + 1
