"""Contract tests with the real ``kubectl`` 1.32 against the twin's API server over HTTPS."""

from __future__ import annotations

import json
import textwrap
import time

from tests.kube.harness import KubeServer

DEPLOYMENT = textwrap.dedent(
    """\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      labels: {app.kubernetes.io/part-of: home-lab}
    spec:
      replicas: 2
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
            - name: web
              image: nginx:1.27
              env:
                - {name: A, value: "1"}
                - {name: B, value: "2"}
              ports: [{containerPort: 80}]
            - name: sidecar
              image: busybox:1.36
    """
)


def _json(server: KubeServer, *args: str) -> dict:
    return json.loads(server.kubectl(*args, "-o", "json").stdout)


def test_get_nodes_and_namespaces_tables(kube_server: KubeServer):
    out = kube_server.kubectl("get", "nodes").stdout
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert "k3s-worker-02   Ready" in out
    assert "control-plane" in out
    assert "kube-system" in kube_server.kubectl("get", "namespaces").stdout
    listing = _json(kube_server, "get", "nodes")
    assert listing["kind"] == "List" and len(listing["items"]) == 3


def test_apply_rollout_patch_scale_restart(kube_server: KubeServer, namespace: str):
    k = kube_server
    assert "deployment.apps/web created" in k.kubectl("-n", namespace, "apply", "-f", "-", stdin=DEPLOYMENT).stdout
    started = time.monotonic()
    out = k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=30s").stdout
    # the fake kubelet makes containers Ready after 0.3 s: rollout status must really wait for it
    assert time.monotonic() - started > 0.2
    assert 'deployment "web" successfully rolled out' in out
    deployment = _json(k, "-n", namespace, "get", "deploy", "web")
    assert deployment["status"]["readyReplicas"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in deployment["metadata"]["annotations"]

    # client-side apply of a changed manifest: strategic merge keeps the sidecar and merges env by name
    changed = DEPLOYMENT.replace('{name: B, value: "2"}', '{name: B, value: "3"}')
    assert "configured" in k.kubectl("-n", namespace, "apply", "-f", "-", stdin=changed).stdout
    assert "unchanged" in k.kubectl("-n", namespace, "apply", "-f", "-", stdin=changed).stdout
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=30s")
    deployment = _json(k, "-n", namespace, "get", "deploy", "web")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "sidecar"]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]
    assert deployment["metadata"]["generation"] == 2
    assert deployment["status"]["observedGeneration"] == 2

    k.kubectl(
        "-n",
        namespace,
        "patch",
        "deploy",
        "web",
        "-p",
        json.dumps({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}}),
    )
    k.kubectl(
        "-n",
        namespace,
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/metadata/labels/tier", "value": "cpu"}]),
        check=False,
    )
    k.kubectl(
        "-n",
        namespace,
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        json.dumps({"metadata": {"labels": {"tier": "cpu"}}}),
    )
    deployment = _json(k, "-n", namespace, "get", "deploy", "web")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert deployment["spec"]["template"]["spec"]["containers"][1]["image"] == "busybox:1.36"
    assert deployment["metadata"]["labels"]["tier"] == "cpu"

    assert "scaled" in k.kubectl("-n", namespace, "scale", "deploy/web", "--replicas=3").stdout
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=30s")
    pods = _json(k, "-n", namespace, "get", "pods", "-l", "app=web", "--field-selector=status.phase=Running")
    # Pods of the replaced ReplicaSet may still be terminating (deletionTimestamp set), as on a real cluster
    live = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 3
    assert all(p["status"]["containerStatuses"][0]["ready"] for p in live)

    k.kubectl("-n", namespace, "rollout", "restart", "deploy/web")
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=30s")
    replicasets = _json(k, "-n", namespace, "get", "rs", "-l", "app=web")["items"]
    revisions = sorted(int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) for rs in replicasets)
    assert revisions == [1, 2, 3, 4]
    active = [rs for rs in replicasets if rs["spec"]["replicas"]]
    assert len(active) == 1 and active[0]["status"]["readyReplicas"] == 3
    template = _json(k, "-n", namespace, "get", "deploy", "web")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]

    out = k.kubectl("-n", namespace, "get", "deploy", "web").stdout
    assert out.splitlines()[1].split()[:4] == ["web", "3/3", "3", "3"]


