"""The Kubernetes 1.32 API schemas: OpenAPI v3 documents, patch metadata and unknown-field checks.

Decision (what helm 3.17 and kubectl 1.32 need, found by experiment against this server):

* ``helm install/upgrade`` builds its objects with kubectl's ``Validator(Strict)``. That validator first asks
  the OpenAPI **v3** document of the object's group-version whether the PATCH operation of the kind accepts the
  ``fieldValidation`` query parameter (``QueryParamVerifierV3``). A real 1.32 server says yes, so the client
  skips client-side schema validation and lets the server check fields. Only when ``/openapi/v3`` is missing does
  it fall back to ``/openapi/v2`` (gnostic protobuf) and validate on the client.
* ``kubectl apply`` reads ``x-kubernetes-patch-merge-key``/``-strategy`` from the v3 document to build its
  strategic merge patch (falling back to compiled-in Go structs).

So this server serves ``/openapi/v3`` (the discovery index and one document per group-version) built from the
upstream Kubernetes 1.32 definitions that the ``kubernetes-validate`` package bundles (generated from the
official ``swagger.json``), with PATCH operations that declare ``fieldValidation``, and it does the field
validation on the server like a real API server: ``fieldValidation=Strict`` rejects unknown fields with 400
(``strict decoding error: unknown field "spec.foo"``), ``Warn`` (the default) returns a ``Warning: 299`` header,
``Ignore`` says nothing. ``/openapi/v2`` is not served (404): clients only use it as a fallback.

The same definitions drive the server's strategic merge patch (list merge keys and strategies), so patch
behaviour follows the upstream schema instead of a hand-written table.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from importlib import resources
from typing import Any

K8S_SCHEMA_VERSION = "v1.32.0"
_REF_PREFIX = "#/$defs/"


@functools.cache
def definitions() -> dict[str, dict]:
    """All Kubernetes 1.32 type definitions keyed by their OpenAPI name (``io.k8s.api.apps.v1.Deployment``).

    Loaded from the ``kubernetes-validate`` package data (JSON schema generated from the upstream swagger).
    Raises ``FileNotFoundError`` when the package lacks the 1.32 schemas.
    """
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"{K8S_SCHEMA_VERSION}-local"
    with (base / "_definitions.json").open("r", encoding="utf-8") as handle:
        return json.load(handle)["$defs"]


@functools.cache
def gvk_index() -> dict[tuple[str, str, str], str]:
    """``(group, version, kind) -> definition name`` for every top-level kind."""
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            key = (gvk.get("group", ""), gvk["version"], gvk["kind"])
            # meta/v1 kinds such as DeleteOptions are listed under every group; keep the most specific name
            index.setdefault(key, name)
    return index


def schema_for(group: str, version: str, kind: str) -> dict | None:
    """The definition of a kind (``("apps", "v1", "Deployment")``) or ``None`` when unknown."""
    name = gvk_index().get((group, version, kind))
    return definitions()[name] if name else None


def resolve(schema: dict | None) -> dict | None:
    """Follow ``$ref`` (and single-element ``allOf``) to the referenced definition."""
    seen = 0
    while schema is not None and seen < 20:
        seen += 1
        ref = schema.get("$ref")
        if ref is None and len(schema.get("allOf", [])) == 1:
            ref = schema["allOf"][0].get("$ref")
        if ref is None:
            return schema
        schema = definitions().get(ref[len(_REF_PREFIX) :])
    return schema


def property_schema(schema: dict | None, key: str) -> dict | None:
    """The (unresolved) schema of property ``key`` of an object schema, or of the map value type."""
    schema = resolve(schema)
    if schema is None:
        return None
    props = schema.get("properties")
    if props and key in props:
        return props[key]
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        return extra
    return None


def items_schema(schema: dict | None) -> dict | None:
    """The item schema of an array schema."""
    schema = resolve(schema)
    if schema is None:
        return None
    items = schema.get("items")
    return items if isinstance(items, dict) else None


def patch_meta(prop: dict | None) -> tuple[list[str], str | None]:
    """``(strategies, merge_key)`` from a property's ``x-kubernetes-patch-strategy``/``-merge-key``.

    Strategies are e.g. ``["merge"]``, ``["merge", "retainKeys"]``, ``["retainKeys"]`` or ``[]`` (replace).
    """
    if not prop:
        return [], None
    strategy = prop.get("x-kubernetes-patch-strategy") or ""
    strategies = [s for s in strategy.split(",") if s]
    return strategies, prop.get("x-kubernetes-patch-merge-key")


# -- unknown fields (server-side field validation) -------------------------------------------------------------


def unknown_fields(obj: Any, schema: dict | None, path: str = "") -> list[str]:
    """Dotted paths (``spec.template.spec.containers[0].foo``) of fields the schema does not declare.

    Mirrors the API server's strict decoding: objects with declared ``properties`` and no
    ``additionalProperties``/``x-kubernetes-preserve-unknown-fields`` reject other keys.
    """
    schema = resolve(schema)
    if schema is None:
        return []
    found: list[str] = []
    if isinstance(obj, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            sub_path = f"{path}.{key}" if path else key
            if props is not None and key in props:
                found.extend(unknown_fields(value, props[key], sub_path))
            elif isinstance(extra, dict):
                found.extend(unknown_fields(value, extra, sub_path))
            elif props is not None and extra is None:
                found.append(sub_path)
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, value in enumerate(obj):
                found.extend(unknown_fields(value, items, f"{path}[{index}]"))
    return found


# -- OpenAPI v3 documents --------------------------------------------------------------------------------------

_SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "description": "IntOrString is a type that can hold an int32 or a string.",
        "type": "string",
        "format": "int-or-string",
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "description": "Quantity is a fixed-point representation of a number.",
        "type": "string",
    },
}


def _to_oas3(node: Any) -> Any:
    """Turn the JSON-schema flavoured definition into OpenAPI 3.0 schema objects as the API server serves."""
    if isinstance(node, list):
        return [_to_oas3(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            out["type"] = types[0] if len(types) == 1 else types
        elif key == "$ref":
            continue
        elif key == "enum" and set(node.get("type", [])) <= {"string", "null"} and len(value) == 1:
            continue  # apiVersion/kind pinning added by the JSON-schema conversion
        else:
            out[key] = _to_oas3(value)
    ref = node.get("$ref")
    if ref:
        target = "#/components/schemas/" + ref[len(_REF_PREFIX) :]
        if out:
            out["allOf"] = [{"$ref": target}]
        else:
            out = {"$ref": target}
    return out


def _refs(node: Any, into: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            into.add(ref[len(_REF_PREFIX) :])
        for value in node.values():
            _refs(value, into)
    elif isinstance(node, list):
        for value in node:
            _refs(value, into)


def _closure(names: set[str]) -> set[str]:
    defs = definitions()
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        found: set[str] = set()
        _refs(defs[name], found)
        todo.extend(found - seen)
    return seen


def _query(name: str, description: str, schema_type: str = "string") -> dict:
    return {"name": name, "in": "query", "description": description, "schema": {"type": schema_type}}


def _op(action: str, gvk: dict, op_id: str, schema_ref: str | None, body: bool, params: list[dict]) -> dict:
    op: dict[str, Any] = {
        "operationId": op_id,
        "parameters": params,
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    }
    if schema_ref:
        content = {"schema": {"$ref": schema_ref}}
        op["responses"]["200"]["content"] = {"application/json": content, "application/yaml": content}
    if body and schema_ref:
        op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": schema_ref}}}, "required": True}
    return op


def openapi_v3_document(group: str, version: str, resource_types: list) -> dict:
    """The OpenAPI 3.0 document of one group-version (``/openapi/v3/apis/apps/v1``).

    ``resource_types`` are :class:`lab.kube.resources.ResourceType` of that group-version. PATCH operations
    declare ``dryRun``, ``fieldManager``, ``fieldValidation`` and ``force``, as the API server does.
    """
    defs = definitions()
    roots: set[str] = {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
        "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
    }
    paths: dict[str, dict] = {}
    prefix = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    for rt in resource_types:
        name = gvk_index().get((group, version, rt.kind))
        if not name:
            continue
        roots.add(name)
        list_name = gvk_index().get((group, version, rt.kind + "List"))
        if list_name:
            roots.add(list_name)
        gvk = {"group": group, "version": version, "kind": rt.kind}
        ref = "#/components/schemas/" + name
        list_ref = "#/components/schemas/" + list_name if list_name else None
        scope = "Namespaced" if rt.namespaced else ""
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        write = [
            _query("dryRun", "When present, indicates that modifications should not be persisted."),
            _query("fieldManager", "fieldManager is a name associated with the actor or entity making changes."),
            _query("fieldValidation", "Ignore, Warn (default) or Strict handling of unknown or duplicate fields."),
        ]
        path_params = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
        if rt.namespaced:
            path_params.append({"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}})
        list_params = [
            _query("labelSelector", "A selector to restrict the list of returned objects by their labels."),
            _query("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
            _query("watch", "Watch for changes to the described resources.", "boolean"),
            _query(
                "resourceVersion",
                "resourceVersion sets a constraint on what resource versions a request may be served from.",
            ),
            _query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
            _query("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
            _query("continue", "The continue option should be set when retrieving more results from the server."),
        ]
        collection: dict[str, Any] = {
            "get": _op("list", gvk, f"list{scope}{rt.kind}", list_ref, False, list_params),
            "post": _op("post", gvk, f"create{scope}{rt.kind}", ref, True, write),
            "delete": _op("deletecollection", gvk, f"deletecollection{scope}{rt.kind}", None, False, list_params),
        }
        if rt.namespaced:
            collection["parameters"] = [path_params[1]]
        paths[base] = collection
        patch_params = [*write, _query("force", "Force is going to force Apply requests.", "boolean")]
        item = {
            "get": _op("get", gvk, f"read{scope}{rt.kind}", ref, False, []),
            "put": _op("put", gvk, f"replace{scope}{rt.kind}", ref, True, write),
            "patch": _op("patch", gvk, f"patch{scope}{rt.kind}", ref, False, patch_params),
            "delete": _op(
                "delete",
                gvk,
                f"delete{scope}{rt.kind}",
                None,
                False,
                [
                    _query(
                        "gracePeriodSeconds", "The duration in seconds before the object should be deleted.", "integer"
                    ),
                    _query("propagationPolicy", "Orphan, Background or Foreground garbage collection."),
                    _query("dryRun", "When present, indicates that modifications should not be persisted."),
                ],
            ),
            "parameters": path_params,
        }
        item["patch"]["requestBody"] = {
            "content": {
                media: {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}}
                for media in (
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                    "application/apply-patch+yaml",
                )
            },
            "required": True,
        }
        paths[f"{base}/{{name}}"] = item
        if rt.namespaced:
            paths[f"{prefix}/{rt.plural}"] = {
                "get": _op("list", gvk, f"list{rt.kind}ForAllNamespaces", list_ref, False, list_params)
            }
        for sub in rt.subresources:
            if sub == "status":
                paths[f"{base}/{{name}}/status"] = {
                    "get": _op("get", gvk, f"read{scope}{rt.kind}Status", ref, False, []),
                    "put": _op("put", gvk, f"replace{scope}{rt.kind}Status", ref, True, write),
                    "patch": _op("patch", gvk, f"patch{scope}{rt.kind}Status", ref, False, patch_params),
                    "parameters": path_params,
                }
            elif sub == "scale":
                scale_name = "io.k8s.api.autoscaling.v1.Scale"
                roots.add(scale_name)
                scale_ref = "#/components/schemas/" + scale_name
                scale_gvk = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
                paths[f"{base}/{{name}}/scale"] = {
                    "get": _op("get", scale_gvk, f"read{scope}{rt.kind}Scale", scale_ref, False, []),
                    "put": _op("put", scale_gvk, f"replace{scope}{rt.kind}Scale", scale_ref, True, write),
                    "patch": _op("patch", scale_gvk, f"patch{scope}{rt.kind}Scale", scale_ref, False, patch_params),
                    "parameters": path_params,
                }
            elif sub == "eviction":
                ev_name = "io.k8s.api.policy.v1.Eviction"
                roots.add(ev_name)
                paths[f"{base}/{{name}}/eviction"] = {
                    "post": _op(
                        "post",
                        {"group": "policy", "version": "v1", "kind": "Eviction"},
                        f"create{scope}{rt.kind}Eviction",
                        "#/components/schemas/" + ev_name,
                        True,
                        write,
                    ),
                    "parameters": path_params,
                }
    schemas = {}
    for name in sorted(_closure(roots)):
        schemas[name] = copy.deepcopy(_SPECIAL[name]) if name in _SPECIAL else _to_oas3(defs[name])
    title = "Kubernetes"
    return {
        "openapi": "3.0.0",
        "info": {"title": title, "version": "v1.32.4+k3s1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        },
        "security": [{"BearerToken": []}],
    }


def document_hash(document: dict) -> str:
    """The ``hash`` query value of the OpenAPI v3 index (upper-case hex SHA-512 like the API server)."""
    return hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest().upper()
