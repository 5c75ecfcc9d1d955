"""Contract tests with the control plane's own ``kubectl`` 1.32 against the twin's real kube-apiserver."""

from __future__ import annotations

import json
import textwrap
import time

import pytest
import yaml
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError

from tests.kube.kube_helpers import (
    UNKNOWN_IMAGE,
    deployment,
    is_ready,
    kjson,
    live_pods,
    unschedulable_message,
    wait_running,
)

pytestmark = pytest.mark.slow

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
          terminationGracePeriodSeconds: 5
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


def _image(twin, namespace: str, name: str = "web") -> str:
    return kjson(twin, "-n", namespace, "get", "deploy", name)["spec"]["template"]["spec"]["containers"][0]["image"]


def _replicasets(twin, namespace: str, selector: str) -> dict[str, dict]:
    return {rs["metadata"]["name"]: rs for rs in kjson(twin, "-n", namespace, "get", "rs", "-l", selector)["items"]}


def _revision(obj: dict) -> int:
    return int(obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


def test_server_version_api_resources_and_nodes(twin):
    version = json.loads(twin.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.32.9"
    assert (version["serverVersion"]["major"], version["serverVersion"]["minor"]) == ("1", "32")
    assert version["clientVersion"]["gitVersion"] == "v1.32.9"  # kubectl built with the control plane

    resources = set(twin.kubectl("api-resources", "-o", "name").stdout.split())
    assert {
        "daemonsets.apps",
        "statefulsets.apps",
        "deployments.apps",
        "jobs.batch",
        "poddisruptionbudgets.policy",
        "leases.coordination.k8s.io",
        "runtimeclasses.node.k8s.io",
        "storageclasses.storage.k8s.io",
    } <= resources

    out = twin.kubectl("get", "nodes").stdout
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == {"k3s-master", "k3s-worker-01", "k3s-worker-02", "k3s-gpu-worker"}
    assert rows["k3s-master"][2] == "control-plane,master"
    assert all(row[4] == "v1.32.9" for row in rows.values())
    # the kubelets renew their Leases, as real ones do
    leases = {lease["metadata"]["name"] for lease in kjson(twin, "-n", "kube-node-lease", "get", "leases")["items"]}
    assert set(rows) <= leases


def test_apply_rollout_patch_scale_restart(twin, namespace):
    k = twin
    assert "deployment.apps/web created" in k.kubectl("-n", namespace, "apply", "-f", "-", stdin=DEPLOYMENT).stdout
    out = k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=60s").stdout
    assert 'deployment "web" successfully rolled out' in out
    deployment_ = kjson(k, "-n", namespace, "get", "deploy", "web")
    assert deployment_["status"]["readyReplicas"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in deployment_["metadata"]["annotations"]

    # client-side apply of a changed manifest: strategic merge keeps the sidecar and merges env by name
    changed = DEPLOYMENT.replace('{name: B, value: "2"}', '{name: B, value: "3"}')
    assert "configured" in k.kubectl("-n", namespace, "apply", "-f", "-", stdin=changed).stdout
    assert "unchanged" in k.kubectl("-n", namespace, "apply", "-f", "-", stdin=changed).stdout
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=60s")
    deployment_ = kjson(k, "-n", namespace, "get", "deploy", "web")
    containers = deployment_["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["web", "sidecar"]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]
    assert deployment_["metadata"]["generation"] == 2
    assert deployment_["status"]["observedGeneration"] == 2

    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}}
    k.kubectl("-n", namespace, "patch", "deploy", "web", "-p", json.dumps(patch))
    k.kubectl("-n", namespace, "patch", "deploy", "web", "--type=merge", "-p", '{"metadata":{"labels":{"tier":"cpu"}}}')
    json_patch = [{"op": "add", "path": "/metadata/annotations/owner", "value": "ml"}]
    k.kubectl("-n", namespace, "patch", "deploy", "web", "--type=json", "-p", json.dumps(json_patch))
    deployment_ = kjson(k, "-n", namespace, "get", "deploy", "web")
    assert [c["image"] for c in deployment_["spec"]["template"]["spec"]["containers"]] == ["nginx:1.28", "busybox:1.36"]
    assert deployment_["metadata"]["labels"]["tier"] == "cpu"
    assert deployment_["metadata"]["annotations"]["owner"] == "ml"

    assert "scaled" in k.kubectl("-n", namespace, "scale", "deploy/web", "--replicas=3").stdout
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=60s")
    # Pods of the replaced ReplicaSet may still be terminating (deletionTimestamp set)
    pods = wait_running(k, namespace, "app=web", count=3)
    assert all(p["spec"]["containers"][0]["image"] == "nginx:1.28" for p in pods)
    assert all(all(s["ready"] for s in p["status"]["containerStatuses"]) for p in pods)

    k.kubectl("-n", namespace, "rollout", "restart", "deploy/web")
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=60s")
    replicasets = _replicasets(k, namespace, "app=web").values()
    assert sorted(_revision(rs) for rs in replicasets) == [1, 2, 3, 4]
    active = [rs for rs in replicasets if rs["spec"]["replicas"]]
    assert len(active) == 1 and _revision(active[0]) == 4 and active[0]["status"]["readyReplicas"] == 3
    template = kjson(k, "-n", namespace, "get", "deploy", "web")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]

    out = k.kubectl("-n", namespace, "get", "deploy", "web").stdout
    assert out.splitlines()[1].split()[:4] == ["web", "3/3", "3", "3"]


def test_rollout_undo_reuses_the_old_replicaset(twin, namespace):
    k = twin
    k.kubectl("-n", namespace, "apply", "-f", "-", stdin=DEPLOYMENT)
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=60s")
    (first,) = _replicasets(k, namespace, "app=web").values()
    first_hash = first["metadata"]["labels"]["pod-template-hash"]
    assert first["metadata"]["name"] == f"web-{first_hash}" and _revision(first) == 1

    k.kubectl("-n", namespace, "set", "image", "deploy/web", "web=nginx:1.28")
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=60s")
    assert len(_replicasets(k, namespace, "app=web")) == 2

    out = k.kubectl("-n", namespace, "rollout", "undo", "deploy/web").stdout
    assert "rolled back" in out
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=60s")
    replicasets = _replicasets(k, namespace, "app=web")
    assert len(replicasets) == 2, "undo must scale the old ReplicaSet back up, not create a new one"
    reused = replicasets[first["metadata"]["name"]]
    assert reused["metadata"]["uid"] == first["metadata"]["uid"]
    assert reused["metadata"]["labels"]["pod-template-hash"] == first_hash
    assert _revision(reused) == 3
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert reused["spec"]["replicas"] == 2
    assert _image(k, namespace) == "nginx:1.27"
    assert _revision(kjson(k, "-n", namespace, "get", "deploy", "web")) == 3
    pods = wait_running(k, namespace, "app=web", count=2)
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in pods} == {first_hash}
    history = k.kubectl("-n", namespace, "rollout", "history", "deploy/web").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"]


