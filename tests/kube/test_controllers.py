"""What the real controllers do that the home-made API server could not: disruption budgets, DaemonSets, Jobs."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from tests.kube.kube_helpers import PAUSE, deployment, kjson, live_pods, wait_running
from tests.twin import Twin

pytestmark = pytest.mark.slow


def test_pod_disruption_budget_blocks_eviction_and_drain(twin: Twin, api, namespace):
    core, policy = client.CoreV1Api(api), client.PolicyV1Api(api)
    node = "k3s-master"  # nobody else drains the control-plane node
    manifest = deployment("guarded", replicas=2, nodeSelector={"kubernetes.io/hostname": node})
    client.AppsV1Api(api).create_namespaced_deployment(namespace, manifest)
    pods = wait_running(twin, namespace, "app=guarded", count=2)
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "guarded"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}},
    }
    policy.create_namespaced_pod_disruption_budget(namespace, pdb)

    def observed():
        status = policy.read_namespaced_pod_disruption_budget("guarded", namespace).status
        return status if status.observed_generation == 1 and status.current_healthy == 2 else None

    status = twin.wait_for(observed, what="the disruption controller to count the healthy pods")
    assert status.disruptions_allowed == 0 and status.desired_healthy == 2 and status.expected_pods == 2

    victim = pods[0]["metadata"]["name"]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": victim, "namespace": namespace}}
    with pytest.raises(client.ApiException) as exc:
        core.create_namespaced_pod_eviction(victim, namespace, eviction)
    body = json.loads(exc.value.body)
    assert exc.value.status == 429 and body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert "needs 2 healthy pods and has 2 currently" in body["details"]["causes"][0]["message"]

    # kubectl drain keeps retrying the eviction until its timeout, then fails
    try:
        proc = twin.kubectl("drain", node, "--pod-selector=app=guarded", "--timeout=3s", check=False, timeout=60)
    finally:
        twin.kubectl("uncordon", node)
    assert proc.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget" in proc.stderr
    assert "global timeout reached: 3s" in proc.stderr
    assert {p["metadata"]["name"] for p in live_pods(twin, namespace, "app=guarded")} == {
        p["metadata"]["name"] for p in pods
    }

    # a budget that allows one disruption lets the eviction through
    policy.patch_namespaced_pod_disruption_budget("guarded", namespace, {"spec": {"minAvailable": 1}})
    twin.wait_for(
        lambda: policy.read_namespaced_pod_disruption_budget("guarded", namespace).status.disruptions_allowed == 1,
        what="one disruption allowed",
    )
    core.create_namespaced_pod_eviction(victim, namespace, eviction)
    replaced = wait_running(twin, namespace, "app=guarded", count=2)
    assert victim not in {p["metadata"]["name"] for p in replaced}


def _daemonset(name: str, **pod_spec) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": PAUSE}], **pod_spec},
            },
        },
    }


def test_daemonset_runs_one_pod_per_schedulable_node(twin: Twin, api, namespace):
    apps = client.AppsV1Api(api)
    nodes = kjson(twin, "get", "nodes")["items"]
    untainted = {
        n["metadata"]["name"]
        for n in nodes
        if not [t for t in n["spec"].get("taints") or [] if t["key"] != "node.kubernetes.io/unschedulable"]
    }
    assert untainted == {"k3s-master", "k3s-worker-01", "k3s-worker-02"}  # the GPU node is tainted

    apps.create_namespaced_daemon_set(namespace, _daemonset("agent"))
    pods = wait_running(twin, namespace, "app=agent", count=len(untainted))
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(untainted)
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet" for p in pods)
    status = twin.wait_for(
        lambda: (s := apps.read_namespaced_daemon_set("agent", namespace).status).number_ready == len(untainted) and s,
        what="daemonset status",
    )
    assert status.desired_number_scheduled == status.current_number_scheduled == len(untainted)

    # a DaemonSet that tolerates every taint covers the GPU node too
    apps.create_namespaced_daemon_set(namespace, _daemonset("everywhere", tolerations=[{"operator": "Exists"}]))
    pods = wait_running(twin, namespace, "app=everywhere", count=len(nodes))
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(n["metadata"]["name"] for n in nodes)


def test_job_creates_its_pod(twin: Twin, api, namespace):
    # The twin's kubelet keeps containers that are not inference servers running until they are deleted (there
    # is no process to exit), so no Job completes here: only check that the Job controller creates and tracks
    # its Pod.
    batch = client.BatchV1Api(api)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}],
                }
            },
        },
    }
    created = batch.create_namespaced_job(namespace, job)
    selector = f"batch.kubernetes.io/job-name=once,batch.kubernetes.io/controller-uid={created.metadata.uid}"
    (pod,) = wait_running(twin, namespace, selector)
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert pod["spec"]["restartPolicy"] == "Never"
    status = twin.wait_for(
        lambda: (s := batch.read_namespaced_job("once", namespace).status).active == 1 and s.ready == 1 and s,
        what="job status",
    )
    assert not status.succeeded and not status.failed
