"""Unit tests of the API server's building blocks: patches, selectors, protobuf, schema, scheduler filters."""

from __future__ import annotations

import base64

import pytest

from lab.kube import protobuf
from lab.kube import schema as k8s_schema
from lab.kube.patch import PatchError, json_merge_patch, json_patch, strategic_merge_patch
from lab.kube.scheduler import node_matches_affinity, pod_requests, tolerates
from lab.kube.selectors import SelectorError, field_matcher, label_matcher, parse_label_selector

DEPLOYMENT = k8s_schema.schema_for("apps", "v1", "Deployment")
SERVICE = k8s_schema.schema_for("", "v1", "Service")


def _deployment() -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"a": "1"}, "finalizers": ["x"]},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "image": "a:1",
                            "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                            "ports": [{"containerPort": 80}],
                            "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                        },
                        {"name": "b", "image": "b:1"},
                    ],
                    "tolerations": [{"key": "k", "operator": "Exists"}],
                    "volumes": [{"name": "v", "emptyDir": {}}],
                }
            },
        },
    }


def test_strategic_merge_merges_lists_by_merge_key():
    patched = strategic_merge_patch(
        _deployment(),
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "a", "image": "a:2", "env": [{"name": "Z", "value": "3"}]}]}
                }
            }
        },
        DEPLOYMENT,
    )
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["a", "b"]
    assert containers[0]["image"] == "a:2"
    assert containers[0]["env"] == [
        {"name": "X", "value": "1"},
        {"name": "Y", "value": "2"},
        {"name": "Z", "value": "3"},
    ]
    assert containers[0]["ports"] == [{"containerPort": 80}]


def test_strategic_merge_replaces_atomic_lists_and_unions_primitive_merge_lists():
    patched = strategic_merge_patch(
        _deployment(),
        {
            "metadata": {"finalizers": ["y"]},
            "spec": {"template": {"spec": {"tolerations": [{"key": "gpu", "operator": "Equal", "value": "true"}]}}},
        },
        DEPLOYMENT,
    )
    assert patched["metadata"]["finalizers"] == ["x", "y"]
    assert patched["spec"]["template"]["spec"]["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": "true"}]


def test_strategic_merge_directives_from_three_way_merges():
    patch = {
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None},
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [
                        {
                            "name": "a",
                            "env": [{"name": "X", "$patch": "delete"}],
                            "$setElementOrder/env": [{"name": "Y"}],
                        },
                    ],
                    "volumes": [{"$patch": "replace"}, {"name": "w", "configMap": {"name": "c"}}],
                }
            },
        },
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"], "labels": {"$patch": "replace", "b": "2"}},
    }
    patched = strategic_merge_patch(_deployment(), patch, DEPLOYMENT)
    assert patched["spec"]["strategy"] == {"type": "Recreate"}
    spec = patched["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["b", "a"]
    assert spec["containers"][1]["env"] == [{"name": "Y", "value": "2"}]
    assert spec["volumes"] == [{"name": "w", "configMap": {"name": "c"}}]
    assert patched["metadata"]["finalizers"] == []
    assert patched["metadata"]["labels"] == {"b": "2"}


def test_strategic_merge_service_ports_by_port_and_null_deletes():
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}], "selector": {"a": "1", "b": "2"}}}
    patched = strategic_merge_patch(
        svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}], "selector": {"b": None}}}, SERVICE
    )
    assert patched["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]
    assert patched["spec"]["selector"] == {"a": "1"}


def test_strategic_merge_rejects_bad_directive():
    with pytest.raises(PatchError):
        strategic_merge_patch({"spec": {}}, {"spec": {"$patch": "explode"}}, DEPLOYMENT)


def test_json_merge_patch_rfc7386():
    assert json_merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}) == {
        "a": {"c": 2, "d": 3},
        "l": [2],
    }


