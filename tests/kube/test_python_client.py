"""Contract tests with the ``kubernetes`` Python client (typed APIs, DynamicClient, watch) as our plugins use it."""

from __future__ import annotations

import json

import pytest
from kubernetes import client, watch
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError

from tests.kube.kube_helpers import deployment, kjson, live_pods, wait_running

pytestmark = pytest.mark.slow


def _status(exc: client.ApiException | DynamicApiError) -> dict:
    return json.loads(exc.body)


def test_crud_conflicts_and_status_errors(api, namespace):
    v1 = client.CoreV1Api(api)
    cm = v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"a": "1"})
    )
    assert cm.metadata.uid and cm.metadata.creation_timestamp and int(cm.metadata.resource_version) > 0
    with pytest.raises(client.ApiException) as exc:
        v1.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    assert exc.value.status == 409 and _status(exc.value)["reason"] == "AlreadyExists"

    stale = v1.read_namespaced_config_map("c", namespace)
    cm.data = {"a": "2"}
    updated = v1.replace_namespaced_config_map("c", namespace, cm)
    assert int(updated.metadata.resource_version) > int(stale.metadata.resource_version)
    stale.data = {"a": "3"}
    with pytest.raises(client.ApiException) as exc:
        v1.replace_namespaced_config_map("c", namespace, stale)
    body = _status(exc.value)
    assert exc.value.status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified; please apply your changes to the latest version" in body["message"]
    # a no-op update keeps the resourceVersion
    again = v1.replace_namespaced_config_map("c", namespace, updated)
    assert again.metadata.resource_version == updated.metadata.resource_version

    patched = v1.patch_namespaced_config_map("c", namespace, {"data": {"b": "x"}})
    assert patched.data == {"a": "2", "b": "x"}

    v1.delete_namespaced_config_map("c", namespace)
    with pytest.raises(client.ApiException) as exc:
        v1.read_namespaced_config_map("c", namespace)
    body = _status(exc.value)
    assert exc.value.status == 404
    assert body["reason"] == "NotFound" and body["message"] == 'configmaps "c" not found'
    assert body["details"] == {"name": "c", "kind": "configmaps"}

    with pytest.raises(client.ApiException) as exc:
        v1.create_namespaced_config_map("no-such-ns", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    assert exc.value.status == 404 and _status(exc.value)["message"] == 'namespaces "no-such-ns" not found'


def test_lists_selectors_and_dry_run(api, namespace):
    v1 = client.CoreV1Api(api)
    for name, tier in (("a", "web"), ("b", "gpu"), ("c", "cpu")):
        v1.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"tier": tier}))
        )
    listing = v1.list_namespaced_config_map(namespace)
    assert int(listing.metadata.resource_version) > 0

    def names(selector: str) -> list[str]:
        return sorted(i.metadata.name for i in v1.list_namespaced_config_map(namespace, label_selector=selector).items)

    assert names("tier in (web,gpu)") == ["a", "b"]
    assert names("tier!=gpu") == ["a", "c", "kube-root-ca.crt"]
    assert names("tier notin (web),tier") == ["b", "c"]
    assert names("!tier") == ["kube-root-ca.crt"]
    picked = v1.list_namespaced_config_map(namespace, field_selector="metadata.name=b").items
    assert [i.metadata.name for i in picked] == ["b"]
    page = v1.list_namespaced_config_map(namespace, label_selector="tier", limit=2)
    assert len(page.items) == 2 and page.metadata._continue
    rest = v1.list_namespaced_config_map(namespace, label_selector="tier", limit=2, _continue=page.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["c"]

    dry = v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dry")), dry_run="All"
    )
    assert dry.metadata.name == "dry" and dry.metadata.uid
    assert "dry" not in names("")
    v1.delete_namespaced_config_map("a", namespace, dry_run="All")
    assert "a" in names("")


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
    # leaving the selection shows as DELETED
    assert events == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def _deployment_names(api, namespace: str) -> list[str]:
    return sorted(d.metadata.name for d in client.AppsV1Api(api).list_namespaced_deployment(namespace).items)


