"""Faults on demand in the twin, the way Toxiproxy or Chaos Mesh inject them into real systems.

``python -m lab fault list | inject NAME [key=value ...] | clear [NAME]`` (or ``GET/POST/DELETE /faults`` on the
control port). A fault stays until it is cleared, except ``kill`` and ``component-kill``, which act once, and
``apiserver-down`` with ``seconds``, which clears itself after that time. Each fault acts where the real failure
would: in the emulated Proxmox API, the emulated Ollama, the node's kubelet, the registry or the control plane's
processes (killed as a crash kills them; the supervisor of lab.controlplane starts them again), so the playbooks
and the real clients see what they would see in the lab.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from ansible_collections.homelab.inference.plugins.module_utils.model_names import normalize_name

log = logging.getLogger("lab.faults")


@dataclass(frozen=True)
class FaultSpec:
    name: str
    help: str
    params: dict[str, Any]  # parameter -> default
    once: bool = False
    required: tuple[str, ...] = ()
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # parameter -> the values it may take


COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SIGNALS = ("KILL", "TERM", "INT", "QUIT")


SPECS = {
    spec.name: spec
    for spec in (
        FaultSpec(
            "proxmox-error",
            "the Proxmox API answers HTTP <status> to <method> requests whose path contains <path> ('' = any)",
            {"status": 500, "path": "", "method": "", "message": "internal error (fault injected)"},
        ),
        FaultSpec("proxmox-down", "the Proxmox API is unreachable: its port refuses connections", {}),
        FaultSpec(
            "proxmox-task-failure",
            "LXC tasks of <action> (start, stop, shutdown, reboot or any) end with an error; <count> tasks, 0 = all",
            {"action": "any", "count": 1, "message": "command 'lxc-start -n 103' failed: exit code 1"},
        ),
        FaultSpec("host-memory-short", "the Proxmox host has <mib> MiB less free memory", {"mib": 16384}),
        FaultSpec(
            "ollama-pull-error",
            "an Ollama pull breaks off with an error line after <percent>% of a layer (HTTP 200 already sent)",
            {"percent": 50, "message": "max retries exceeded: read tcp: connection reset by peer"},
        ),
        FaultSpec("ollama-disk-full", "an Ollama pull fails: no space left on device", {}),
        FaultSpec(
            "ollama-chat-error",
            "the emulated Ollama answers HTTP 500 (a crashed runner) to <percent>% of the chat and generate requests "
            "for <model> ('' = any model), spread evenly: every request that completes another whole failure fails",
            {"model": "", "percent": 100, "message": "llama runner process has terminated: signal: killed"},
        ),
        FaultSpec(
            "ollama-load-oom",
            "loading a model fails with Ollama's memory error (as when the limit is too small)",
            {},
        ),
        FaultSpec(
            "kill",
            "kill the containers of the Pods of <namespace>/<deployment> once; the kubelet restarts them",
            {"namespace": "ml", "deployment": ""},
            once=True,
            required=("deployment",),
        ),
        FaultSpec(
            "apiserver-down",
            "the Kubernetes API server is killed and kept down for <seconds> s (0 = until cleared); then (or at "
            "clear) the supervisor starts it again with the same flags and etcd data",
            {"seconds": 15},
        ),
        FaultSpec(
            "component-kill",
            f"kill a control-plane <component> ({', '.join(COMPONENTS)}) once with SIG<signal>; the supervisor "
            "restarts it",
            {"component": "", "signal": "KILL"},
            once=True,
            required=("component",),
            choices={"component": COMPONENTS, "signal": SIGNALS},
        ),
        FaultSpec(
            "image-missing",
            "the registry stops serving <image>: new Pods with it end in ErrImagePull",
            {"image": ""},
            required=("image",),
        ),
    )
}


class FaultError(ValueError):
    """A fault name or parameter the twin does not know; the message names it and lists what is known."""


class Faults:
    """The active faults of one twin, and the hooks the emulated parts call."""

    def __init__(self) -> None:
        self.active: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        self.seen: dict[str, int] = {}  # requests a fault with a share saw since it was injected
        self.on_change: list[Callable[[str, bool, dict], Any]] = []

    # -- inject / clear ----------------------------------------------------------------------------------------

    def parse(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        spec = SPECS.get(name)
        if spec is None:
            raise FaultError(f"unknown fault {name!r}; known: {', '.join(sorted(SPECS))}")
        unknown = set(params) - set(spec.params)
        if unknown:
            raise FaultError(
                f"fault {name} takes {', '.join(spec.params) or 'no parameters'}, not {', '.join(sorted(unknown))}"
            )
        result = dict(spec.params)
        for key, value in params.items():
            default = spec.params[key]
            try:
                result[key] = type(default)(value) if not isinstance(default, str) else str(value)
            except (TypeError, ValueError) as exc:
                raise FaultError(f"fault {name}: {key}={value!r} is not a {type(default).__name__}") from exc
            if isinstance(default, int) and result[key] < 0:
                raise FaultError(f"fault {name}: {key}={value!r} is negative")
            choices = spec.choices.get(key)
            if choices and result[key] not in choices:
                raise FaultError(f"fault {name}: {key}={value!r} is not one of {', '.join(choices)}")
        missing = [key for key in spec.required if not result[key]]
        if missing:
            raise FaultError(f"fault {name} needs {', '.join(f'{key}=<value>' for key in missing)}")
        return result

    async def inject(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        params = self.parse(name, params)
        if not SPECS[name].once:
            self.active[name] = params
            self.counts[name] = 0
            self.seen[name] = 0
        log.warning("fault injected: %s %s", name, params)
        for callback in self.on_change:
            await callback(name, True, params)
        return params

    async def clear(self, name: str | None = None) -> list[str]:
        names = [name] if name else list(self.active)
        cleared = []
        for item in names:
            params = self.active.pop(item, None)
            if params is None:
                continue
            cleared.append(item)
            log.warning("fault cleared: %s", item)
            for callback in self.on_change:
                await callback(item, False, params)
        return cleared

    def snapshot(self) -> dict:
        return {
            "active": {name: {**params, "hits": self.counts.get(name, 0)} for name, params in self.active.items()},
            "known": {name: {"help": spec.help, "params": spec.params} for name, spec in SPECS.items()},
        }

    def _hit(self, name: str) -> dict[str, Any] | None:
        params = self.active.get(name)
        if params is not None:
            self.counts[name] = self.counts.get(name, 0) + 1
        return params

    # -- hooks ---------------------------------------------------------------------------------------------------

    @web.middleware
    async def proxmox_middleware(self, request: web.Request, handler):
        """``proxmox-error``: a PVE-style error answer ``{"data": null, "message": ...}`` with the status."""
        params = self.active.get("proxmox-error")
        if params is not None and params["path"] in request.path and params["method"].upper() in ("", request.method):
            self._hit("proxmox-error")
            return web.json_response(
                {"data": None, "message": params["message"]},
                status=int(params["status"]),
                reason=params["message"][:60],
            )
        return await handler(request)

    def proxmox_task(self, action: str) -> str | None:
        """``proxmox-task-failure``: the error text a task of ``action`` ends with, or None."""
        params = self.active.get("proxmox-task-failure")
        if params is None or params["action"] not in ("any", action):
            return None
        self._hit("proxmox-task-failure")
        if params["count"] and self.counts["proxmox-task-failure"] >= params["count"]:
            self.active.pop("proxmox-task-failure", None)
        return params["message"]

    def ollama_pull(self, completed: int, total: int) -> str | None:
        """Ollama pull faults: the error text to break off with at this point of a layer, or None."""
        if "ollama-disk-full" in self.active:
            self._hit("ollama-disk-full")
            return "write /root/.ollama/models/blobs/sha256-partial: no space left on device"
        params = self.active.get("ollama-pull-error")
        if params is not None and total and completed * 100 >= params["percent"] * total:
            self._hit("ollama-pull-error")
            return params["message"]
        return None

    def ollama_chat(self, model: str) -> str | None:
        """``ollama-chat-error``: the error text a chat or generate request for ``model`` fails with, or None. With
        ``percent`` p, the n-th request of the model fails when floor(n p / 100) grows: exactly p % of any run of
        requests, spread evenly (a live canary sees the share whatever its request count)."""
        params = self.active.get("ollama-chat-error")
        if params is None or (params["model"] and normalize_name(params["model"]) != normalize_name(model)):
            return None
        seen = self.seen["ollama-chat-error"] = self.seen.get("ollama-chat-error", 0) + 1
        if seen * params["percent"] // 100 > (seen - 1) * params["percent"] // 100:
            self._hit("ollama-chat-error")
            return params["message"]
        return None

    def ollama_load(self) -> bool:
        """``ollama-load-oom``: True when loading a model must fail with the memory error."""
        return self._hit("ollama-load-oom") is not None


__all__ = ["COMPONENTS", "SIGNALS", "SPECS", "FaultError", "FaultSpec", "Faults"]
