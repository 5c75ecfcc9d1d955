"""The Proxmox VE 8 HTTP API (``/api2/json``) over a ``ProxmoxHost``, as aiohttp handlers.

What a client sees follows pve-http-server: every body is ``{"data": ...}``; an error puts its message into the
HTTP reason phrase (``HTTP/1.1 500 Configuration file 'nodes/pve/lxc/999.conf' does not exist``) and, for
parameter errors, adds ``"errors": {param: message}`` (400 ``Parameter verification failed.``). Unknown paths
answer 501 ``Method 'GET /x' not implemented``. Authentication is API-token only:
``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET``; anything else is 401 with the real message
(``No ticket``, ``no such token 'X' for user 'Y'``, ``invalid token value!``). TLS is the runtime's business.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from lab.proxmox.host import ProxmoxError, ProxmoxHost, param_error

PREFIX = "/api2/json"
HOST_KEY = web.AppKey("proxmox_host", ProxmoxHost)
TOKENS_KEY = web.AppKey("proxmox_tokens", dict)
USER_KEY = web.RequestKey("proxmox_user", str)

_TOKEN_HEADER = re.compile(r"^PVEAPIToken=(?P<user>[^!=\s]+)!(?P<token>[^=\s]+)=(?P<secret>\S+)$")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_CONFIG_ID = re.compile(r"^[a-z][a-z_\-]*\d*$")
_TRUE = {"1", "yes", "on", "true"}
_FALSE = {"0", "no", "off", "false"}

# PUT /nodes/{node}/lxc/{vmid}/config: the part of pve-container's schema this twin implements.
# name -> (type, minimum, maximum)
CONFIG_SCHEMA: dict[str, tuple[str, int | None, int | None]] = {
    "memory": ("integer", 16, None),
    "swap": ("integer", 0, None),
    "cores": ("integer", 1, 8192),
    "hostname": ("dns-name", None, None),
    "description": ("string", None, 8192),
    "onboot": ("boolean", None, None),
}
PUT_EXTRA = ("digest", "delete", "revert")


def _json(data: Any, status: int = 200, reason: str | None = None, errors: Mapping[str, str] | None = None):
    body: dict[str, Any] = {"data": data}
    if errors:
        body["errors"] = dict(errors)
    if status >= 400 and reason:
        body["message"] = reason + "\n"
    return web.Response(
        status=status,
        reason=reason,
        body=json.dumps(body).encode(),
        content_type="application/json",
        charset="utf-8",
    )


def _error_response(exc: ProxmoxError) -> web.Response:
    # The reason phrase is one line of latin-1 text in HTTP/1.1.
    reason = exc.message.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace").decode("latin-1")
    return _json(None, status=exc.status, reason=reason, errors=exc.errors)


def _authenticate(request: web.Request) -> str:
    """Return ``USER@REALM!TOKENID`` for a valid API token header; raise ProxmoxError 401 otherwise."""
    tokens: dict[str, str] = request.app[TOKENS_KEY]
    header = request.headers.get("Authorization")
    if not header:
        raise ProxmoxError(401, "No ticket")
    if not header.startswith("PVEAPIToken="):
        raise ProxmoxError(401, "No ticket")
    match = _TOKEN_HEADER.match(header)
    if not match:
        raise ProxmoxError(401, "no tokenid specified")
    user, token, secret = match.group("user", "token", "secret")
    if "@" not in user:
        raise ProxmoxError(401, f"no such user ('{user}')")
    known_users = {tid.split("!", 1)[0] for tid in tokens}
    if user not in known_users:
        raise ProxmoxError(401, f"no such user ('{user}')")
    tokenid = f"{user}!{token}"
    if tokenid not in tokens:
        raise ProxmoxError(401, f"no such token '{token}' for user '{user}'")
    if not hmac.compare_digest(tokens[tokenid].encode(), secret.encode()):
        raise ProxmoxError(401, "invalid token value!")
    return tokenid


@web.middleware
async def _pve_middleware(request: web.Request, handler):
    path = request.path
    rel = path[len(PREFIX) :] if path.startswith(PREFIX) else path
    try:
        request[USER_KEY] = _authenticate(request)
        return await handler(request)
    except ProxmoxError as exc:
        return _error_response(exc)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return _error_response(ProxmoxError(501, f"Method '{request.method} {rel}' not implemented"))


async def _params(request: web.Request) -> dict[str, str]:
    """Query and form parameters (pve-http-server merges both)."""
    params = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (body or {}).items()})
        else:
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return params


def _parse_value(  # noqa: C901 - one branch per Proxmox parameter type and its bounds
    name: str, raw: str, kind: str, minimum: int | None, maximum: int | None
) -> Any:
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", raw.strip()):
            raise ValueError(f"type check ('integer') failed - got '{raw}'")
        value = int(raw)
        if minimum is not None and value < minimum:
            raise ValueError(f"value must have a minimum value of {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"value must have a maximum value of {maximum}")
        return value
    if kind == "boolean":
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return 1
        if lowered in _FALSE:
            return 0
        raise ValueError(f"type check ('boolean') failed - got '{raw}'")
    if kind == "dns-name":
        if not _DNS_NAME.match(raw):
            raise ValueError("value does not look like a valid DNS name")
        return raw
    if maximum is not None and len(raw) > maximum:
        raise ValueError(f"value may only be {maximum} characters long")
    return raw


def _id_list(raw: str) -> list[str]:
    return [item for item in re.split(r"[,;\s]+", raw.strip()) if item]


def _parse_config_put(  # noqa: C901 - the checks of PUT /lxc/{vmid}/config, in Proxmox's order
    params: dict[str, str],
) -> tuple[dict[str, Any], list[str], list[str], str | None]:
    """Validate a config PUT like PVE::JSONSchema does; raise 400 with all parameter errors at once."""
    errors: dict[str, str] = {}
    changes: dict[str, Any] = {}
    for name, raw in params.items():
        if name in PUT_EXTRA:
            continue
        if name not in CONFIG_SCHEMA:
            errors[name] = "property is not defined in schema and the schema does not allow additional properties"
            continue
        try:
            changes[name] = _parse_value(name, raw, *CONFIG_SCHEMA[name])
        except ValueError as exc:
            errors[name] = str(exc)
    digest = params.get("digest")
    if digest is not None and len(digest) > 64:
        errors["digest"] = "value may only be 64 characters long"
    lists = {}
    for name in ("delete", "revert"):
        items = _id_list(params.get(name, ""))
        bad = [item for item in items if not _CONFIG_ID.match(item)]
        if bad:
            errors[name] = f"invalid format - invalid configuration ID '{bad[0]}'"
        unknown = [item for item in items if _CONFIG_ID.match(item) and item not in CONFIG_SCHEMA]
        if unknown and name not in errors:
            errors[name] = f"unknown option '{unknown[0]}'"
        lists[name] = items
    for key in lists["delete"]:
        if key in changes:
            errors["delete"] = f"you can't use '-{key}' and '-delete {key}' at the same time"
    for key in lists["revert"]:
        if key in changes or key in lists["delete"]:
            errors["revert"] = f"you can't use '-{key}' or '-delete {key}' and '-revert {key}' at the same time"
    if errors:
        raise param_error(errors)
    return changes, lists["delete"], lists["revert"], digest


def _host(request: web.Request) -> ProxmoxHost:
    return request.app[HOST_KEY]


async def version(request: web.Request) -> web.Response:
    return _json(dict(_host(request).version))


async def nodes(request: web.Request) -> web.Response:
    return _json(_host(request).nodes())


async def node_index(request: web.Request) -> web.Response:
    _host(request).check_node(request.match_info["node"])
    return _json([{"name": name} for name in ("lxc", "status", "tasks", "version")])


async def node_status(request: web.Request) -> web.Response:
    host = _host(request)
    host.check_node(request.match_info["node"])
    return _json(host.node_status())


async def lxc_list(request: web.Request) -> web.Response:
    return _json(_host(request).lxc_list(request.match_info["node"]))


async def lxc_index(request: web.Request) -> web.Response:
    _host(request).container(request.match_info["node"], request.match_info["vmid"])
    return _json([{"subdir": name} for name in ("config", "pending", "status")])


async def lxc_config_get(request: web.Request) -> web.Response:
    host = _host(request)
    ct = host.container(request.match_info["node"], request.match_info["vmid"])
    current = _parse_value("current", request.query.get("current", "0"), "boolean", None, None)
    return _json(host.config(ct, current=bool(current)))


async def lxc_config_put(request: web.Request) -> web.Response:
    host = _host(request)
    ct = host.container(request.match_info["node"], request.match_info["vmid"])
    changes, delete, revert, digest = _parse_config_put(await _params(request))
    if digest and digest != host.config(ct)["digest"]:
        raise ProxmoxError(500, "detected modified configuration - file changed by other user? Try again.")
    host.update_config(ct, changes, delete, revert)
    return _json(None)


async def lxc_pending(request: web.Request) -> web.Response:
    host = _host(request)
    ct = host.container(request.match_info["node"], request.match_info["vmid"])
    return _json(host.pending(ct))


async def lxc_status_index(request: web.Request) -> web.Response:
    _host(request).container(request.match_info["node"], request.match_info["vmid"])
    return _json([{"subdir": name} for name in ("current", "start", "stop", "shutdown", "reboot")])


async def lxc_status_current(request: web.Request) -> web.Response:
    host = _host(request)
    ct = host.container(request.match_info["node"], request.match_info["vmid"])
    return _json(host.status_current(ct))


async def lxc_power(request: web.Request) -> web.Response:
    host = _host(request)
    await _params(request)  # timeout/forceStop/skiplock are accepted and ignored
    upid = host.power(
        request.match_info["node"], request.match_info["vmid"], request.match_info["action"], request[USER_KEY]
    )
    return _json(upid)


async def task_list(request: web.Request) -> web.Response:
    host = _host(request)
    host.check_node(request.match_info["node"])
    tasks = sorted(host.tasks.values(), key=lambda t: t.starttime, reverse=True)
    return _json([t.as_status() | ({"endtime": t.endtime} if t.endtime else {}) for t in tasks])


async def task_status(request: web.Request) -> web.Response:
    task = _host(request).task(request.match_info["node"], request.match_info["upid"])
    return _json(task.as_status())


async def task_log(request: web.Request) -> web.Response:
    task = _host(request).task(request.match_info["node"], request.match_info["upid"])
    start = _parse_value("start", request.query.get("start", "0"), "integer", 0, None)
    limit = _parse_value("limit", request.query.get("limit", "50"), "integer", 0, None)
    lines = [{"n": n, "t": text} for n, text in enumerate(task.log, start=1)]
    response = {"data": lines[start : start + limit], "total": len(lines)}
    return web.Response(body=json.dumps(response).encode(), content_type="application/json", charset="utf-8")


def make_proxmox_app(host: ProxmoxHost, tokens: dict[str, str], middlewares=()) -> web.Application:
    """Build the Proxmox VE API application.

    Args:
        host: the emulated node.
        tokens: ``{"USER@REALM!TOKENID": secret}`` accepted in ``Authorization: PVEAPIToken=...``.
        middlewares: aiohttp middlewares run before the API's own (the twin's fault injection).

    Returns:
        An aiohttp application with every route under ``/api2/json``; serve it over HTTPS.
    """
    app = web.Application(middlewares=[*middlewares, _pve_middleware])
    app[HOST_KEY] = host
    app[TOKENS_KEY] = dict(tokens)
    lxc = PREFIX + "/nodes/{node}/lxc/{vmid}"
    routes = [
        web.get(PREFIX + "/version", version),
        web.get(PREFIX + "/nodes", nodes),
        web.get(PREFIX + "/nodes/{node}", node_index),
        web.get(PREFIX + "/nodes/{node}/status", node_status),
        web.get(PREFIX + "/nodes/{node}/lxc", lxc_list),
        web.get(lxc, lxc_index),
        web.get(lxc + "/config", lxc_config_get),
        web.put(lxc + "/config", lxc_config_put),
        web.get(lxc + "/pending", lxc_pending),
        web.get(lxc + "/status", lxc_status_index),
        web.get(lxc + "/status/current", lxc_status_current),
        web.post(lxc + "/status/{action:start|stop|shutdown|reboot}", lxc_power),
        web.get(PREFIX + "/nodes/{node}/tasks", task_list),
        web.get(PREFIX + "/nodes/{node}/tasks/{upid}/status", task_status),
        web.get(PREFIX + "/nodes/{node}/tasks/{upid}/log", task_log),
    ]
    app.add_routes(routes)

    async def _close(_app: web.Application) -> None:
        await host.close()

    app.on_cleanup.append(_close)
    return app
