"""Contract tests with the real ``helm`` 3.17 binary: install/upgrade/rollback/uninstall with ``--wait``."""

from __future__ import annotations

import base64
import json
import time

from tests.kube.harness import FIXTURES, KubeServer

CHART = str(FIXTURES / "demo-chart")


def _release_secrets(server: KubeServer, namespace: str) -> list[dict]:
    return server.call(server.cluster.list, "v1", "Secret", namespace, "owner=helm")


def test_install_upgrade_rollback_uninstall(kube_server: KubeServer, namespace: str):
    k = kube_server
    started = time.monotonic()
    out = k.helm("install", "demo", CHART, "-n", namespace, "--wait", "--timeout", "60s").stdout
    assert "STATUS: deployed" in out
    assert time.monotonic() - started > 0.3  # --wait waited for the kubelet to make the Pod Ready
    deployment = k.call(k.cluster.get, "apps/v1", "Deployment", namespace, "demo")
    assert deployment["status"]["readyReplicas"] == 1
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    pvc = k.call(k.cluster.get, "v1", "PersistentVolumeClaim", namespace, "demo-data")
    assert pvc["status"]["phase"] == "Bound"
    assert k.call(k.cluster.get, "v1", "Service", namespace, "demo")["spec"]["clusterIP"].startswith("10.43.")
    secret = k.call(k.cluster.get, "v1", "Secret", namespace, "demo-secret")
    assert base64.b64decode(secret["data"]["token"]) == b"s3cr3t-1"

    # helm stores its release protobuf-encoded; the server must have decoded it into a proper Secret
    releases = _release_secrets(k, namespace)
    assert [s["metadata"]["name"] for s in releases] == ["sh.helm.release.v1.demo.v1"]
    assert releases[0]["type"] == "helm.sh/release.v1"
    assert releases[0]["metadata"]["labels"]["status"] == "deployed"

    k.helm(
        "upgrade",
        "demo",
        CHART,
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "60s",
        "--set",
        "image.tag=1.28",
        "--set",
        "replicas=2",
        "--set",
        "message=bye",
    )
    deployment = k.call(k.cluster.get, "apps/v1", "Deployment", namespace, "demo")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.io/library/nginx:1.28"
    assert deployment["status"]["readyReplicas"] == 2
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    config = k.call(k.cluster.get, "v1", "ConfigMap", namespace, "demo-config")
    assert config["data"]["message"] == "bye"
    secret = k.call(k.cluster.get, "v1", "Secret", namespace, "demo-secret")
    assert base64.b64decode(secret["data"]["token"]) == b"s3cr3t-2"  # stringData in a three-way patch
    values = json.loads(k.helm("get", "values", "demo", "-n", namespace, "-o", "json").stdout)
    assert values == {"image": {"tag": "1.28"}, "message": "bye", "replicas": 2}

    k.helm("rollback", "demo", "1", "-n", namespace, "--wait", "--timeout", "60s")
    deployment = k.call(k.cluster.get, "apps/v1", "Deployment", namespace, "demo")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.io/library/nginx:1.27"
    assert deployment["spec"]["replicas"] == 1
    # the old ReplicaSet is reused for the old template and becomes revision 3
    replicasets = k.call(k.cluster.list, "apps/v1", "ReplicaSet", namespace)
    assert len(replicasets) == 2
    active = [rs for rs in replicasets if rs["spec"]["replicas"]]
    assert active[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"

    history = json.loads(k.helm("history", "demo", "-n", namespace, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert history[2]["description"] == "Rollback to 1"
    listed = json.loads(k.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["revision"], r["status"]) for r in listed] == [("demo", "3", "deployed")]

    assert "uninstalled" in k.helm("uninstall", "demo", "-n", namespace, "--wait").stdout
    k.wait_for(lambda: not k.cluster.list("v1", "Pod", namespace), what="pods gone after uninstall")
    for kind in ("Deployment", "ReplicaSet"):
        assert k.call(k.cluster.list, "apps/v1", kind, namespace) == []
    for kind in ("Service", "ConfigMap", "PersistentVolumeClaim"):
        names = [o["metadata"]["name"] for o in k.call(k.cluster.list, "v1", kind, namespace)]
        assert [n for n in names if n.startswith("demo")] == []
    assert _release_secrets(k, namespace) == []


def test_recreate_strategy_stops_old_pods_first(kube_server: KubeServer, namespace: str):
    k = kube_server
    k.helm("install", "gpu", CHART, "-n", namespace, "--wait", "--set", "strategy=Recreate")
    first = {p["metadata"]["name"] for p in k.call(k.cluster.list, "v1", "Pod", namespace)}
    k.helm("upgrade", "gpu", CHART, "-n", namespace, "--wait", "--set", "strategy=Recreate", "--set", "image.tag=1.28")
    pods = k.call(k.cluster.list, "v1", "Pod", namespace)
    assert len(pods) == 1 and pods[0]["metadata"]["name"] not in first
    calls = [c for c in k.kubelet.calls if c[1] in first or c[1] == pods[0]["metadata"]["name"]]
    stop_old = next(t for event, name, t in calls if event == "stopped" and name in first)
    start_new = next(t for event, name, t in calls if event == "start" and name == pods[0]["metadata"]["name"])
    assert stop_old < start_new
    assert k.kubelet.max_running[f"{namespace}/gpu"] == 1  # never two Pods at once (one GPU)


def test_atomic_upgrade_rolls_back_when_pods_never_get_ready(kube_server: KubeServer, namespace: str):
    k = kube_server
    k.helm("install", "app", CHART, "-n", namespace, "--wait")
    proc = k.helm(
        "upgrade",
        "app",
        CHART,
        "-n",
        namespace,
        "--atomic",
        "--wait",
        "--timeout",
        "3s",
        "--set",
        "image.repository=crash",
        check=False,
    )
    assert proc.returncode != 0
    assert "rolled back due to atomic being set" in proc.stderr
    history = json.loads(k.helm("history", "app", "-n", namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "failed", "deployed"]
    image = k.call(k.cluster.get, "apps/v1", "Deployment", namespace, "app")["spec"]["template"]["spec"]["containers"][
        0
    ]["image"]
    assert image == "docker.io/library/nginx:1.27"
