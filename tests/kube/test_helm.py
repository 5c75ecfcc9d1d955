"""Contract tests with the real ``helm`` binary: install/upgrade/rollback/uninstall with ``--wait``, ``--atomic``."""

from __future__ import annotations

import base64
import json

import pytest
from kubernetes import client, watch

from tests.kube.kube_helpers import CHART, UNKNOWN_IMAGE, helm, kjson, live_pods, wait_running
from tests.twin import HELM

pytestmark = pytest.mark.slow


def _release_secrets(twin, namespace: str) -> list[dict]:
    return kjson(twin, "-n", namespace, "get", "secrets", "-l", "owner=helm")["items"]


def _deployment(twin, namespace: str, name: str) -> dict:
    return kjson(twin, "-n", namespace, "get", "deploy", name)


def test_install_upgrade_rollback_uninstall(twin, namespace):
    k = twin
    out = helm(k, "install", "demo", CHART, "-n", namespace, "--wait", "--timeout", "60s").stdout
    assert "STATUS: deployed" in out
    deployment = _deployment(k, namespace, "demo")
    assert deployment["status"]["readyReplicas"] == 1
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert deployment["metadata"]["annotations"]["meta.helm.sh/release-name"] == "demo"
    # the PVC (WaitForFirstConsumer) is bound to a local-path volume on the node the Pod went to
    pvc = kjson(k, "-n", namespace, "get", "pvc", "demo-data")
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["storageClassName"] == "local-path"
    (pod,) = live_pods(k, namespace, "app.kubernetes.io/instance=demo")
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == pod["spec"]["nodeName"]
    assert kjson(k, "-n", namespace, "get", "svc", "demo")["spec"]["clusterIP"].startswith("10.43.")
    secret = kjson(k, "-n", namespace, "get", "secret", "demo-secret")
    assert base64.b64decode(secret["data"]["token"]) == b"s3cr3t-1"

    releases = _release_secrets(k, namespace)
    assert [s["metadata"]["name"] for s in releases] == ["sh.helm.release.v1.demo.v1"]
    assert releases[0]["type"] == "helm.sh/release.v1"
    assert releases[0]["metadata"]["labels"]["status"] == "deployed"

    helm(
        k,
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
    deployment = _deployment(k, namespace, "demo")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.io/library/nginx:1.28"
    assert deployment["status"]["readyReplicas"] == 2
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    config = kjson(k, "-n", namespace, "get", "configmap", "demo-config")
    assert config["data"]["message"] == "bye"
    secret = kjson(k, "-n", namespace, "get", "secret", "demo-secret")
    assert base64.b64decode(secret["data"]["token"]) == b"s3cr3t-2"  # stringData in a three-way patch
    values = json.loads(helm(k, "get", "values", "demo", "-n", namespace, "-o", "json").stdout)
    assert values == {"image": {"tag": "1.28"}, "message": "bye", "replicas": 2}

    helm(k, "rollback", "demo", "1", "-n", namespace, "--wait", "--timeout", "60s")
    deployment = _deployment(k, namespace, "demo")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.io/library/nginx:1.27"
    assert deployment["spec"]["replicas"] == 1
    # the first ReplicaSet is reused for the old template and becomes revision 3
    replicasets = kjson(k, "-n", namespace, "get", "rs")["items"]
    assert len(replicasets) == 2
    active = [rs for rs in replicasets if rs["spec"]["replicas"]]
    assert active[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"

    history = json.loads(helm(k, "history", "demo", "-n", namespace, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert history[2]["description"] == "Rollback to 1"
    listed = json.loads(helm(k, "list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["revision"], r["status"]) for r in listed] == [("demo", "3", "deployed")]

    assert "uninstalled" in helm(k, "uninstall", "demo", "-n", namespace, "--wait", "--timeout", "60s").stdout
    k.wait_for(lambda: not live_pods(k, namespace, "app.kubernetes.io/instance=demo"), what="pods gone")
    leftovers = kjson(k, "-n", namespace, "get", "deploy,rs,svc,configmap,pvc,secret", "-l", "app.kubernetes.io/name")
    assert leftovers["items"] == []
    assert _release_secrets(k, namespace) == []
    # the local-path volume is released and deleted with its claim (reclaim policy Delete)
    volume = pvc["spec"]["volumeName"]
    k.wait_for(lambda: k.kubectl("get", "pv", volume, check=False).returncode == 1, what=f"{volume} deleted")


TERMINAL_PHASES = ("Succeeded", "Failed")  # a Pod whose containers all stopped (its phase before it is removed)


def test_recreate_strategy_never_overlaps_old_and_new_pods(twin, namespace, api):
    k = twin
    helm(k, "install", "gpu", CHART, "-n", namespace, "--wait", "--timeout", "60s", "--set", "strategy=Recreate")
    (old,) = live_pods(k, namespace, "app.kubernetes.io/instance=gpu")
    start = client.CoreV1Api(api).list_namespaced_pod(namespace).metadata.resource_version

    helm(
        k,
        "upgrade",
        "gpu",
        CHART,
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "60s",
        "--set",
        "strategy=Recreate",
        "--set",
        "image.tag=1.28",
    )
    (new,) = wait_running(k, namespace, "app.kubernetes.io/instance=gpu")
    assert new["metadata"]["name"] != old["metadata"]["name"]

    # every Pod event of the namespace since before the upgrade, in resourceVersion order (a watch replays them)
    stream = watch.Watch().stream(
        client.CoreV1Api(api).list_namespaced_pod, namespace, resource_version=start, timeout_seconds=2
    )
    events = [(e["type"], e["object"].metadata.name, e["object"].status.phase) for e in stream]

    # the Deployment controller creates the new Pod once no old Pod runs: the old one has reached its terminal phase
    # (its containers stopped); its removal from the API may come just before or just after
    old_name, new_name = old["metadata"]["name"], new["metadata"]["name"]
    old_stopped = next(
        i for i, (t, n, phase) in enumerate(events) if n == old_name and (t == "DELETED" or phase in TERMINAL_PHASES)
    )
    new_created = next(i for i, (t, n, _p) in enumerate(events) if t == "ADDED" and n == new_name)
    assert old_stopped < new_created, events
    running: set[str] = set()  # Pods whose containers may run: not removed, not in a terminal phase
    most = 0
    for kind, name, phase in events:
        if kind == "DELETED" or phase in TERMINAL_PHASES:
            running.discard(name)
        else:
            running.add(name)
        most = max(most, len(running))
    assert most == 1, events  # never two Pods of the release running at once (one GPU)


def test_atomic_upgrade_rolls_back_when_pods_never_get_ready(twin, namespace):
    k = twin
    helm(k, "install", "app", CHART, "-n", namespace, "--wait", "--timeout", "60s")
    repository, tag = UNKNOWN_IMAGE.rsplit(":", 1)
    proc = helm(
        k,
        "upgrade",
        "app",
        CHART,
        "-n",
        namespace,
        "--atomic",
        "--wait",
        "--timeout",
        "5s",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        check=False,
    )
    assert proc.returncode != 0
    assert "rolled back due to atomic being set" in proc.stderr
    history = json.loads(helm(k, "history", "app", "-n", namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "failed", "deployed"]
    assert history[2]["description"] == "Rollback to 1"
    image = _deployment(k, namespace, "app")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "docker.io/library/nginx:1.27"
    # the Pod that could not pull its image is gone; the old one kept serving throughout
    (pod,) = wait_running(k, namespace, "app.kubernetes.io/instance=app")
    assert pod["spec"]["containers"][0]["image"] == "docker.io/library/nginx:1.27"


def test_helm_releases_info_reads_several_releases_in_one_call(twin, namespace, module_runner):
    """homelab.inference.helm_releases_info: status and user-supplied values of each release, none for a missing one,
    the same fields kubernetes.core.helm_info gives (less manifest, notes and hooks)."""
    from ansible_collections.homelab.inference.plugins.modules import helm_releases_info

    helm(twin, "install", "one", CHART, "-n", namespace, "--set", "message=hi")
    helm(twin, "install", "two", CHART, "-n", namespace, "--set", "replicas=0")
    args = {"kubeconfig": str(twin.kubeconfig), "binary_path": HELM, "release_namespace": namespace}
    result = module_runner(
        helm_releases_info, dict(args, release_names=["two", "absent", "one"], release_state=["all"])
    )
    assert not result.failed, result.get("msg")
    assert result["changed"] is False
    assert [entry["item"] for entry in result["results"]] == ["two", "absent", "one"]
    two, absent, one = result["results"]
    assert "status" not in absent
    assert one["status"]["values"] == {"message": "hi"} and two["status"]["values"] == {"replicas": 0}
    assert one["status"]["status"] == "deployed" and one["status"]["revision"] == "1"
    assert one["status"]["chart"].startswith("demo-") and one["status"]["namespace"] == namespace
    all_values = module_runner(helm_releases_info, dict(args, release_names=["one"], get_all_values=True))
    assert all_values["results"][0]["status"]["values"]["message"] == "hi"
    assert "replicas" in all_values["results"][0]["status"]["values"]  # the chart's default merged in
    bad = module_runner(helm_releases_info, dict(args, release_names=["one"], release_state=["everything"]))
    assert bad.failed and "value of release_state must be one or more of: all, deployed" in bad["msg"]
    assert bad["msg"].endswith("Got no match for: everything")