def test_unknown_image_never_becomes_available(twin, namespace):
    k = twin
    manifest = deployment("ghost", image=UNKNOWN_IMAGE)
    manifest["spec"]["progressDeadlineSeconds"] = 5
    k.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(manifest))
    proc = k.kubectl("-n", namespace, "rollout", "status", "deploy/ghost", "--timeout=3s", check=False)
    assert proc.returncode != 0
    assert "timed out waiting for the condition" in proc.stderr

    def pull_failed():
        pods = live_pods(k, namespace, "app=ghost")
        waiting = [(s["state"].get("waiting") or {}) for p in pods for s in p["status"].get("containerStatuses") or []]
        return waiting if waiting and waiting[0].get("reason") in ("ErrImagePull", "ImagePullBackOff") else None

    waiting = k.wait_for(pull_failed, what="image pull failure")
    assert "not-in-the-lab" in waiting[0]["message"]
    k.wait_for(lambda: "ImagePullBackOff" in k.kubectl("-n", namespace, "get", "pods").stdout, what="BackOff")

    # the Deployment controller gives up after progressDeadlineSeconds; rollout status then fails at once
    def deadline_exceeded():
        status = kjson(k, "-n", namespace, "get", "deploy", "ghost")["status"]
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        progressing = conditions.get("Progressing") or {}
        return status if progressing.get("reason") == "ProgressDeadlineExceeded" else None

    status = k.wait_for(deadline_exceeded, timeout=60, what="ProgressDeadlineExceeded")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "False"
    assert conditions["Available"]["reason"] == "MinimumReplicasUnavailable"
    assert not status.get("availableReplicas")
    proc = k.kubectl("-n", namespace, "rollout", "status", "deploy/ghost", "--timeout=30s", check=False)
    assert proc.returncode != 0
    assert 'deployment "ghost" exceeded its progress deadline' in proc.stderr