def test_field_validation_strict_and_warn(api, namespace):
    # through the DynamicClient, as kubernetes.core sends manifests (the typed client would refuse the unknown
    # field itself before sending anything)
    deployments = DynamicClient(api).resources.get(api_version="apps/v1", kind="Deployment")
    bad = deployment("strict")
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    unknown = 'unknown field "spec.template.spec.containers[0].imagePullPolicyy"'
    with pytest.raises(DynamicApiError) as exc:
        deployments.create(body=bad, namespace=namespace, query_params=[("fieldValidation", "Strict")])
    body = _status(exc.value)
    assert exc.value.status == 400 and body["reason"] == "BadRequest"
    assert f"strict decoding error: {unknown}" in body["message"]
    with pytest.raises(DynamicApiError):
        deployments.create(
            body=bad, namespace=namespace, query_params=[("fieldValidation", "Strict"), ("dryRun", "All")]
        )
    assert _deployment_names(api, namespace) == []

    # the server's default (Warn) creates it and says why in a Warning header
    response = deployments.create(body=bad, namespace=namespace, serialize=False)
    assert response.status == 201
    assert response.headers.get("Warning", "").startswith('299 - "unknown field')
    assert "imagePullPolicyy" in response.headers["Warning"]
    assert _deployment_names(api, namespace) == ["strict"]


def test_invalid_deployment_selector_is_rejected(api, namespace):
    bad = deployment("mismatch")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(client.ApiException) as exc:
        client.AppsV1Api(api).create_namespaced_deployment(namespace, bad)
    body = _status(exc.value)
    assert exc.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.template.metadata.labels"