def test_rollout_status_fails_on_progress_deadline(kube_server: KubeServer, namespace: str):
    manifest = (
        DEPLOYMENT.replace("nginx:1.27", "crash:1")
        .replace("replicas: 2", "replicas: 1")
        .replace("spec:\n  replicas", "spec:\n  progressDeadlineSeconds: 100\n  replicas")
    )
    kube_server.kubectl("-n", namespace, "apply", "-f", "-", stdin=manifest)
    proc = kube_server.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=20s", check=False)
    assert proc.returncode != 0
    assert 'deployment "web" exceeded its progress deadline' in proc.stderr
    pod = _json(kube_server, "-n", namespace, "get", "pods", "-l", "app=web")["items"][0]
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "CrashLoopBackOff" in kube_server.kubectl("-n", namespace, "get", "pods").stdout


def test_cordon_drain_uncordon(fresh_server: KubeServer):
    k = fresh_server
    k.kubectl("create", "namespace", "ml")
    k.kubectl("-n", "ml", "apply", "-f", "-", stdin=DEPLOYMENT.replace("replicas: 2", "replicas: 3"))
    k.kubectl("-n", "ml", "rollout", "status", "deploy/web", "--timeout=30s")
    pods = _json(k, "-n", "ml", "get", "pods")["items"]
    assert len({p["spec"]["nodeName"] for p in pods}) == 3  # spread over the three nodes

    assert "cordoned" in k.kubectl("cordon", "k3s-worker-02").stdout
    node = _json(k, "get", "node", "k3s-worker-02")
    assert node["spec"]["unschedulable"] is True
    assert "SchedulingDisabled" in k.kubectl("get", "node", "k3s-worker-02").stdout

    out = k.kubectl("drain", "k3s-worker-02", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=30s")
    assert "evicting pod ml/web-" in out.stderr + out.stdout
    assert "node/k3s-worker-02 drained" in out.stdout
    k.kubectl("-n", "ml", "rollout", "status", "deploy/web", "--timeout=30s")
    pods = _json(k, "-n", "ml", "get", "pods")["items"]
    assert len(pods) == 3
    assert all(p["spec"]["nodeName"] != "k3s-worker-02" for p in pods)
    stopped = {name for event, name, _t in k.kubelet.calls if event == "stop"}
    assert len(stopped) == 1  # the evicted pod's containers were stopped by the kubelet

    k.kubectl("uncordon", "k3s-worker-02")
    assert "unschedulable" not in _json(k, "get", "node", "k3s-worker-02")["spec"]


def test_delete_waits_and_cascades(kube_server: KubeServer, namespace: str):
    kube_server.kubectl("-n", namespace, "apply", "-f", "-", stdin=DEPLOYMENT)
    kube_server.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=30s")
    out = kube_server.kubectl("-n", namespace, "delete", "deploy", "web", "--timeout=30s").stdout
    assert 'deployment.apps "web" deleted' in out
    kube_server.wait_for(lambda: not kube_server.cluster.list("v1", "Pod", namespace), what="pods garbage collected")
    proc = kube_server.kubectl("-n", namespace, "get", "deploy", "web", check=False)
    assert proc.returncode == 1
    assert 'Error from server (NotFound): deployments.apps "web" not found' in proc.stderr


def test_server_side_apply_and_dry_run(kube_server: KubeServer, namespace: str):
    k = kube_server
    assert (
        "serverside-applied" in k.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", stdin=DEPLOYMENT).stdout
    )
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=30s")
    before = _json(k, "-n", namespace, "get", "deploy", "web")
    out = k.kubectl("-n", namespace, "scale", "deploy/web", "--replicas=5", "--dry-run=server").stdout
    assert "scaled (server dry run)" in out
    k.kubectl(
        "-n",
        namespace,
        "patch",
        "deploy",
        "web",
        "--dry-run=server",
        "-p",
        json.dumps({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:9"}]}}}}),
    )
    after = _json(k, "-n", namespace, "get", "deploy", "web")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    changed = DEPLOYMENT.replace("nginx:1.27", "nginx:1.29")
    k.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", stdin=changed)
    assert (
        _json(k, "-n", namespace, "get", "deploy", "web")["spec"]["template"]["spec"]["containers"][0]["image"]
        == "nginx:1.29"
    )