def test_cordon_drain_uncordon(twin, namespace):
    k = twin
    node = "k3s-worker-02"
    manifest = deployment("drained", replicas=2, nodeSelector={"kubernetes.io/hostname": node})
    k.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(manifest))
    k.kubectl("-n", namespace, "rollout", "status", "deploy/drained", "--timeout=60s")
    before = {p["metadata"]["name"] for p in live_pods(k, namespace, "app=drained")}
    try:
        assert "cordoned" in k.kubectl("cordon", node).stdout
        assert kjson(k, "get", "node", node)["spec"]["unschedulable"] is True
        assert "Ready,SchedulingDisabled" in k.kubectl("get", "node", node).stdout

        # only this test's Pods: the other tests' Pods on the node are none of its business
        out = k.kubectl(
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--pod-selector=app=drained",
            "--timeout=60s",
        )
        assert f"evicting pod {namespace}/drained-" in out.stderr + out.stdout
        assert f"node/{node} drained" in out.stdout
        k.wait_for(lambda: not (before & {p["metadata"]["name"] for p in live_pods(k, namespace, "app=drained")}))
        # the replacements may only go to the cordoned node: they wait
        message = unschedulable_message(k, namespace, "app=drained", "unschedulable")
        assert "1 node(s) were unschedulable" in message
    finally:
        k.kubectl("uncordon", node)
    assert "unschedulable" not in kjson(k, "get", "node", node)["spec"]
    pods = wait_running(k, namespace, "app=drained", count=2)
    assert {p["spec"]["nodeName"] for p in pods} == {node}
    assert not before & {p["metadata"]["name"] for p in pods}


def test_delete_cascades(twin, namespace):
    k = twin
    for name in ("background", "foreground", "orphan"):
        k.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(deployment(name, replicas=2)))
    for name in ("background", "foreground", "orphan"):
        k.kubectl("-n", namespace, "rollout", "status", f"deploy/{name}", "--timeout=60s")

    out = k.kubectl("-n", namespace, "delete", "deploy", "background", "--timeout=30s").stdout
    assert 'deployment.apps "background" deleted' in out
    proc = k.kubectl("-n", namespace, "get", "deploy", "background", check=False)
    assert proc.returncode == 1
    assert 'Error from server (NotFound): deployments.apps "background" not found' in proc.stderr
    k.wait_for(
        lambda: not kjson(k, "-n", namespace, "get", "rs,pods", "-l", "app=background")["items"],
        what="the garbage collector to delete the ReplicaSet and its Pods",
    )

    # foreground: the Deployment goes only after its dependents
    k.kubectl("-n", namespace, "delete", "deploy", "foreground", "--cascade=foreground", "--timeout=60s")
    assert not kjson(k, "-n", namespace, "get", "rs", "-l", "app=foreground")["items"]
    assert not live_pods(k, namespace, "app=foreground")

    k.kubectl("-n", namespace, "delete", "deploy", "orphan", "--cascade=orphan", "--timeout=30s")
    replicasets = k.wait_for(
        lambda: (
            (items := kjson(k, "-n", namespace, "get", "rs", "-l", "app=orphan")["items"])
            and not items[0]["metadata"].get("ownerReferences")
            and items
        ),
        what="the orphaned ReplicaSet to lose its owner",
    )
    assert len(replicasets) == 1 and replicasets[0]["status"]["readyReplicas"] == 2
    assert len(live_pods(k, namespace, "app=orphan")) == 2


