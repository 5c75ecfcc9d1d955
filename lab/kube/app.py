"""The Kubernetes API over HTTP (aiohttp): discovery, OpenAPI v3, CRUD, patch, watch, subresources.

URL layout as the API server: ``/api/v1/...`` for the core group, ``/apis/<group>/<version>/...`` otherwise,
``namespaces/<ns>/<plural>[/<name>[/<subresource>]]`` for namespaced resources. Requests need
``Authorization: Bearer <token>`` (401 ``Status`` otherwise). Request bodies may be JSON, YAML (server-side
apply) or Kubernetes protobuf (Secrets/ConfigMaps from client-go typed clients); responses are JSON unless the
client accepts only protobuf, and ``Table`` when ``kubectl get`` asks for ``as=Table``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
from typing import Any

import yaml
from aiohttp import web

from lab.kube import protobuf
from lab.kube import schema as k8s_schema
from lab.kube.cluster import K8S_VERSION, Cluster
from lab.kube.errors import ApiError, bad_request, unauthorized
from lab.kube.resources import BY_PLURAL, group_versions, types_of
from lab.kube.table import to_table

log = logging.getLogger("lab.kube.api")

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}
CLUSTER_KEY = web.AppKey("cluster", Cluster)
TOKEN_KEY = web.AppKey("token", str)


def _json(obj: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(obj, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _status_response(exc: ApiError) -> web.Response:
    return _json(exc.status(), exc.code)


def not_found_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


@web.middleware
async def _auth(request: web.Request, handler):
    token = request.app[TOKEN_KEY]
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        return _status_response(unauthorized())
    try:
        return await handler(request)
    except ApiError as exc:
        return _status_response(exc)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path_qs)
        return _status_response(ApiError(500, "InternalError", f"Internal error occurred: {exc}", {}))


def make_kube_app(cluster: Cluster, token: str) -> web.Application:
    """The aiohttp application serving ``cluster`` as a Kubernetes 1.32 API for clients with ``token``.

    TLS is terminated by the caller (pass an ``ssl_context`` to the aiohttp site).
    """
    app = web.Application(middlewares=[_auth], client_max_size=64 * 2**20)
    app[CLUSTER_KEY] = cluster
    app[TOKEN_KEY] = token
    app.router.add_route("*", "/{tail:.*}", _dispatch)

    async def start_controllers(_app: web.Application) -> None:
        cluster.kick()

    async def close_watches(_app: web.Application) -> None:
        for watch in list(cluster._watches):
            watch.close()

    app.on_startup.append(start_controllers)
    app.on_shutdown.append(close_watches)
    return app


# -- discovery -------------------------------------------------------------------------------------------------


def _group_entry(group: str, versions: list[str]) -> dict:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def _resource_list(group: str, version: str) -> dict:
    resources = [entry for rt in types_of(group, version) for entry in rt.discovery()]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


@functools.cache
def _openapi_document(group: str, version: str) -> tuple[bytes, str]:
    doc = k8s_schema.openapi_v3_document(group, version, types_of(group, version))
    return json.dumps(doc, separators=(",", ":")).encode(), k8s_schema.document_hash(doc)


def _openapi_index() -> dict:
    paths = {}
    for group, versions in group_versions().items():
        for version in versions:
            key = f"api/{version}" if not group else f"apis/{group}/{version}"
            _body, digest = _openapi_document(group, version)
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}


# -- request helpers -------------------------------------------------------------------------------------------


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    ctype = request.content_type
    if ctype == protobuf.CONTENT_TYPE:
        try:
            return protobuf.decode(raw)
        except protobuf.ProtobufError as exc:
            raise ApiError(415, "UnsupportedMediaType", str(exc)) from exc
    if not raw:
        return None
    try:
        if ctype in ("application/apply-patch+yaml", "application/yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the body of the request was in an unknown format: {exc}") from exc


def _dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise bad_request(f'Invalid dryRun value: {value!r}: supported values: "All"')
    return bool(values)


def _field_validation(request: web.Request, rt, obj: Any, warnings: list[str]) -> None:
    directive = request.query.get("fieldValidation", "Warn")
    if directive not in ("Ignore", "Warn", "Strict"):
        raise bad_request(f'fieldValidation must be one of "Ignore", "Warn" or "Strict", got {directive!r}')
    if directive == "Ignore" or not isinstance(obj, dict):
        return
    schema = k8s_schema.schema_for(rt.group, rt.version, rt.kind)
    unknown = k8s_schema.unknown_fields(obj, schema)
    if not unknown:
        return
    messages = [f'unknown field "{path}"' for path in unknown]
    if directive == "Strict":
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: strict decoding error: '
            + ", ".join(messages)
        )
    warnings.extend(messages)


def _warning_headers(warnings: list[str]) -> dict | None:
    if not warnings:
        return None
    return {"Warning": ", ".join('299 - "' + w.replace('"', '\\"') + '"' for w in warnings)}


def _respond(request: web.Request, obj: dict, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    accept = request.headers.get("Accept", "")
    headers = _warning_headers(warnings or [])
    wants_json = not accept or "json" in accept or "*/*" in accept
    if not wants_json and protobuf.CONTENT_TYPE in accept:
        try:
            return web.Response(
                body=protobuf.encode(obj), status=status, content_type=protobuf.CONTENT_TYPE, headers=headers
            )
        except protobuf.ProtobufError as exc:
            raise ApiError(406, "NotAcceptable", str(exc)) from exc
    if not wants_json and "yaml" in accept:
        return web.Response(text=yaml.safe_dump(obj), status=status, content_type="application/yaml", headers=headers)
    return _json(obj, status, headers)


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first


# -- dispatch --------------------------------------------------------------------------------------------------


async def _dispatch(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    path = request.path.rstrip("/") or "/"
    method = request.method
    log.debug("%s %s", method, request.path_qs)
    if path == "/version":
        return _json(K8S_VERSION)
    if path in ("/healthz", "/livez", "/readyz"):
        return web.Response(text="ok")
    if path == "/api":
        return _json(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}],
            }
        )
    if path == "/apis":
        groups = [_group_entry(g, vs) for g, vs in group_versions().items() if g]
        return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    if path == "/openapi/v3":
        return _json(_openapi_index())
    if path.startswith("/openapi/v3/"):
        key = path[len("/openapi/v3/") :]
        parts = key.split("/")
        if parts[0] == "api" and len(parts) == 2 and parts[1] in group_versions().get("", []):
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3 and parts[2] in group_versions().get(parts[1], []):
            group, version = parts[1], parts[2]
        else:
            raise not_found_path()
        body, digest = _openapi_document(group, version)
        return web.Response(
            body=body,
            content_type="application/json",
            headers={"Etag": f'"{digest}"', "Cache-Control": "public, immutable"},
        )
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 2:
        group = parts[1]
        if group not in group_versions() or group == "":
            raise not_found_path()
        if len(parts) == 2:
            return _json({"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, group_versions()[group])})
        version, rest = parts[2], parts[3:]
    else:
        raise not_found_path()
    if version not in group_versions().get(group, []):
        raise not_found_path()
    if not rest:
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        return _json(_resource_list(group, version))
    watch_path = False
    if rest[0] == "watch":
        watch_path, rest = True, rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in BY_PLURAL:
        if BY_PLURAL[(group, version, rest[2])].namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest:
        raise not_found_path()
    rt = BY_PLURAL.get((group, version, rest[0]))
    if rt is None or len(rest) > 3:
        raise not_found_path()
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in rt.subresources:
        raise not_found_path()
    if rt.namespaced and name is not None and namespace is None:
        raise not_found_path()
    if name is None:
        return await _collection(request, cluster, rt, namespace, watch_path)
    return await _item(request, cluster, rt, namespace, name, sub)


async def _collection(request: web.Request, cluster: Cluster, rt, namespace: str | None, watch_path: bool):
    q = request.query
    method = request.method
    if method == "GET":
        if watch_path or q.get("watch") in ("true", "1"):
            return await _watch(request, cluster, rt, namespace)
        limit = int(q["limit"]) if q.get("limit", "").isdigit() else None
        listing = cluster.api_list(
            rt, namespace, q.get("labelSelector"), q.get("fieldSelector"), limit, q.get("continue")
        )
        if _wants_table(request):
            table = to_table(
                rt.kind, listing["items"], listing["metadata"]["resourceVersion"], q.get("includeObject", "Metadata")
            )
            if "continue" in listing["metadata"]:
                table["metadata"]["continue"] = listing["metadata"]["continue"]
            return _json(table)
        return _respond(request, listing)
    if method == "POST":
        body = await _body(request)
        warnings: list[str] = []
        _field_validation(request, rt, body, warnings)
        obj = cluster.api_create(rt, namespace, body, dry_run=_dry_run(request))
        return _respond(request, obj, 201, warnings)
    if method == "DELETE":
        body = await _body(request) or {}
        options = dict(body)
        if q.get("propagationPolicy"):
            options["propagationPolicy"] = q["propagationPolicy"]
        listing = cluster.api_delete_collection(
            rt, namespace, q.get("labelSelector"), q.get("fieldSelector"), options, _dry_run(request)
        )
        return _respond(request, listing)
    raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def _delete_options(request: web.Request, body: Any) -> dict:
    options = dict(body) if isinstance(body, dict) else {}
    q = request.query
    if q.get("propagationPolicy"):
        options["propagationPolicy"] = q["propagationPolicy"]
    if q.get("gracePeriodSeconds", "").lstrip("-").isdigit():
        options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
    if q.get("orphanDependents") in ("true", "false"):
        options["orphanDependents"] = q["orphanDependents"] == "true"
    policy = options.get("propagationPolicy")
    if policy not in (None, "Orphan", "Background", "Foreground"):
        raise bad_request(f"propagationPolicy: Unsupported value: {policy!r}")
    return options


async def _item(request: web.Request, cluster: Cluster, rt, namespace: str | None, name: str, sub: str | None):
    method = request.method
    if sub == "scale":
        if method == "GET":
            return _respond(request, cluster.api_get_scale(rt, namespace or "", name))
        if method in ("PUT", "PATCH"):
            body = await _body(request)
            patch_type = None
            if method == "PATCH":
                patch_type = PATCH_TYPES.get(request.content_type)
                if patch_type is None:
                    raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
            return _respond(
                request, cluster.api_update_scale(rt, namespace or "", name, body, patch_type, _dry_run(request))
            )
    elif sub == "eviction":
        if method == "POST":
            body = await _body(request)
            return _respond(request, cluster.api_evict(namespace or "", name, body), 201)
    elif sub == "binding":
        if method == "POST":
            body = await _body(request)
            return _respond(request, cluster.api_bind(namespace or "", name, body), 201)
    elif sub == "log":
        if method == "GET":
            pod = cluster.api_get(rt, namespace, name)
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Pending":
                raise bad_request(
                    f'container "{pod["spec"]["containers"][0]["name"]}" in pod "{name}" is waiting '
                    "to start: ContainerCreating"
                )
            return web.Response(text="", content_type="text/plain")
    elif method == "GET":
        obj = cluster.api_get(rt, namespace, name)
        if _wants_table(request):
            return _json(
                to_table(
                    rt.kind, [obj], obj["metadata"]["resourceVersion"], request.query.get("includeObject", "Metadata")
                )
            )
        return _respond(request, obj)
    elif method == "PUT":
        body = await _body(request)
        warnings: list[str] = []
        _field_validation(request, rt, body, warnings)
        obj = cluster.api_update(rt, namespace, name, body, sub, _dry_run(request))
        return _respond(request, obj, 200, warnings)
    elif method == "PATCH":
        patch_type = PATCH_TYPES.get(request.content_type)
        if patch_type is None:
            raise ApiError(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {request.content_type}"
            )
        body = await _body(request)
        if patch_type == "apply" and not request.query.get("fieldManager"):
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
            )
        existed = cluster.stored(rt, namespace if rt.namespaced else "", name) is not None
        warnings = []
        if patch_type in ("apply", "merge") and isinstance(body, dict):
            _field_validation(request, rt, body, warnings)
        obj = cluster.api_patch(
            rt,
            namespace,
            name,
            patch_type,
            body,
            sub,
            _dry_run(request),
            request.query.get("fieldManager"),
            request.query.get("force") == "true",
        )
        return _respond(request, obj, 200 if existed else 201, warnings)
    elif method == "DELETE" and sub is None:
        body = await _body(request)
        options = _delete_options(request, body)
        dry_run = _dry_run(request) or (options.get("dryRun") or []) == ["All"]
        return _respond(request, cluster.api_delete(rt, namespace, name, options, dry_run))
    raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


# -- watch -----------------------------------------------------------------------------------------------------


async def _watch(request: web.Request, cluster: Cluster, rt, namespace: str | None) -> web.StreamResponse:
    q = request.query
    watch = cluster.api_watch(
        rt,
        namespace,
        q.get("labelSelector"),
        q.get("fieldSelector"),
        q.get("resourceVersion"),
        q.get("sendInitialEvents") == "true",
    )
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    loop = asyncio.get_running_loop()
    try:
        timeout = float(q.get("timeoutSeconds") or 1800)
    except ValueError:
        timeout = 1800.0
    deadline = loop.time() + timeout
    try:
        await response.prepare(request)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                event = await asyncio.wait_for(watch.queue.get(), min(remaining, 5.0))
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                continue
            if event is None:
                break
            await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        cluster.stop_watch(watch)
    with contextlib.suppress(ConnectionResetError, ConnectionError, RuntimeError):
        await response.write_eof()
    return response
