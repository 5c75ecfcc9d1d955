# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client for the Proxmox VE API (https://pve.proxmox.com/pve-docs/api-viewer/), LXC part, over proxmoxer.

In the style of community.proxmox's ``ProxmoxAnsible``: one class, :class:`ProxmoxClient`, holds all I/O and
authentication (API token only). TLS verification is on by default; ``ca_path`` names a PEM CA bundle that is
handed to proxmoxer's https backend as ``verify_ssl`` (requests' ``verify=<path>``), so no environment variable
is needed and verification stays on.

Units follow the API: container ``memory`` and ``swap`` are MiB; ``maxmem``/``mem`` of a container and the
host's ``memory.total/used/free`` are bytes; timeouts are seconds.

Every API failure raises :class:`ProxmoxError` (or a subclass) carrying the Proxmox error text: PVE puts it in
the HTTP reason phrase (``500 Configuration file 'nodes/pve/lxc/999.conf' does not exist``) and, for parameter
errors, in ``errors`` (``{"memory": "unable to hotplug memory: ..."}``).
"""

from __future__ import annotations

import time
import traceback

from ansible.module_utils.basic import env_fallback, missing_required_lib

try:
    import requests
    from proxmoxer import ProxmoxAPI
    from proxmoxer import __version__ as PROXMOXER_VERSION
    from proxmoxer.core import ResourceException
    from proxmoxer.tools import Tasks

    HAS_PROXMOXER = True
    PROXMOXER_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through missing_required_lib
    HAS_PROXMOXER = False
    PROXMOXER_VERSION = None
    PROXMOXER_IMPORT_ERROR = traceback.format_exc()

MIB = 2**20
DEFAULT_PORT = 8006
DEFAULT_TIMEOUT = 30
"""Seconds each HTTP request may take."""


class ProxmoxError(Exception):
    """A Proxmox VE API call failed.

    Attributes:
        message (str): what went wrong, including the Proxmox error text.
        status (int | None): HTTP status, or None when no response came (TLS, connection, timeout).
        errors (dict[str, str]): per-parameter messages of a 400 ``Parameter verification failed.``.
        reason (str | None): the Proxmox error text alone (the HTTP reason phrase), when there was a response.
    """

    def __init__(self, message: str, status: int | None = None, errors: dict | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = dict(errors or {})
        self.reason = reason

    def __str__(self) -> str:
        return self.message


class ProxmoxTaskError(ProxmoxError):
    """A task (UPID) ended with an ``exitstatus`` other than ``OK``.

    Attributes:
        upid (str): the task.
        exitstatus (str): the task's exit status (the error text).
        log (list[str]): the last lines of the task log.
    """

    def __init__(self, message: str, upid: str, exitstatus: str, log: list[str] | None = None):
        super().__init__(message)
        self.upid = upid
        self.exitstatus = exitstatus
        self.log = list(log or [])


class ProxmoxTimeout(ProxmoxError):
    """Waiting for a task or a container status took longer than the given timeout (seconds)."""


def proxmox_argument_spec() -> dict:
    """Argument spec of the shared connection options (doc fragment ``proxmox``).

    Returns:
        dict: api_host, api_port (8006), api_user, api_token_id, api_token_secret (no_log), validate_certs
        (True), ca_path, timeout (30 s), node; with the PROXMOX_* environment fallbacks.
    """
    return dict(
        api_host=dict(type="str", required=True, fallback=(env_fallback, ["PROXMOX_HOST"])),
        api_port=dict(type="int", default=DEFAULT_PORT, fallback=(env_fallback, ["PROXMOX_PORT"])),
        api_user=dict(type="str", fallback=(env_fallback, ["PROXMOX_USER"])),
        api_token_id=dict(type="str", required=True, no_log=False, fallback=(env_fallback, ["PROXMOX_TOKEN_ID"])),
        api_token_secret=dict(
            type="str", required=True, no_log=True, fallback=(env_fallback, ["PROXMOX_TOKEN_SECRET"])
        ),
        validate_certs=dict(type="bool", default=True, fallback=(env_fallback, ["PROXMOX_VALIDATE_CERTS"])),
        ca_path=dict(type="path", fallback=(env_fallback, ["PROXMOX_CA_PATH"])),
        timeout=dict(type="int", default=DEFAULT_TIMEOUT),
        node=dict(type="str", fallback=(env_fallback, ["PROXMOX_NODE"])),
    )


def split_token_id(api_user: str | None, api_token_id: str) -> tuple[str, str]:
    """Return ``(USER@REALM, TOKENID)`` from ``api_user`` + ``api_token_id`` or a full ``USER@REALM!TOKENID``.

    Raises:
        ValueError: no user given, or the user and the full token id disagree.
    """
    if "!" in api_token_id:
        user, token = api_token_id.split("!", 1)
        if api_user and api_user != user:
            raise ValueError(f"api_user '{api_user}' does not match the user in api_token_id '{api_token_id}'")
        return user, token
    if not api_user:
        raise ValueError("api_user is required unless api_token_id has the form USER@REALM!TOKENID")
    return api_user, api_token_id


def upid_node(upid: str) -> str:
    """Node name in a task id ``UPID:{node}:{pid}:{pstart}:{starttime}:{type}:{id}:{user}:``.

    Decoded by proxmoxer's ``Tasks.decode_upid``.

    Raises:
        ValueError: not a UPID.
    """
    try:
        return Tasks.decode_upid(upid)["node"]
    except (AssertionError, ValueError):
        raise ValueError(f"not a Proxmox task id (UPID): {upid!r}") from None


class ProxmoxClient:
    """All Proxmox VE API I/O of a module, through proxmoxer's https backend with API-token auth.

    Args:
        module: the AnsibleModule; its params hold the options of :func:`proxmox_argument_spec`.
            ``module.fail_json`` is called when proxmoxer is missing, when the options are inconsistent, or when
            the first call (``GET /version``) fails (bad token, TLS, unreachable host), like ``ProxmoxAnsible``.

    All other methods raise :class:`ProxmoxError` and leave reporting to the module.
    """

    def __init__(self, module):
        if not HAS_PROXMOXER:
            module.fail_json(msg=missing_required_lib("proxmoxer"), exception=PROXMOXER_IMPORT_ERROR)
        self.module = module
        params = module.params
        try:
            self.user, self.token_name = split_token_id(params.get("api_user"), params["api_token_id"])
        except ValueError as exc:
            module.fail_json(msg=str(exc))
        self.host = params["api_host"]
        self.port = int(params.get("api_port") or DEFAULT_PORT)
        self.timeout = int(params.get("timeout") or DEFAULT_TIMEOUT)
        self.url = f"https://{self.host}:{self.port}/api2/json"
        verify: bool | str = bool(params.get("validate_certs", True))
        if verify and params.get("ca_path"):
            verify = params["ca_path"]
        elif not verify:
            module.warn("validate_certs is false: the Proxmox API certificate is not verified")
        self.verify = verify
        self._nodes: dict[int, str] = {}
        self.default_node = params.get("node")
        try:
            self.api = ProxmoxAPI(
                self.host,
                port=self.port,
                user=self.user,
                token_name=self.token_name,
                token_value=params["api_token_secret"],
                verify_ssl=verify,
                timeout=self.timeout,
            )
            self.api_version = self._call("GET /version", self.api.version.get)
        except ProxmoxError as exc:
            module.fail_json(msg=f"cannot use the Proxmox VE API at {self.url}: {exc}", status=exc.status)

    # -- plumbing ------------------------------------------------------------------------------------------

    def _call(self, what: str, fn):
        """Run one proxmoxer call and turn its failures into ProxmoxError."""
        try:
            return fn()
        except ResourceException as exc:
            errors = exc.errors if isinstance(exc.errors, dict) else {}
            text = f"{exc.status_code} {exc.status_message}: {exc.content}"
            if errors:
                text += " (" + "; ".join(f"{k}: {v}" for k, v in sorted(errors.items())) + ")"
            hint = ""
            if exc.status_code == 401:
                hint = " - check api_user, api_token_id and api_token_secret"
            message = f"{what}: {text}{hint}"
            raise ProxmoxError(message, status=exc.status_code, errors=errors, reason=exc.content) from None
        except requests.exceptions.SSLError as exc:
            raise ProxmoxError(
                f"{what}: TLS verification of {self.url} failed ({exc}) - give ca_path the CA that signed the "
                "Proxmox certificate (for example a copy of /etc/pve/pve-root-ca.pem)"
            ) from None
        except requests.exceptions.Timeout:
            raise ProxmoxError(f"{what}: no answer from {self.url} within {self.timeout} s (option timeout)") from None
        except requests.exceptions.RequestException as exc:
            raise ProxmoxError(f"{what}: cannot reach {self.url}: {exc}") from None

    def node_of(self, vmid: int, node: str | None = None) -> str:
        """Node that holds container ``vmid``: ``node``, else the ``node`` option, else found by listing.

        Raises:
            ProxmoxError: no node has this container (status 500, like the API's missing config file).
        """
        if node:
            return node
        if self.default_node:
            return self.default_node
        vmid = int(vmid)
        if vmid not in self._nodes:
            for entry in self._call("GET /nodes", self.api.nodes.get):
                name = entry["node"]
                if entry.get("status", "online") != "online":
                    continue
                listed = self._call(f"GET /nodes/{name}/lxc", lambda n=name: self.api.nodes(n).lxc.get())
                for ct in listed:
                    self._nodes[int(ct["vmid"])] = name
            if vmid not in self._nodes:
                raise ProxmoxError(f"no node of {self.url} has an LXC container with vmid {vmid}", status=500)
        return self._nodes[vmid]

    # -- reads ---------------------------------------------------------------------------------------------

    def version(self) -> dict:
        """``GET /version``: ``{"version", "release", "repoid"}``."""
        return self._call("GET /version", self.api.version.get)

    def host_status(self, node: str | None = None, vmid: int | None = None) -> dict:
        """``GET /nodes/{node}/status``: host ``memory`` ``{total, used, free}`` in bytes, cpu, uptime...

        ``node`` defaults to the ``node`` option, or the node of ``vmid``.
        """
        name = node or (self.node_of(vmid) if vmid is not None else self.default_node)
        if not name:
            raise ProxmoxError("host_status needs a node (option node) or a vmid")
        return self._call(f"GET /nodes/{name}/status", self.api.nodes(name).status.get)

    def get_lxc_config(self, vmid: int, node: str | None = None, current: bool = True) -> dict:
        """``GET /nodes/{node}/lxc/{vmid}/config``: memory/swap (MiB), cores, hostname, digest...

        Args:
            current: True: values the container has now; False: with pending changes applied (the API default).

        Raises:
            ProxmoxError: status 500 ``Configuration file 'nodes/pve/lxc/999.conf' does not exist`` for an
                unknown vmid.
        """
        name = self.node_of(vmid, node)
        return self._call(
            f"GET /nodes/{name}/lxc/{vmid}/config",
            lambda: self.api.nodes(name).lxc(vmid).config.get(current=1 if current else 0),
        )

    def get_lxc_pending(self, vmid: int, node: str | None = None) -> dict:
        """``GET .../pending`` as ``{key: pending value}`` for keys that have a pending change."""
        name = self.node_of(vmid, node)
        entries = self._call(f"GET /nodes/{name}/lxc/{vmid}/pending", self.api.nodes(name).lxc(vmid).pending.get)
        return {e["key"]: e["pending"] for e in entries if "pending" in e}

    def get_lxc_status(self, vmid: int, node: str | None = None) -> dict:
        """``GET .../status/current``: ``status`` (running|stopped), ``maxmem``/``mem`` bytes, ``uptime`` s..."""
        name = self.node_of(vmid, node)
        return self._call(
            f"GET /nodes/{name}/lxc/{vmid}/status/current",
            self.api.nodes(name).lxc(vmid).status.current.get,
        )

    # -- writes --------------------------------------------------------------------------------------------

    def update_lxc_config(
        self,
        vmid: int,
        node: str | None = None,
        digest: str | None = None,
        delete: list[str] | None = None,
        revert: list[str] | None = None,
        **values,
    ) -> None:
        """``PUT .../config`` (synchronous). ``values``: e.g. ``memory=20480`` (MiB), ``swap`` (MiB), ``cores``.

        Args:
            digest: config digest read before; the API refuses the change if the config changed since.
            delete: keys to remove.
            revert: keys whose pending change is dropped.

        Raises:
            ProxmoxError: 400 with ``errors`` (``unable to hotplug memory`` when the host lacks memory for a
                running container), 500 ``detected modified configuration`` on a digest mismatch.
        """
        name = self.node_of(vmid, node)
        data = {k: v for k, v in values.items() if v is not None}
        if digest:
            data["digest"] = digest
        if delete:
            data["delete"] = ",".join(delete)
        if revert:
            data["revert"] = ",".join(revert)
        self._call(f"PUT /nodes/{name}/lxc/{vmid}/config", lambda: self.api.nodes(name).lxc(vmid).config.put(**data))

    def _power(self, action: str, vmid: int, node: str | None) -> str:
        name = self.node_of(vmid, node)
        return self._call(
            f"POST /nodes/{name}/lxc/{vmid}/status/{action}",
            lambda: getattr(self.api.nodes(name).lxc(vmid).status, action).post(),
        )

    def start_lxc(self, vmid: int, node: str | None = None) -> str:
        """``POST .../status/start``; returns the task UPID. Raises ProxmoxError (e.g. ``already running``)."""
        return self._power("start", vmid, node)

    def stop_lxc(self, vmid: int, node: str | None = None) -> str:
        """``POST .../status/stop`` (hard stop); returns the task UPID."""
        return self._power("stop", vmid, node)

    def shutdown_lxc(self, vmid: int, node: str | None = None) -> str:
        """``POST .../status/shutdown`` (clean shutdown); returns the task UPID."""
        return self._power("shutdown", vmid, node)

    def reboot_lxc(self, vmid: int, node: str | None = None) -> str:
        """``POST .../status/reboot`` (shutdown, then start with the new config); returns the task UPID."""
        return self._power("reboot", vmid, node)

    # -- tasks ---------------------------------------------------------------------------------------------

    def task_status(self, upid: str) -> dict:
        """``GET /nodes/{node}/tasks/{upid}/status``: ``status`` running|stopped, ``exitstatus`` once stopped."""
        name = upid_node(upid)
        return self._call(f"GET /nodes/{name}/tasks/{upid}/status", self.api.nodes(name).tasks(upid).status.get)

    def task_log(self, upid: str, limit: int = 50) -> list[str]:
        """Last lines (at most ``limit``) of ``GET /nodes/{node}/tasks/{upid}/log``, by ``Tasks.decode_log``."""
        name = upid_node(upid)
        lines = self._call(
            f"GET /nodes/{name}/tasks/{upid}/log", lambda: self.api.nodes(name).tasks(upid).log.get(limit=10000)
        )
        return Tasks.decode_log(lines).splitlines()[-limit:] if lines else []

    def wait_for_task(self, upid: str, timeout: float = 300, poll_interval: float = 0.2) -> dict:
        """Poll a task until it stops (``status == "stopped"``) and return its status.

        The polling is proxmoxer's ``Tasks.blocking_status`` (``GET /nodes/{node}/tasks/{upid}/status`` every
        ``poll_interval`` seconds).

        Args:
            upid: the task id a power call returned.
            timeout: seconds to wait in all.
            poll_interval: seconds between polls.

        Raises:
            ProxmoxTaskError: the task stopped with an ``exitstatus`` other than ``OK`` (text and log attached).
            ProxmoxTimeout: still running after ``timeout`` seconds.
            ProxmoxError: the status could not be read.
        """
        name = upid_node(upid)
        status = self._call(
            f"GET /nodes/{name}/tasks/{upid}/status",
            lambda: Tasks.blocking_status(self.api, upid, timeout=timeout, polling_interval=poll_interval),
        )
        if status is None:
            raise ProxmoxTimeout(f"task {upid} still running after {timeout} s")
        exitstatus = str(status.get("exitstatus") or "")
        if exitstatus != "OK":
            log = []
            try:
                log = self.task_log(upid, limit=20)
            except ProxmoxError:
                pass
            raise ProxmoxTaskError(f"task {upid} failed: {exitstatus}", upid=upid, exitstatus=exitstatus, log=log)
        return status

    def wait_for_lxc_status(
        self, vmid: int, wanted: str = "running", timeout: float = 60, node: str | None = None
    ) -> dict:
        """Poll ``GET .../status/current`` until ``status == wanted``; return that status.

        Raises:
            ProxmoxTimeout: not reached within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        pause = 0.1
        while True:
            status = self.get_lxc_status(vmid, node)
            if status.get("status") == wanted:
                return status
            if time.monotonic() >= deadline:
                raise ProxmoxTimeout(f"container {vmid} is {status.get('status')!r}, not {wanted!r}, after {timeout} s")
            time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
            pause = min(pause * 2, 1.0)
