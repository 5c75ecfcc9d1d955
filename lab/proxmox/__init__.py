"""Proxmox VE 8 API twin: an emulated node with LXC containers, served for proxmoxer (``/api2/json``)."""

from lab.proxmox.api import make_proxmox_app
from lab.proxmox.host import DEFAULT_TASK_SECONDS, Container, ProxmoxError, ProxmoxHost, Task

__all__ = ["DEFAULT_TASK_SECONDS", "Container", "ProxmoxError", "ProxmoxHost", "Task", "make_proxmox_app"]
