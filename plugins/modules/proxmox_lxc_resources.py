#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
---
module: proxmox_lxc_resources
short_description: Set memory, swap and cores of an existing Proxmox VE LXC container
description:
  - Reads the container config (C(GET /nodes/{node}/lxc/{vmid}/config)) and changes C(memory), C(swap) and C(cores)
    with C(PUT /nodes/{node}/lxc/{vmid}/config), guarded by the config C(digest).
  - Memory, swap and cores hot-apply to a running container. Programs that read the machine size only at start
    (the kubelet of a k3s node) see the new size after a restart; use O(restart=true) for that.
  - Without O(memory), O(swap) and O(cores) the module only reads and returns the current config.
  - Refuses, before changing anything, to shrink memory unless O(allow_shrink=true), and to grow a running container
    beyond the free memory the host reports (C(GET /nodes/{node}/status)).
  - Supports check mode and diff mode.
version_added: "0.1.0"
author:
  - home-lab inference project (!UNKNOWN)
options:
  vmid:
    description:
      - ID of the existing LXC container.
    type: int
    required: true
  memory:
    description:
      - Memory of the container in MiB (for example V(20480) for 20 GiB). At least V(16).
    type: int
  swap:
    description:
      - Swap of the container in MiB. V(0) disables swap.
    type: int
  cores:
    description:
      - Number of CPU cores the container may use. At least V(1).
    type: int
  allow_shrink:
    description:
      - Allow O(memory) below the current value. Shrinking under what the container uses gets processes
        OOM-killed, so drain the workload first (cordon and drain the k3s node).
    type: bool
    default: false
  restart:
    description:
      - When something changed and the container is running, reboot it (C(POST .../status/reboot)), wait for the
        task to end with C(OK) and for the container to be C(running) again.
      - A stopped container is left stopped.
    type: bool
    default: false
  restart_timeout:
    description:
      - Seconds to wait in all for the reboot task and for the container to run again.
    type: int
    default: 300
extends_documentation_fragment:
  - homelab.inference.attributes
  - homelab.inference.proxmox
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Needs the C(VM.Config.Memory), C(VM.Config.CPU) and (for O(restart)) C(VM.PowerMgmt) privileges on C(/vms/{vmid}).
seealso:
  - name: Proxmox VE API viewer
    description: C(/nodes/{node}/lxc/{vmid}/config) and C(/nodes/{node}/lxc/{vmid}/status/reboot).
    link: https://pve.proxmox.com/pve-docs/api-viewer/
"""

EXAMPLES = r"""
- name: Give the CPU inference worker 20 GiB for qwen2.5:14b and reboot it so the kubelet sees the memory
  proxmox_lxc_resources:
    api_host: pve.home.lan
    api_user: root@pam
    api_token_id: inference
    api_token_secret: "{{ vault_proxmox_token_secret }}"
    ca_path: /etc/ssl/pve-root-ca.pem
    node: pve
    vmid: 103
    memory: 20480
    restart: true
    restart_timeout: 300

- name: Downsize back to 8 GiB (the node was drained first)
  proxmox_lxc_resources:
    vmid: 103
    memory: 8192
    allow_shrink: true
    restart: true
  environment:
    PROXMOX_HOST: pve.home.lan
    PROXMOX_USER: root@pam
    PROXMOX_TOKEN_ID: inference
    PROXMOX_TOKEN_SECRET: "{{ vault_proxmox_token_secret }}"

- name: Only read the current size
  proxmox_lxc_resources:
    vmid: 103
  register: ct
"""

RETURN = r"""
host_memory:
  description:
    - Memory of the Proxmox VE node that holds the container, from C(GET /nodes/{node}/status), in MiB, read before
      any change. Lets a play check that a larger container fits the host without its own API call.
  returned: always
  type: dict
  sample: {total_mib: 65536, free_mib: 43008}
vmid:
  description: The container.
  returned: always
  type: int
  sample: 103
node:
  description: Proxmox VE node that holds the container.
  returned: always
  type: str
  sample: pve
config:
  description:
    - Container config after the task (C(GET .../config?current=1)); memory and swap in MiB.
    - In check mode, the current config with the requested values applied.
  returned: always
  type: dict
  sample: {"memory": 20480, "swap": 512, "cores": 6, "hostname": "k3s-worker-02", "digest": "1f0c..."}
before:
  description: memory (MiB), swap (MiB) and cores before the task.
  returned: always
  type: dict
  sample: {"memory": 8192, "swap": 512, "cores": 6}
after:
  description: memory (MiB), swap (MiB) and cores after the task (predicted in check mode).
  returned: always
  type: dict
  sample: {"memory": 20480, "swap": 512, "cores": 6}
diff:
  description: The before and after values, for C(--diff).
  returned: always
  type: dict
  sample: {"before": {"memory": 8192}, "after": {"memory": 20480}}
status:
  description: Container status after the task (C(running) or C(stopped)).
  returned: always
  type: str
  sample: running
restarted:
  description: Whether the container was rebooted.
  returned: always
  type: bool
  sample: true
