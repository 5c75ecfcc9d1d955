"""The cluster in-process (as the twin's runtime uses it): rollout invariants, namespaces, errors, hooks."""

from __future__ import annotations

import asyncio

import pytest

from lab.kube import ApiError, Cluster
from lab.kube.resources import BY_KIND
from tests.kube.harness import FakeKubelet

DEPLOY = BY_KIND[("apps", "Deployment")]
NS = BY_KIND[("", "Namespace")]
CM = BY_KIND[("", "ConfigMap")]


def _deployment(name: str, replicas: int, image: str, strategy: dict) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    }


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


async def _rolled_out(cluster: Cluster, name: str, image: str, replicas: int) -> None:
    for _ in range(400):
        d = cluster.get("apps/v1", "Deployment", "default", name)
        status = d.get("status") or {}
        live = [p for p in cluster.list("v1", "Pod", "default", f"app={name}")]
        if (
            status.get("updatedReplicas") == replicas
            and status.get("availableReplicas") == replicas
            and status.get("replicas") == replicas
            and len(live) == replicas
            and all(p["spec"]["containers"][0]["image"] == image for p in live)
        ):
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"{name} did not roll out {image}")


async def test_rolling_update_respects_max_surge_and_max_unavailable():
    kubelet = FakeKubelet(delay=0.05)
    cluster = Cluster(kubelet=kubelet)
    kubelet.cluster = cluster
    for node in ("n1", "n2"):
        cluster.add_node(node, capacity={"cpu": "8", "memory": "32Gi"})
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    cluster.api_create(DEPLOY, "default", _deployment("web", 4, "web:1", strategy))
    await _rolled_out(cluster, "web", "web:1", 4)

    watch = cluster.api_watch(BY_KIND[("", "Pod")], "default", "app=web")
    samples: list[tuple[int, int]] = []

    async def observe() -> None:
        while True:
            await watch.queue.get()
            pods = [
                p for p in cluster.list("v1", "Pod", "default", "app=web") if not p["metadata"].get("deletionTimestamp")
            ]
            samples.append((len(pods), sum(1 for p in pods if _ready(p))))

    observer = asyncio.create_task(observe())
    patched = cluster.api_patch(
        DEPLOY,
        "default",
        "web",
        "strategic",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:2"}]}}}},
    )
    assert patched["metadata"]["generation"] == 2
    await _rolled_out(cluster, "web", "web:2", 4)
    observer.cancel()
    cluster.stop_watch(watch)
    assert samples
    assert max(total for total, _ready_count in samples) <= 5  # replicas + maxSurge
    assert min(ready for _total, ready in samples) >= 4  # replicas - maxUnavailable
    assert (
        cluster.get("apps/v1", "Deployment", "default", "web")["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"
        ]
        == "2"
    )
    await cluster.close()


async def test_recreate_never_overlaps():
    kubelet = FakeKubelet(delay=0.05)
    cluster = Cluster(kubelet=kubelet)
    kubelet.cluster = cluster
    cluster.add_node("gpu", capacity={"cpu": "8", "memory": "32Gi"})
    cluster.api_create(DEPLOY, "default", _deployment("vllm", 2, "vllm:1", {"type": "Recreate"}))
    await _rolled_out(cluster, "vllm", "vllm:1", 2)
    old = {p["metadata"]["name"] for p in cluster.list("v1", "Pod", "default")}
    cluster.api_patch(
        DEPLOY,
        "default",
        "vllm",
        "merge",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "vllm:2"}]}}}},
    )
    await _rolled_out(cluster, "vllm", "vllm:2", 2)
    last_old_stop = max(t for event, name, t in kubelet.calls if event == "stopped" and name in old)
    first_new_start = min(t for event, name, t in kubelet.calls if event == "start" and name not in old)
    assert last_old_stop < first_new_start
    await cluster.close()


async def test_terminating_namespace_rejects_new_content_and_finalizers_hold_deletion():
    cluster = Cluster()
    cluster.api_create(NS, None, {"metadata": {"name": "ml"}})
    cluster.api_create(CM, "ml", {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    deleted = cluster.api_delete(NS, None, "ml")
    assert deleted["status"]["phase"] == "Terminating"
    with pytest.raises(ApiError) as exc:
        cluster.api_create(CM, "ml", {"metadata": {"name": "late"}})
    assert exc.value.code == 403
    assert "because it is being terminated" in exc.value.message
    await cluster.settle()
    held = cluster.get("v1", "ConfigMap", "ml", "held")
    assert held["metadata"]["deletionTimestamp"]  # the finalizer keeps it (and so the namespace)
    assert cluster.get("v1", "Namespace", None, "ml") is not None
    cluster.api_patch(CM, "ml", "held", "merge", {"metadata": {"finalizers": None}})
    await cluster.settle()
    assert cluster.get("v1", "ConfigMap", "ml", "held") is None
    assert cluster.get("v1", "Namespace", None, "ml") is None
    await cluster.close()


async def test_watch_history_expires():
    cluster = Cluster()
    start = cluster.resource_version
    cluster._history = type(cluster._history)(cluster._history, maxlen=5)
    for index in range(10):
        cluster.api_create(CM, "default", {"metadata": {"name": f"c{index}"}})
    with pytest.raises(ApiError) as exc:
        cluster.api_watch(CM, "default", resource_version=start)
    assert exc.value.code == 410 and exc.value.reason == "Expired"
    await cluster.close()
