"""Contract tests with the ``kubernetes`` Python client (typed APIs, DynamicClient, watch) over HTTPS."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
from kubernetes import client, watch
from kubernetes.dynamic import DynamicClient

from tests.kube.harness import TOKEN, KubeServer


@pytest.fixture(scope="module")
def api(kube_server: KubeServer):
    api_client = kube_server.api_client()
    yield api_client
    api_client.close()


def _deployment(name: str, replicas: int = 1, image: str = "nginx:1.27", strategy: str = "RollingUpdate") -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "strategy": {"type": strategy},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def _request(
    server: KubeServer, path: str, token: str | None = TOKEN, method: str = "GET", body: dict | None = None
) -> tuple[int, dict, dict]:
    """A raw HTTPS request (urllib, verifying the test CA): status, JSON body, headers."""
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method)  # noqa: S310 (https URL)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _raw(server: KubeServer, path: str, token: str | None = TOKEN) -> tuple[int, dict]:
    status, body, _headers = _request(server, path, token)
    return status, body


def test_bearer_token_required(kube_server):
    status, body = _raw(kube_server, "/api/v1/namespaces", token=None)
    assert status == 401
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
    assert _raw(kube_server, "/api/v1/namespaces", token="wrong")[0] == 401
    assert _raw(kube_server, "/api/v1/namespaces")[0] == 200


def test_discovery_documents(kube_server):
    status, version = _raw(kube_server, "/version")
    assert status == 200 and version["major"] == "1" and version["minor"] == "32"
    _, groups = _raw(kube_server, "/apis")
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "policy", "node.k8s.io", "storage.k8s.io"} <= names
    _, core = _raw(kube_server, "/api/v1")
    resources = {r["name"]: r for r in core["resources"]}
    assert resources["pods/eviction"]["group"] == "policy" and resources["pods/eviction"]["kind"] == "Eviction"
    assert resources["secrets"]["namespaced"] and not resources["nodes"]["namespaced"]
    _, apps = _raw(kube_server, "/apis/apps/v1")
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    _, index = _raw(kube_server, "/openapi/v3")
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    status, doc = _raw(kube_server, url)
    assert status == 200 and doc["openapi"].startswith("3.")
    assert _raw(kube_server, "/apis/nope.example.com/v1")[0] == 404


def test_crud_conflicts_and_status_errors(api, namespace):
    v1 = client.CoreV1Api(api)
    cm = v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"a": "1"})
    )
    assert cm.metadata.uid and cm.metadata.creation_timestamp and int(cm.metadata.resource_version) > 0
    with pytest.raises(client.ApiException) as exc:
        v1.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "AlreadyExists"

    stale = v1.read_namespaced_config_map("c", namespace)
    cm.data = {"a": "2"}
    updated = v1.replace_namespaced_config_map("c", namespace, cm)
    assert int(updated.metadata.resource_version) > int(stale.metadata.resource_version)
    stale.data = {"a": "3"}
    with pytest.raises(client.ApiException) as exc:
        v1.replace_namespaced_config_map("c", namespace, stale)
    body = json.loads(exc.value.body)
    assert exc.value.status == 409 and body["reason"] == "Conflict"
    # a no-op update keeps the resourceVersion
    again = v1.replace_namespaced_config_map("c", namespace, updated)
    assert again.metadata.resource_version == updated.metadata.resource_version

    v1.delete_namespaced_config_map("c", namespace)
    with pytest.raises(client.ApiException) as exc:
        v1.read_namespaced_config_map("c", namespace)
    body = json.loads(exc.value.body)
    assert exc.value.status == 404
    assert body["reason"] == "NotFound" and body["message"] == 'configmaps "c" not found'
    assert body["details"] == {"name": "c", "kind": "configmaps"}

    with pytest.raises(client.ApiException) as exc:
        v1.create_namespaced_config_map("no-such-ns", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    assert exc.value.status == 404 and json.loads(exc.value.body)["message"] == 'namespaces "no-such-ns" not found'


def test_lists_selectors_and_dry_run(api, namespace, kube_server):
    v1 = client.CoreV1Api(api)
    for name, tier in (("a", "web"), ("b", "gpu"), ("c", "cpu")):
        v1.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"tier": tier}))
        )
    _, listing = _raw(kube_server, f"/api/v1/namespaces/{namespace}/configmaps")
    assert listing["kind"] == "ConfigMapList" and listing["apiVersion"] == "v1"
    assert int(listing["metadata"]["resourceVersion"]) > 0

    def names(selector: str) -> list[str]:
        return sorted(i.metadata.name for i in v1.list_namespaced_config_map(namespace, label_selector=selector).items)

    assert names("tier in (web,gpu)") == ["a", "b"]
    assert names("tier!=gpu") == ["a", "c"]
    assert names("tier notin (web),tier") == ["b", "c"]
    assert names("!tier") == []
    picked = v1.list_namespaced_config_map(namespace, field_selector="metadata.name=b").items
    assert [i.metadata.name for i in picked] == ["b"]
    page = v1.list_namespaced_config_map(namespace, label_selector="tier", limit=2)
    assert len(page.items) == 2 and page.metadata._continue
    rest = v1.list_namespaced_config_map(namespace, label_selector="tier", limit=2, _continue=page.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["c"]

    dry = v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dry")), dry_run="All"
    )
    assert dry.metadata.name == "dry"
    assert "dry" not in names("")


def test_watch_streams_events(api, namespace):
    v1 = client.CoreV1Api(api)
    start = v1.list_namespaced_config_map(namespace).metadata.resource_version
    v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w", labels={"x": "1"}))
    )
    v1.patch_namespaced_config_map("w", namespace, {"data": {"k": "v"}})
    v1.patch_namespaced_config_map("w", namespace, {"metadata": {"labels": {"x": "2"}}})
    v1.delete_namespaced_config_map("w", namespace)
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            v1.list_namespaced_config_map, namespace, resource_version=start, label_selector="x=1", timeout_seconds=1
        )
    ]
    # leaving the selection shows as DELETED, as on a real API server
    assert events == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_generation_scale_and_deployment_rollout(api, namespace, kube_server):
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(namespace, _deployment("web", replicas=2))
    assert created.metadata.generation == 1
    assert created.spec.strategy.rolling_update.max_surge == "25%"
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"

    def rolled_out():
        d = kube_server.cluster.get("apps/v1", "Deployment", namespace, "web")
        return d if (d.get("status") or {}).get("availableReplicas") == 2 else None

    status = kube_server.wait_for(rolled_out, what="2 available replicas")["status"]
    assert status["observedGeneration"] == 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"

    rs = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(rs) == 1
    rs_hash = rs[0].metadata.labels["pod-template-hash"]
    assert rs[0].metadata.name == f"web-{rs_hash}"
    assert rs[0].metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert rs[0].metadata.owner_references[0].kind == "Deployment"
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"pod-template-hash={rs_hash}").items
    assert len(pods) == 2
    assert all(
        p.metadata.name.startswith(f"web-{rs_hash}-") and len(p.metadata.name) == len(f"web-{rs_hash}-") + 5
        for p in pods
    )

    scale = apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    assert apps.read_namespaced_deployment("web", namespace).metadata.generation == 2
    kube_server.wait_for(lambda: len(kube_server.cluster.list("v1", "Pod", namespace, "app=web")) == 3, what="3 pods")

    # a template change makes a new ReplicaSet and revision 2
    apps.patch_namespaced_deployment(
        "web", namespace, {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:1.28"}]}}}}
    )

    def revision_two_done():
        status = kube_server.cluster.get("apps/v1", "Deployment", namespace, "web")["status"]
        return all(status.get(k) == 3 for k in ("updatedReplicas", "replicas", "availableReplicas"))

    kube_server.wait_for(revision_two_done, what="rollout of revision 2")
    deployment = apps.read_namespaced_deployment("web", namespace)
    assert deployment.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert sorted(r.spec.replicas for r in apps.list_namespaced_replica_set(namespace).items) == [0, 3]


def test_dynamic_client_and_foreground_deletion(api, namespace, kube_server):
    dyn = DynamicClient(api)
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deployments.create(body=_deployment("gc", replicas=1), namespace=namespace)
    kube_server.wait_for(lambda: kube_server.cluster.list("v1", "Pod", namespace, "app=gc"), what="pod of gc")
    deployments.delete(name="gc", namespace=namespace, body={"propagationPolicy": "Foreground"})
    kube_server.wait_for(
        lambda: kube_server.cluster.get("apps/v1", "Deployment", namespace, "gc") is None,
        what="deployment gone after its dependents",
    )
    assert kube_server.call(kube_server.cluster.list, "apps/v1", "ReplicaSet", namespace, "app=gc") == []
    assert kube_server.call(kube_server.cluster.list, "v1", "Pod", namespace, "app=gc") == []

    deployments.create(body=_deployment("orphans", replicas=1), namespace=namespace)
    kube_server.wait_for(
        lambda: kube_server.cluster.list("apps/v1", "ReplicaSet", namespace, "app=orphans"), what="replicaset"
    )
    deployments.delete(name="orphans", namespace=namespace, body={"propagationPolicy": "Orphan"})
    kube_server.settle()
    rs = kube_server.call(kube_server.cluster.list, "apps/v1", "ReplicaSet", namespace, "app=orphans")
    assert len(rs) == 1 and not rs[0]["metadata"].get("ownerReferences")


def test_services_pvcs_and_secrets(api, namespace, kube_server):
    v1 = client.CoreV1Api(api)
    svc = v1.create_namespaced_service(
        namespace, {"metadata": {"name": "api"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 8000}]}}
    )
    assert svc.spec.cluster_ip.startswith("10.43.")
    assert svc.spec.ports[0].target_port == 8000 and svc.spec.ports[0].protocol == "TCP"
    v1.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        },
    )
    pvc = kube_server.wait_for(
        lambda: (
            (p := kube_server.cluster.get("v1", "PersistentVolumeClaim", namespace, "data"))["status"]["phase"]
            == "Bound"
            and p
        ),
        what="pvc bound",
    )
    assert pvc["spec"]["storageClassName"] == "local-path"
    assert pvc["status"]["capacity"] == {"storage": "2Gi"}
    assert kube_server.call(kube_server.cluster.get, "v1", "PersistentVolume", None, pvc["spec"]["volumeName"])

    v1.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    secret = v1.read_namespaced_secret("s", namespace)
    assert secret.data == {"k": "dg=="} and secret.type == "Opaque"
    snapshot = kube_server.call(kube_server.cluster.snapshot)
    mine = [s for s in snapshot["Secret"] if s["metadata"]["namespace"] == namespace]
    assert mine[0]["data"] == {"k": "<redacted>"}
    json.dumps(snapshot)


def test_field_validation_strict_and_warn(api, namespace, kube_server):
    bad = _deployment("strict")
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    status, body, _headers = _request(kube_server, path + "?fieldValidation=Strict", method="POST", body=bad)
    assert status == 400 and body["reason"] == "BadRequest"
    assert 'strict decoding error: unknown field "spec.template.spec.containers[0].imagePullPolicyy"' in body["message"]
    status, _body, headers = _request(
        kube_server, f"/apis/apps/v1/namespaces/{namespace}/deployments", method="POST", body=bad
    )
    assert status == 201
    assert "unknown field" in headers.get("Warning", "")


def test_invalid_deployment_selector_is_rejected(api, namespace):
    bad = _deployment("mismatch")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(client.ApiException) as exc:
        client.AppsV1Api(api).create_namespaced_deployment(namespace, bad)
    body = json.loads(exc.value.body)
    assert exc.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.template.metadata.labels"


def test_runtime_class_admission(api, namespace):
    v1 = client.CoreV1Api(api)
    pod = {
        "metadata": {"name": "gpu"},
        "spec": {"runtimeClassName": "missing", "containers": [{"name": "c", "image": "x:1"}]},
    }
    with pytest.raises(client.ApiException) as exc:
        v1.create_namespaced_pod(namespace, pod)
    assert exc.value.status == 403
    assert 'pod rejected: RuntimeClass "missing" not found' in json.loads(exc.value.body)["message"]
    pod["spec"]["runtimeClassName"] = "nvidia"
    assert v1.create_namespaced_pod(namespace, pod).spec.runtime_class_name == "nvidia"


def test_namespace_deletion_removes_contents(api, kube_server):
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "doomed"}})
    assert v1.read_namespace("doomed").status.phase == "Active"
    v1.create_namespaced_config_map("doomed", {"metadata": {"name": "c"}})
    client.AppsV1Api(api).create_namespaced_deployment("doomed", _deployment("d"))
    kube_server.wait_for(lambda: kube_server.cluster.list("v1", "Pod", "doomed"), what="pod in doomed")
    status, deleted, _headers = _request(kube_server, "/api/v1/namespaces/doomed", method="DELETE")
    assert status == 200 and deleted["status"]["phase"] == "Terminating"
    kube_server.wait_for(
        lambda: kube_server.cluster.get("v1", "Namespace", None, "doomed") is None, what="namespace gone"
    )
    assert kube_server.call(kube_server.cluster.list, "v1", "Pod", "doomed") == []
    assert kube_server.call(kube_server.cluster.list, "v1", "ConfigMap", "doomed") == []