task:
  description: The reboot task, when there was one.
  returned: when the container was rebooted
  type: dict
  contains:
    upid:
      description: Task ID.
      type: str
      sample: "UPID:pve:0001A2B3:0050F1C2:6734A1B2:vzreboot:103:root@pam!inference:"
    exitstatus:
      description: C(OK) or the error text.
      type: str
      sample: OK
changed:
  description: Whether the container config changed (or would, in check mode).
  returned: always
  type: bool
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.homelab.inference.plugins.module_utils.proxmox_client import (
    MIB,
    ProxmoxClient,
    ProxmoxError,
    ProxmoxTaskError,
    ProxmoxTimeout,
    proxmox_argument_spec,
)

RESOURCE_KEYS = ("memory", "swap", "cores")
# Lower bounds of the Proxmox VE schema (pve-container): memory >= 16 MiB, swap >= 0 MiB, cores 1..8192.
LIMITS = {"memory": (16, None, "MiB"), "swap": (0, None, "MiB"), "cores": (1, 8192, "cores")}


def validate_params(module):
    """Fail with a message naming the field and the fix for out-of-range sizes (before any API call)."""
    for key, (low, high, unit) in LIMITS.items():
        value = module.params[key]
        if value is None:
            continue
        if value < low:
            fix = "give the size in MiB, for example memory: 20480 for 20 GiB" if key == "memory" else f"use >= {low}"
            module.fail_json(
                msg=f"{key}: must be at least {low} {unit}, got {value}; {fix}", vmid=module.params["vmid"]
            )
        if high is not None and value > high:
            module.fail_json(msg=f"{key}: must be at most {high} {unit}, got {value}", vmid=module.params["vmid"])
    if module.params["restart_timeout"] <= 0:
        module.fail_json(
            msg=f"restart_timeout: must be a positive number of seconds, got {module.params['restart_timeout']}"
        )


def pick(config, keys=RESOURCE_KEYS):
    return {key: config.get(key) for key in keys}


def fail(module, msg, **extra):
    module.fail_json(msg=msg, vmid=module.params["vmid"], changed=extra.pop("changed", False), **extra)


def read_container(module, client, vmid):
    """Return (node, config (current values), status, pending) or fail_json for an unknown vmid."""
    try:
        node = client.node_of(vmid)
        config = client.get_lxc_config(vmid, node, current=True)
        status = client.get_lxc_status(vmid, node)
        pending = client.get_lxc_pending(vmid, node)
    except ProxmoxError as exc:
        if exc.status == 500 and ("does not exist" in str(exc) or "no node of" in str(exc)):
            where = f"node {module.params['node']}" if module.params["node"] else "any node"
            fail(
                module,
                f"vmid: there is no LXC container {vmid} on {where} ({exc}); "
                "check vmid against GET /nodes/{node}/lxc (pct list on the host)",
            )
        fail(module, f"cannot read LXC container {vmid}: {exc}")
    return node, config, status, pending


def check_request(module, node, vmid, before, wanted, status, free_mib):
    """Refuse a shrink without allow_shrink and growth beyond the host's free memory (MiB); nothing is changed yet."""
    old, new = before.get("memory"), wanted.get("memory")
    if new is None or old is None or new == old:
        return
    if new < old and not module.params["allow_shrink"]:
        fail(
            module,
            f"memory: {new} MiB is less than the current {old} MiB of container {vmid}; shrinking can OOM-kill "
            "what runs in it. Drain the workload (cordon and drain the k3s node) and set allow_shrink: true, "
            f"or keep memory >= {old}",
            before=before,
        )
    if new > old:
        needed = new - old if status == "running" else new
        if needed > free_mib:
            limit = old + free_mib if status == "running" else free_mib
            if status == "running":
                fail(
                    module,
                    f"memory: growing container {vmid} from {old} to {new} MiB needs {needed} MiB more, but node "
                    f"{node} has only {free_mib} MiB free (GET /nodes/{node}/status); set memory to at most "
                    f"{limit} or free memory on the host first",
                    before=before,
                    host_free_memory_mib=free_mib,
                )
            module.warn(
                f"container {vmid} is stopped; with memory {new} MiB it will not start while node {node} has only "
                f"{free_mib} MiB free"
            )


def restart_container(module, client, node, vmid):
    """Reboot, wait for the task and for status running; return (task dict, status dict)."""
    timeout = module.params["restart_timeout"]
    deadline = time.monotonic() + timeout
    upid = None
    try:
        upid = client.reboot_lxc(vmid, node)
        done = client.wait_for_task(upid, timeout=timeout)
        task = {"upid": upid, "exitstatus": done.get("exitstatus")}
        status = client.wait_for_lxc_status(vmid, "running", timeout=max(deadline - time.monotonic(), 0.1), node=node)
    except ProxmoxTaskError as exc:
        fail(
            module,
            f"restart: the reboot task of container {vmid} failed: {exc.exitstatus}. The new config is saved; "
            "fix the cause (for example host memory) and start the container",
            changed=True,
            task={"upid": exc.upid, "exitstatus": exc.exitstatus, "log": exc.log},
        )
    except ProxmoxTimeout as exc:
        fail(
            module,
            f"restart_timeout: {exc}; raise restart_timeout (now {timeout} s) or check the container on the host",
            changed=True,
            task={"upid": upid, "exitstatus": None},
        )
    except ProxmoxError as exc:
        fail(module, f"restart: cannot reboot container {vmid}: {exc}", changed=True)
    return task, status