def test_server_side_apply_and_dry_run(twin, namespace):
    k = twin
    out = k.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", stdin=DEPLOYMENT).stdout
    assert "serverside-applied" in out
    k.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=60s")
    before = kjson(k, "-n", namespace, "get", "deploy", "web", "--show-managed-fields")
    managers = {m["manager"]: m["operation"] for m in before["metadata"]["managedFields"]}
    assert managers["kubectl"] == "Apply"

    out = k.kubectl("-n", namespace, "scale", "deploy/web", "--replicas=5", "--dry-run=server").stdout
    assert "scaled (server dry run)" in out
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}}
    k.kubectl("-n", namespace, "patch", "deploy", "web", "--dry-run=server", "-p", json.dumps(patch))
    out = k.kubectl(
        "-n",
        namespace,
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        stdin=DEPLOYMENT.replace("replicas: 2", "replicas: 4"),
    ).stdout
    assert "serverside-applied (server dry run)" in out
    after = kjson(k, "-n", namespace, "get", "deploy", "web", "--show-managed-fields")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    changed = DEPLOYMENT.replace("nginx:1.27", "nginx:1.28")
    k.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", stdin=changed)
    assert _image(k, namespace) == "nginx:1.28"
    # diff against the server: nothing to change, then one change
    diff = ("-n", namespace, "diff", "--server-side", "--force-conflicts", "-f", "-")
    assert k.kubectl(*diff, stdin=changed).returncode == 0
    proc = k.kubectl(*diff, stdin=DEPLOYMENT, check=False)
    assert proc.returncode == 1 and "+        image: nginx:1.27" in proc.stdout


def test_server_side_apply_conflicts_between_field_managers(twin, api, namespace):
    k = twin
    manifest = yaml.safe_load(DEPLOYMENT)
    k.kubectl("-n", namespace, "apply", "--server-side", "--field-manager=helm-like", "-f", "-", stdin=DEPLOYMENT)

    # another manager applies a different value of a field the first one owns: 409 Conflict
    manifest["spec"]["replicas"] = 3
    other = yaml.safe_dump(manifest)
    proc = k.kubectl(
        "-n", namespace, "apply", "--server-side", "--field-manager=ansible-like", "-f", "-", stdin=other, check=False
    )
    assert proc.returncode != 0
    assert "Apply failed with 1 conflict" in proc.stderr
    assert 'conflict with "helm-like"' in proc.stderr and ".spec.replicas" in proc.stderr
    # the same through the DynamicClient (kubernetes.core's server-side apply): HTTP 409 with the field
    deployments = DynamicClient(api).resources.get(api_version="apps/v1", kind="Deployment")
    with pytest.raises(ConflictError) as exc:
        deployments.client.server_side_apply(
            deployments, body=manifest, namespace=namespace, field_manager="ansible-like"
        )
    status = json.loads(exc.value.body)
    assert exc.value.status == 409 and status["reason"] == "Conflict"
    assert status["details"]["causes"][0]["field"] == ".spec.replicas"
    assert kjson(k, "-n", namespace, "get", "deploy", "web")["spec"]["replicas"] == 2

    # the same value is no conflict: both managers then share the field
    manifest["spec"]["replicas"] = 2
    shared = yaml.safe_dump(manifest)
    k.kubectl("-n", namespace, "apply", "--server-side", "--field-manager=ansible-like", "-f", "-", stdin=shared)

    # --force-conflicts takes the field over
    k.kubectl(
        "-n",
        namespace,
        "apply",
        "--server-side",
        "--field-manager=ansible-like",
        "--force-conflicts",
        "-f",
        "-",
        stdin=other,
    )
    deployment_ = kjson(k, "-n", namespace, "get", "deploy", "web", "--show-managed-fields")
    assert deployment_["spec"]["replicas"] == 3
    owners = {
        m["manager"]: json.dumps(m.get("fieldsV1", {}))
        for m in deployment_["metadata"]["managedFields"]
        if m["operation"] == "Apply"
    }
    assert '"f:replicas"' in owners["ansible-like"]
    assert '"f:replicas"' not in owners["helm-like"]

    # the first manager applying its old value now conflicts with the new owner
    proc = k.kubectl(
        "-n", namespace, "apply", "--server-side", "--field-manager=helm-like", "-f", "-", stdin=DEPLOYMENT, check=False
    )
    assert proc.returncode != 0 and 'conflict with "ansible-like"' in proc.stderr


