"""State of the emulated Proxmox VE node: its memory, its LXC containers and their tasks.

Behaviour follows Proxmox VE 8 (pve-manager, pve-container) for what this project uses:

* container config keys ``memory`` and ``swap`` are MiB, ``cores`` a count; ``digest`` is the SHA-1 of the
  config file text, as the real ``/etc/pve/nodes/<node>/lxc/<vmid>.conf`` digest is;
* memory, swap and cores hot-apply to a running container; a change that does not fit into the host's free
  memory fails with ``unable to hotplug memory`` and, as in pve-container, stays in the config's pending section
  (``GET .../pending``, applied at the next start) while the running container keeps its current value;
* ``hostname`` changed on a running container is pending until the next start as well;
* start, stop, shutdown and reboot run as tasks (``UPID:...`` strings) that take simulated time, scaled by
  ``time_scale``, and end with ``exitstatus`` ``OK`` or an error text.

The host's free memory is ``total - reserved - sum(memory of running containers)``; a container that does not
fit into it cannot start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("lab.proxmox")

MIB = 2**20

# Real-lab seconds a power task takes; multiplied by time_scale. A reboot is a shutdown followed by a start
# (about 20 s on the home lab).
DEFAULT_TASK_SECONDS = {"vzstart": 8.0, "vzstop": 3.0, "vzshutdown": 12.0}

# Defaults pve-container uses when a key is deleted from the config.
CONFIG_DEFAULTS = {"memory": 512, "swap": 512}
# Keys that hot-apply to a running container.
HOTPLUG_KEYS = ("memory", "swap", "cores")

OnEvent = Callable[[int, str, dict], Awaitable[None]]


class ProxmoxError(Exception):
    """An API error the way pve-http-server reports it.

    ``status`` is the HTTP status; ``message`` goes into the HTTP reason phrase (that is where PVE puts it);
    ``errors`` maps a parameter name to its message (400 "Parameter verification failed.").
    """

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


def param_error(errors: dict[str, str]) -> ProxmoxError:
    """400 ``Parameter verification failed.`` with per-parameter messages (PVE::Exception::raise_param_exc)."""
    return ProxmoxError(400, "Parameter verification failed.", errors)


@dataclass
class Task:
    """A worker task (``UPID:node:pid:pstart:starttime:type:id:user:``)."""

    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    status: str = "running"
    exitstatus: str | None = None
    log: list[str] = field(default_factory=list)
    endtime: int | None = None

    def as_status(self) -> dict[str, Any]:
        """The body of ``GET /nodes/{node}/tasks/{upid}/status``."""
        user, _, tokenid = self.user.partition("!")
        data: dict[str, Any] = {
            "upid": self.upid,
            "node": self.node,
            "pid": self.pid,
            "pstart": self.pstart,
            "starttime": self.starttime,
            "type": self.type,
            "id": self.id,
            "user": user,
            "status": self.status,
        }
        if tokenid:
            data["tokenid"] = tokenid
        if self.status == "stopped":
            data["exitstatus"] = self.exitstatus
        return data


@dataclass
class Container:
    """One LXC container: its config (current values), pending changes and run state."""

    vmid: int
    config: dict[str, Any]
    status: str = "stopped"
    pending: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    pid: int | None = None
    lock: asyncio.Lock | None = None

    def conf_text(self, node: str) -> str:
        """The config file as pve-container writes it (``key: value`` lines, pending section last)."""
        lines = [f"{key}: {value}" for key, value in sorted(self.config.items()) if key != "description"]
        if "description" in self.config:
            lines = [f"#{line}" for line in str(self.config["description"]).splitlines()] + lines
        if self.pending:
            lines.append("")
            lines.append("[pve:pending]")
            lines.extend(f"{key}: {value}" for key, value in sorted(self.pending.items()))
        return "\n".join(lines) + "\n"


class ProxmoxHost:
    """An emulated Proxmox VE node.

    Args:
        node: node name (``pve``).
        total_memory_mib: physical memory of the host, MiB.
        reserved_memory_mib: memory the host itself keeps (OS, ZFS ARC), MiB; never given to containers.
        containers: ``{vmid, hostname, memory (MiB), swap (MiB), cores, status: running|stopped}`` each.
        time_scale: real seconds per simulated second (0.01: a 20 s reboot takes 0.2 s).
        on_event: ``async on_event(vmid, "started"|"stopped", config)`` awaited after a container started or
            stopped (a reboot is ``stopped`` then ``started``); ``config`` holds the values it runs with.
        task_seconds: simulated seconds per task type (``vzstart``, ``vzstop``, ``vzshutdown``), to override
            ``DEFAULT_TASK_SECONDS``.

    Raises:
        ValueError: duplicate vmid, or running containers that do not fit into the host's memory.
    """

    def __init__(
        self,
        node: str,
        total_memory_mib: int,
        reserved_memory_mib: int,
        containers: list[dict],
        time_scale: float,
        on_event: OnEvent | None = None,
        task_seconds: dict[str, float] | None = None,
    ):
        self.node = node
        self.total_memory_mib = int(total_memory_mib)
        self.reserved_memory_mib = int(reserved_memory_mib)
        self.time_scale = float(time_scale)
        self.on_event = on_event
        # the twin's fault injection: the error text a task of this action must end with, or None
        self.task_fault: Callable[[str], str | None] | None = None
        self.task_seconds = {**DEFAULT_TASK_SECONDS, **(task_seconds or {})}
        self.version = {"version": "8.2.4", "release": "8.2", "repoid": "faa83925c9641325"}
        self.containers: dict[int, Container] = {}
        self.tasks: dict[str, Task] = {}
        self._workers: set[asyncio.Task] = set()
        self._pids = itertools.count(0x1A2B0)
        self._boot = time.time()
        for spec in containers:
            vmid = int(spec["vmid"])
            if vmid in self.containers:
                raise ValueError(f"duplicate vmid {vmid}")
            config = {
                "arch": "amd64",
                "ostype": "debian",
                "hostname": spec.get("hostname", f"CT{vmid}"),
                "memory": int(spec.get("memory", CONFIG_DEFAULTS["memory"])),
                "swap": int(spec.get("swap", CONFIG_DEFAULTS["swap"])),
                "cores": int(spec.get("cores", 1)),
                "rootfs": f"local-lvm:vm-{vmid}-disk-0,size={int(spec.get('disk_gib', 32))}G",
                "net0": f"name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:{vmid // 256:02X}:{vmid % 256:02X},ip=dhcp",
                "features": "nesting=1,keyctl=1",
                "unprivileged": 0,
                "onboot": 1,
            }
            ct = Container(vmid=vmid, config=config)
            if spec.get("status", "stopped") == "running":
                ct.status = "running"
                ct.started_at = time.monotonic()
                ct.pid = next(self._pids)
            self.containers[vmid] = ct
        if self.free_memory_mib() < 0:
            raise ValueError(
                f"running containers need more than the {self.total_memory_mib - self.reserved_memory_mib} MiB "
                "the host can give"
            )

    # -- memory ---------------------------------------------------------------------------------------------

    def free_memory_mib(self, exclude: int | None = None) -> int:
        """Host memory not given to running containers, MiB (``exclude``: leave that container's share out)."""
        used = sum(
            ct.config["memory"] for ct in self.containers.values() if ct.status == "running" and ct.vmid != exclude
        )
        return self.total_memory_mib - self.reserved_memory_mib - used

    def container_memory_mib(self, vmid: int) -> int:
        """Memory the container has now (hot-applied value, pending changes not counted), MiB.

        Raises:
            KeyError: no container with this vmid.
        """
        return int(self.containers[int(vmid)].config["memory"])

    def container(self, node: str, vmid: int | str) -> Container:
        """The container ``vmid`` on ``node``.

        Raises:
            ProxmoxError: 500 like pve-container when the config file does not exist.
        """
        self.check_node(node)
        try:
            return self.containers[int(vmid)]
        except (KeyError, ValueError):
            raise ProxmoxError(500, f"Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist") from None

    def check_node(self, node: str) -> None:
        """Raises ProxmoxError 500 for a node name that is not this host (as a cluster proxy does)."""
        if node != self.node:
            raise ProxmoxError(
                500,
                f"hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known",
            )

    # -- read views (API bodies) -----------------------------------------------------------------------------

    def node_status(self) -> dict[str, Any]:
        """Body of ``GET /nodes/{node}/status``: memory in bytes (total, used, free), like pve-manager."""
        total = self.total_memory_mib * MIB
        free = max(self.free_memory_mib(), 0) * MIB
        uptime = int(time.time() - self._boot)
        return {
            "memory": {"total": total, "used": total - free, "free": free},
            "swap": {"total": 8192 * MIB, "used": 0, "free": 8192 * MIB},
            "cpu": 0.04,
            "cpuinfo": {"cpus": 16, "cores": 8, "sockets": 1, "model": "AMD Ryzen 7 5700G", "mhz": "3800.000"},
            "loadavg": ["0.42", "0.38", "0.35"],
            "uptime": uptime,
            "kversion": "Linux 6.8.12-1-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-1 (2024-08-05T16:17Z)",
            "pveversion": f"pve-manager/{self.version['version']}/{self.version['repoid']}",
            "rootfs": {"total": 100 * 2**30, "used": 12 * 2**30, "free": 88 * 2**30, "avail": 83 * 2**30},
        }

    def nodes(self) -> list[dict[str, Any]]:
        """Body of ``GET /nodes``."""
        status = self.node_status()
        return [
            {
                "node": self.node,
                "id": f"node/{self.node}",
                "type": "node",
                "status": "online",
                "level": "",
                "maxmem": status["memory"]["total"],
                "mem": status["memory"]["used"],
                "maxcpu": status["cpuinfo"]["cpus"],
                "cpu": status["cpu"],
                "uptime": status["uptime"],
            }
        ]

    def _uptime(self, ct: Container) -> int:
        if ct.status != "running" or ct.started_at is None:
            return 0
        return int((time.monotonic() - ct.started_at) / self.time_scale) if self.time_scale > 0 else 0

    def status_current(self, ct: Container) -> dict[str, Any]:
        """Body of ``GET .../status/current``: ``maxmem``/``mem``/``maxswap`` in bytes, ``uptime`` seconds."""
        running = ct.status == "running"
        maxmem = int(ct.config["memory"]) * MIB
        data: dict[str, Any] = {
            "vmid": ct.vmid,
            "name": ct.config.get("hostname", f"CT{ct.vmid}"),
            "type": "lxc",
            "status": ct.status,
            "maxmem": maxmem,
            "mem": int(maxmem * 0.3) if running else 0,
            "maxswap": int(ct.config.get("swap", 0)) * MIB,
            "swap": 0,
            "cpus": int(ct.config.get("cores", 1)),
            "cpu": 0.03 if running else 0,
            "maxdisk": 32 * 2**30,
            "disk": (6 * 2**30) if running else 0,
            "uptime": self._uptime(ct),
            "netin": 0,
            "netout": 0,
            "diskread": 0,
            "diskwrite": 0,
            "ha": {"managed": 0},
        }
        if running and ct.pid is not None:
            data["pid"] = ct.pid
        return data

    def lxc_list(self, node: str) -> list[dict[str, Any]]:
        """Body of ``GET /nodes/{node}/lxc``."""
        self.check_node(node)
        return [self.status_current(ct) for ct in self.containers.values()]

    def config(self, ct: Container, current: bool = False) -> dict[str, Any]:
        """Body of ``GET .../config``: pending values applied unless ``current``; ``digest`` of the whole file."""
        data = dict(ct.config)
        if not current:
            data.update(ct.pending)
        data["digest"] = hashlib.sha1(ct.conf_text(self.node).encode(), usedforsecurity=False).hexdigest()
        return data

    def pending(self, ct: Container) -> list[dict[str, Any]]:
        """Body of ``GET .../pending``: one ``{key, value[, pending]}`` entry per key."""
        entries = []
        for key in sorted(set(ct.config) | set(ct.pending)):
            entry: dict[str, Any] = {"key": key}
            if key in ct.config:
                entry["value"] = ct.config[key]
            if key in ct.pending:
                entry["pending"] = ct.pending[key]
            entries.append(entry)
        return entries

    # -- config updates --------------------------------------------------------------------------------------

    def update_config(  # noqa: C901 - Proxmox's hot-plug rules per option (memory, swap, cores, pending)
        self, ct: Container, changes: dict[str, Any], delete: list[str], revert: list[str]
    ) -> None:
        """Apply a validated ``PUT .../config`` (synchronous, as pve-container does for LXC).

        Stopped container: values are written directly. Running container: memory/swap/cores hot-apply; a memory
        value that does not fit the host's free memory (``free_memory_mib(exclude=vmid)``) is kept pending and
        the call fails with 400 ``unable to hotplug memory``; other keys become pending until the next start.

        Raises:
            ProxmoxError: 400 with ``errors`` for hotplug failures.
        """
        for key in revert:
            ct.pending.pop(key, None)
        values = dict(changes)
        for key in delete:
            if key in CONFIG_DEFAULTS:
                values[key] = CONFIG_DEFAULTS[key]
            else:
                ct.config.pop(key, None)
                ct.pending.pop(key, None)
        if ct.status != "running":
            ct.config.update(values)
            for key in values:
                ct.pending.pop(key, None)
            return
        errors: dict[str, str] = {}
        for key, value in values.items():
            if key == "memory" and value > ct.config["memory"]:
                free = self.free_memory_mib(exclude=ct.vmid)
                if value > free:
                    ct.pending[key] = value
                    errors[key] = (
                        f"unable to hotplug memory: not enough free memory on node '{self.node}' "
                        f"(requested {value} MiB, available {free} MiB)"
                    )
                    continue
            if key in HOTPLUG_KEYS or key in ("description", "onboot"):
                ct.config[key] = value
                ct.pending.pop(key, None)
            else:
                ct.pending[key] = value
        if errors:
            raise param_error(errors)

    # -- power tasks -----------------------------------------------------------------------------------------

    def _new_task(self, ttype: str, vmid: int, user: str) -> Task:
        pid = next(self._pids)
        pstart = int((time.monotonic() % 1e6) * 100)
        starttime = int(time.time())
        upid = f"UPID:{self.node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{ttype}:{vmid}:{user}:"
        task = Task(
            upid=upid, node=self.node, pid=pid, pstart=pstart, starttime=starttime, type=ttype, id=str(vmid), user=user
        )
        self.tasks[upid] = task
        return task

    def power(self, node: str, vmid: int | str, action: str, user: str) -> str:
        """Start a power task (``start``, ``stop``, ``shutdown``, ``reboot``) and return its UPID.

        Checks that fail before a task is forked (like ``CT 103 already running``) raise ProxmoxError 500.
        Must be called on the event loop that serves the API.
        """
        ct = self.container(node, vmid)
        if action == "start" and ct.status == "running":
            raise ProxmoxError(500, f"CT {ct.vmid} already running")
        if action in ("stop", "shutdown", "reboot") and ct.status != "running":
            raise ProxmoxError(500, f"CT {ct.vmid} not running")
        if ct.lock is None:
            ct.lock = asyncio.Lock()
        task = self._new_task(f"vz{action}", ct.vmid, user)
        worker = asyncio.get_running_loop().create_task(self._run_task(task, ct, action))
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)
        return task.upid

    async def _sleep(self, task_type: str) -> None:
        await asyncio.sleep(self.task_seconds.get(task_type, 1.0) * self.time_scale)

    async def _emit(self, task: Task, ct: Container, event: str) -> None:
        if self.on_event is None:
            return
        try:
            await self.on_event(ct.vmid, event, dict(ct.config))
        except Exception as exc:
            log.exception("on_event(%s, %s) failed", ct.vmid, event)
            task.log.append(f"WARN: event hook failed: {exc}")

    async def _do_stop(self, task: Task, ct: Container, kind: str) -> None:
        await self._sleep(kind)
        if ct.status != "running":
            raise ProxmoxError(500, f"CT {ct.vmid} not running")
        ct.status = "stopped"
        ct.started_at = None
        ct.pid = None
        await self._emit(task, ct, "stopped")

    async def _do_start(self, task: Task, ct: Container) -> None:
        await self._sleep("vzstart")
        if ct.status == "running":
            raise ProxmoxError(500, f"CT {ct.vmid} already running")
        wanted = int(ct.pending.get("memory", ct.config["memory"]))
        free = self.free_memory_mib(exclude=ct.vmid)
        if wanted > free:
            raise ProxmoxError(
                500,
                f"startup for container '{ct.vmid}' failed: not enough free memory on node '{self.node}' "
                f"(needs {wanted} MiB, available {free} MiB)",
            )
        ct.config.update(ct.pending)
        ct.pending.clear()
        ct.status = "running"
        ct.started_at = time.monotonic()
        ct.pid = next(self._pids)
        await self._emit(task, ct, "started")

    async def _run_task(self, task: Task, ct: Container, action: str) -> None:
        assert ct.lock is not None
        try:
            async with ct.lock:
                failure = self.task_fault(action) if self.task_fault is not None else None
                if failure:
                    raise ProxmoxError(500, failure)
                if action == "start":
                    await self._do_start(task, ct)
                elif action == "stop":
                    await self._do_stop(task, ct, "vzstop")
                elif action == "shutdown":
                    await self._do_stop(task, ct, "vzshutdown")
                elif action == "reboot":
                    await self._do_stop(task, ct, "vzshutdown")
                    await self._do_start(task, ct)
                else:
                    raise ProxmoxError(501, f"unknown action {action}")
            task.exitstatus = "OK"
            task.log.append("TASK OK")
        except asyncio.CancelledError:
            task.exitstatus = "interrupted by signal"
            task.log.append("TASK ERROR: interrupted by signal")
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, ProxmoxError) else str(exc)
            task.exitstatus = message
            task.log.append(f"TASK ERROR: {message}")
        finally:
            task.status = "stopped"
            task.endtime = int(time.time())

    def task(self, node: str, upid: str) -> Task:
        """The task with this UPID.

        Raises:
            ProxmoxError: 400 for a malformed UPID, 500 ``no such task`` for an unknown one.
        """
        self.check_node(node)
        parts = upid.split(":")
        if len(parts) != 9 or parts[0] != "UPID":
            raise param_error({"upid": "unable to parse worker upid"})
        if upid not in self.tasks:
            raise ProxmoxError(500, "no such task")
        return self.tasks[upid]

    async def close(self) -> None:
        """Cancel running tasks (twin shutdown)."""
        for worker in list(self._workers):
            worker.cancel()
        for worker in list(self._workers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker

    # -- whole state -----------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for ``python -m lab status --json`` (memory in MiB)."""
        return {
            "node": self.node,
            "total_memory_mib": self.total_memory_mib,
            "reserved_memory_mib": self.reserved_memory_mib,
            "free_memory_mib": self.free_memory_mib(),
            "containers": [
                {
                    "vmid": ct.vmid,
                    "hostname": ct.config.get("hostname"),
                    "status": ct.status,
                    "memory": ct.config["memory"],
                    "swap": ct.config.get("swap"),
                    "cores": ct.config.get("cores"),
                    "pending": dict(ct.pending),
                    "uptime": self._uptime(ct),
                }
                for ct in self.containers.values()
            ],
            "tasks": [
                {"upid": t.upid, "type": t.type, "id": t.id, "status": t.status, "exitstatus": t.exitstatus}
                for t in list(self.tasks.values())[-20:]
            ],
        }