def test_deployment_generation_scale_and_rollout(api, namespace, twin):
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(namespace, deployment("web", image="nginx:1.27", replicas=2))
    assert created.metadata.generation == 1
    assert created.spec.strategy.rolling_update.max_surge == "25%"
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"

    def available(replicas: int, generation: int):
        d = apps.read_namespaced_deployment("web", namespace)
        s = d.status
        done = (
            s.observed_generation == generation
            and s.updated_replicas == replicas
            and s.available_replicas == replicas
            and s.replicas == replicas
        )
        return d if done else None

    status = twin.wait_for(lambda: available(2, 1), what="2 available replicas").status
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Available"].status == "True"
    assert conditions["Progressing"].reason == "NewReplicaSetAvailable"

    (rs,) = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    rs_hash = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"web-{rs_hash}"
    assert rs.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert rs.metadata.owner_references[0].kind == "Deployment"
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"pod-template-hash={rs_hash}").items
    assert len(pods) == 2
    assert all(p.metadata.name.startswith(f"web-{rs_hash}-") for p in pods)

    scale = apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    twin.wait_for(lambda: available(3, 2), what="3 available replicas")

    apps.patch_namespaced_deployment(
        "web", namespace, {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:1.28"}]}}}}
    )
    deployment_ = twin.wait_for(lambda: available(3, 3), what="rollout of revision 2")
    assert deployment_.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    replicasets = apps.list_namespaced_replica_set(namespace).items
    replicas = {r.metadata.annotations["deployment.kubernetes.io/revision"]: r.spec.replicas for r in replicasets}
    assert replicas == {"1": 0, "2": 3}


def test_dynamic_client_and_foreground_deletion(api, namespace, twin):
    dyn = DynamicClient(api)
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deployments.create(body=deployment("gc"), namespace=namespace)
    wait_running(twin, namespace, "app=gc")
    got = deployments.get(name="gc", namespace=namespace)
    assert got.metadata.labels["app"] == "gc"
    deployments.delete(name="gc", namespace=namespace, body={"propagationPolicy": "Foreground"})

    def gone():
        try:
            deployments.get(name="gc", namespace=namespace)
        except Exception as exc:  # kubernetes.dynamic.exceptions.NotFoundError
            return type(exc).__name__ == "NotFoundError"
        return False

    twin.wait_for(gone, what="deployment gone after its dependents")
    assert kjson(twin, "-n", namespace, "get", "rs", "-l", "app=gc")["items"] == []
    assert live_pods(twin, namespace, "app=gc") == []


def test_services_pvcs_and_secrets(api, namespace, twin):
    v1 = client.CoreV1Api(api)
    svc = v1.create_namespaced_service(
        namespace, {"metadata": {"name": "api"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 8000}]}}
    )
    assert svc.spec.cluster_ip.startswith("10.43.")
    assert svc.spec.ports[0].target_port == 8000 and svc.spec.ports[0].protocol == "TCP"

    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
    }
    v1.create_namespaced_persistent_volume_claim(namespace, claim)
    # local-path is the default class and binds only when a Pod uses the claim (WaitForFirstConsumer)
    twin.wait_for(
        lambda: any(e.reason == "WaitForFirstConsumer" for e in v1.list_namespaced_event(namespace).items),
        what="WaitForFirstConsumer event",
    )
    pvc = v1.read_namespaced_persistent_volume_claim("data", namespace)
    assert pvc.spec.storage_class_name == "local-path" and pvc.status.phase == "Pending"

    consumer = deployment("consumer")
    consumer["spec"]["template"]["spec"]["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]
    consumer["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "d", "mountPath": "/data"}]
    client.AppsV1Api(api).create_namespaced_deployment(namespace, consumer)
    (pod,) = wait_running(twin, namespace, "app=consumer")
    pvc = twin.wait_for(
        lambda: (p := v1.read_namespaced_persistent_volume_claim("data", namespace)).status.phase == "Bound" and p,
        what="claim bound",
    )
    assert pvc.status.capacity == {"storage": "2Gi"}
    pv = v1.read_persistent_volume(pvc.spec.volume_name)
    assert pv.spec.claim_ref.name == "data" and pv.spec.persistent_volume_reclaim_policy == "Delete"
    terms = pv.spec.node_affinity.required.node_selector_terms
    assert terms[0].match_expressions[0].values == [pod["spec"]["nodeName"]]

    v1.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    secret = v1.read_namespaced_secret("s", namespace)
    assert secret.data == {"k": "dg=="} and secret.type == "Opaque"


def test_runtime_class_admission(api, namespace):
    v1 = client.CoreV1Api(api)
    pod = {
        "metadata": {"name": "gpu"},
        "spec": {
            "runtimeClassName": "missing",
            "nodeSelector": {"kubernetes.io/hostname": "k3s-master"},
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
        },
    }
    with pytest.raises(client.ApiException) as exc:
        v1.create_namespaced_pod(namespace, pod)
    assert exc.value.status == 403
    assert 'pod rejected: RuntimeClass "missing" not found' in _status(exc.value)["message"]
    # the twin seeds the RuntimeClass the vLLM chart uses, as the GPU operator does on k3s
    pod["spec"]["runtimeClassName"] = "nvidia"
    assert v1.create_namespaced_pod(namespace, pod, dry_run="All").spec.runtime_class_name == "nvidia"


def test_namespace_deletion_removes_contents(api, twin, namespace):
    v1 = client.CoreV1Api(api)
    doomed = f"{namespace}-doomed"
    v1.create_namespace({"metadata": {"name": doomed}})
    assert v1.read_namespace(doomed).status.phase == "Active"
    v1.create_namespaced_config_map(doomed, {"metadata": {"name": "c"}})
    client.AppsV1Api(api).create_namespaced_deployment(doomed, deployment("d"))
    wait_running(twin, doomed, "app=d")
    deleted = v1.delete_namespace(doomed)  # the Namespace as it is now (a dict: its type is not fixed)
    assert deleted["status"]["phase"] == "Terminating"
    with pytest.raises(client.ApiException) as exc:
        v1.create_namespaced_config_map(doomed, {"metadata": {"name": "late"}})
    assert exc.value.status == 403 and "because it is being terminated" in _status(exc.value)["message"]

    def gone():
        try:
            v1.read_namespace(doomed)
        except client.ApiException as error:
            return error.status == 404
        return False

    twin.wait_for(gone, timeout=60, what="namespace gone")
    assert v1.list_namespaced_pod(doomed).items == []
    assert v1.list_namespaced_config_map(doomed).items == []