NEEDS_REFERENCES = textwrap.dedent(
    """\
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: needs-secret}
    spec:
      replicas: 1
      selector: {matchLabels: {app: needs-secret}}
      template:
        metadata: {labels: {app: needs-secret}}
        spec:
          containers:
            - name: main
              image: busybox:1.36
              env:
                - name: TOKEN
                  valueFrom: {secretKeyRef: {name: creds, key: token}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: needs-config}
    spec:
      replicas: 1
      selector: {matchLabels: {app: needs-config}}
      template:
        metadata: {labels: {app: needs-config}}
        spec:
          volumes: [{name: config, configMap: {name: settings}}]
          containers:
            - name: main
              image: busybox:1.36
              volumeMounts: [{name: config, mountPath: /etc/settings}]
    """
)


def test_pods_wait_for_the_secrets_and_configmaps_they_reference(twin, namespace):
    # The litellm role stores its Secrets before `helm install` because of this: the chart's Pod reads them
    k = twin
    k.kubectl("-n", namespace, "apply", "-f", "-", stdin=NEEDS_REFERENCES)

    def first_status(selector: str) -> dict:
        def posted():
            pods = live_pods(k, namespace, selector)
            return pods[0] if pods and pods[0]["status"].get("containerStatuses") else None

        return k.wait_for(posted, what=f"the kubelet's status of {selector}")

    first_status("app=needs-secret")
    first_status("app=needs-config")
    time.sleep(2)  # a few of the kubelet's syncs: nothing may start meanwhile
    (pod,) = live_pods(k, namespace, "app=needs-secret")
    waiting = pod["status"]["containerStatuses"][0]["state"].get("waiting") or {}
    assert waiting.get("reason") == "CreateContainerConfigError", pod["status"]["containerStatuses"]
    assert 'secret "creds" not found' in waiting.get("message", "")
    assert pod["status"]["phase"] == "Pending" and not is_ready(pod)
    (pod,) = live_pods(k, namespace, "app=needs-config")
    waiting = pod["status"]["containerStatuses"][0]["state"].get("waiting") or {}
    assert waiting.get("reason") == "ContainerCreating", pod["status"]["containerStatuses"]
    assert pod["status"]["phase"] == "Pending" and not is_ready(pod)

    # once they exist, the Pods start
    k.kubectl("-n", namespace, "create", "secret", "generic", "creds", "--from-literal=token=t")
    k.kubectl("-n", namespace, "create", "configmap", "settings", "--from-literal=a=b")
    wait_running(k, namespace, "app=needs-secret")
    wait_running(k, namespace, "app=needs-config", timeout=120)