def module_args() -> dict:
    """The argument spec: the Proxmox API options (doc fragment proxmox) and the container's resources."""
    argument_spec = proxmox_argument_spec()
    argument_spec.update(
        vmid=dict(type="int", required=True),
        memory=dict(type="int"),
        swap=dict(type="int"),
        cores=dict(type="int"),
        allow_shrink=dict(type="bool", default=False),
        restart=dict(type="bool", default=False),
        restart_timeout=dict(type="int", default=300),
    )
    return argument_spec


class LxcResources:
    """Read the container and its node, work out the change, apply it (put back on a partial refusal), restart."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.vmid = module.params["vmid"]
        self.client = ProxmoxClient(module)

    def run(self) -> None:
        module, vmid = self.module, self.vmid
        node, config, status, pending = read_container(module, self.client, vmid)
        state = status.get("status")
        before = pick(config)
        wanted = {key: module.params[key] for key in RESOURCE_KEYS if module.params[key] is not None}
        after = dict(before, **wanted)
        to_set = {key: value for key, value in wanted.items() if before.get(key) != value or key in pending}
        for key in set(pending) & set(RESOURCE_KEYS) - set(wanted):
            module.warn(f"container {vmid} has a pending {key} change to {pending[key]} that applies at its next start")
        changed = bool(to_set)
        diff = {
            "before_header": f"lxc/{vmid} on {node}",
            "after_header": f"lxc/{vmid} on {node}",
            "before": {key: before[key] for key in to_set} if changed else {},
            "after": {key: after[key] for key in to_set} if changed else {},
        }
        host_memory = self.host_memory(node)
        result = dict(
            changed=changed,
            vmid=vmid,
            node=node,
            before=before,
            after=after,
            diff=diff,
            restarted=False,
            host_memory=host_memory,
        )
        check_request(module, node, vmid, before, wanted, state, host_memory["free_mib"])
        if not changed or module.check_mode:
            module.exit_json(config=dict(config, **wanted), status=state, **result)

        self.update(node, config, before, to_set)
        task = None
        if module.params["restart"]:
            if state == "running":
                task, _restarted = restart_container(module, self.client, node, vmid)
                result["restarted"] = True
            else:
                module.warn(f"container {vmid} is {state}; restart only reboots a running container, it stays {state}")
        try:
            final = self.client.get_lxc_config(vmid, node, current=True)
            final_state = self.client.get_lxc_status(vmid, node).get("status")
        except ProxmoxError as exc:
            fail(module, f"changed container {vmid} but cannot read it back: {exc}", changed=True)
        result["after"] = pick(final)
        if task is not None:
            result["task"] = task
        module.exit_json(config=final, status=final_state, **result)

    def host_memory(self, node: str) -> dict:
        """Total and free memory of the node in MiB (C(GET /nodes/{node}/status))."""
        try:
            host = self.client.host_status(node)
        except ProxmoxError as exc:
            fail(self.module, f"cannot read the memory of node {node}: {exc}")
        return {"total_mib": int(host["memory"]["total"]) // MIB, "free_mib": int(host["memory"]["free"]) // MIB}

    def update(self, node: str, config: dict, before: dict, to_set: dict) -> None:
        """C(PUT /nodes/{node}/lxc/{vmid}/config) with the config's digest; on a partial refusal, put it all back."""
        vmid = self.vmid
        try:
            self.client.update_lxc_config(vmid, node, digest=config.get("digest"), **to_set)
        except ProxmoxError as exc:
            if exc.errors:
                # The API refused part of it (e.g. "unable to hotplug memory"): like pve-container it keeps the
                # refused value pending and may have applied the rest. Put everything back so that nothing changed.
                refused = sorted(set(exc.errors) & set(RESOURCE_KEYS))
                restore = {key: before[key] for key in to_set if key not in exc.errors and before[key] is not None}
                try:
                    if refused or restore:
                        self.client.update_lxc_config(vmid, node, revert=refused, **restore)
                except ProxmoxError as revert_exc:
                    self.module.warn(f"could not undo the partial change: {revert_exc}")
                fields = ", ".join(sorted(exc.errors))
                fail(self.module, f"{fields}: Proxmox refused the change ({exc}); nothing was changed", before=before)
            if "detected modified configuration" in str(exc):
                fail(
                    self.module,
                    f"the config of container {vmid} changed while this task ran ({exc}); run the task again",
                )
            fail(self.module, f"cannot update container {vmid}: {exc}", before=before)


def main():
    module = AnsibleModule(argument_spec=module_args(), supports_check_mode=True)
    validate_params(module)
    LxcResources(module).run()


if __name__ == "__main__":
    main()