def test_json_patch_applies_and_fails_on_test():
    doc = {"spec": {"replicas": 1}}
    assert json_patch(doc, [{"op": "replace", "path": "/spec/replicas", "value": 3}]) == {"spec": {"replicas": 3}}
    assert doc == {"spec": {"replicas": 1}}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "test", "path": "/spec/replicas", "value": 2}])


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web,tier!=gpu", {"app": "web", "tier": "gpu"}, False),
        ("app in (web, api),!legacy", {"app": "api"}, True),
        ("app notin (web)", {"app": "web"}, False),
        ("app notin (web)", {}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("", {"x": "y"}, True),
    ],
)
def test_label_selectors(selector, labels, expected):
    assert label_matcher(selector)({"metadata": {"labels": labels}}) is expected


def test_label_selector_errors_and_parse():
    assert parse_label_selector("a in (x,y),b!=z") == [("a", "in", ["x", "y"]), ("b", "!=", ["z"])]
    with pytest.raises(SelectorError):
        parse_label_selector("a in (x")


def test_field_selectors():
    pod = {"metadata": {"name": "p", "namespace": "ml"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    assert field_matcher("spec.nodeName=n1,status.phase!=Pending", "Pod")(pod)
    assert not field_matcher("metadata.namespace=other", "Pod")(pod)
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.foo"):
        field_matcher("spec.foo=1", "Pod")


def test_protobuf_secret_roundtrip_and_envelope():
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sh.helm.release.v1.x.v1", "namespace": "ml", "labels": {"owner": "helm"}},
        "type": "helm.sh/release.v1",
        "data": {"release": base64.b64encode(b"\x00\x01binary").decode()},
    }
    body = protobuf.encode(secret)
    assert body.startswith(b"k8s\x00")
    decoded = protobuf.decode(body)
    assert decoded["metadata"] == secret["metadata"]
    assert decoded["data"] == secret["data"]
    assert decoded["type"] == "helm.sh/release.v1"
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(b"{}")


def test_unknown_fields_follow_the_schema():
    obj = _deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    obj["spec"]["bogus"] = 1
    obj["metadata"]["labels"]["any"] = "label keys are free"
    assert sorted(k8s_schema.unknown_fields(obj, DEPLOYMENT)) == [
        "spec.bogus",
        "spec.template.spec.containers[0].imagePullPolicyy",
    ]


def test_openapi_v3_document_declares_field_validation_on_patch():
    from lab.kube.resources import types_of

    doc = k8s_schema.openapi_v3_document("apps", "v1", types_of("apps", "v1"))
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert {"name": "fieldValidation", "in": "query"}.items() <= next(
        p for p in patch["parameters"] if p["name"] == "fieldValidation"
    ).items()
    containers = doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["type"] == "array"


def test_scheduler_filters():
    assert tolerates(
        [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        {"key": "gpu", "value": "true", "effect": "NoSchedule"},
    )
    assert not tolerates([{"key": "gpu", "operator": "Equal", "value": "false"}], {"key": "gpu", "value": "true"})
    assert tolerates([{"operator": "Exists"}], {"key": "anything", "effect": "NoExecute"})
    node = {"metadata": {"name": "n1", "labels": {"zone": "a", "gpus": "2"}}}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                    {
                        "matchExpressions": [
                            {"key": "gpus", "operator": "Gt", "values": ["1"]},
                            {"key": "ssd", "operator": "DoesNotExist"},
                        ]
                    },
                ]
            }
        }
    }
    assert node_matches_affinity({"affinity": affinity}, node)
    assert not node_matches_affinity({"affinity": affinity, "nodeSelector": {"zone": "b"}}, node)
    requests = pod_requests(
        {
            "containers": [
                {"resources": {"requests": {"memory": "1Gi", "cpu": "500m"}}},
                {"resources": {"requests": {"memory": "512Mi"}}},
            ],
            "initContainers": [{"resources": {"requests": {"memory": "4Gi"}}}],
        }
    )
    assert requests == {"memory": 4 * 2**30, "cpu": 0.5, "pods": 1}
