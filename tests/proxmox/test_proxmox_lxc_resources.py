"""proxmox_lxc_resources against the Proxmox twin over verified HTTPS (module run in-process)."""

from __future__ import annotations

import json

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.proxmox_client import ProxmoxClient
from ansible_collections.homelab.inference.plugins.modules import proxmox_lxc_resources as mod

from tests.proxmox.pve_twin import NODE, RESERVED_MIB, TOKEN_SECRET, TOTAL_MIB


def no_secret(result):
    assert TOKEN_SECRET not in json.dumps(result)
    return result


def state(twin, vmid=103):
    """(memory, swap, cores, status, pending) of a container, read on the twin's loop."""

    def read():
        ct = twin.host.containers[vmid]
        return ct.config["memory"], ct.config["swap"], ct.config["cores"], ct.status, dict(ct.pending)

    return twin.call(read)


def test_read_only_returns_current_config(twin, module_runner):
    result = no_secret(module_runner(mod, twin.module_args(vmid=103)))
    assert not result.failed, result
    assert result["changed"] is False
    assert result["config"]["memory"] == 8192 and result["config"]["hostname"] == "k3s-worker-02"
    assert result["before"] == result["after"] == {"memory": 8192, "swap": 512, "cores": 6}
    assert result["status"] == "running" and result["restarted"] is False
    # host memory as GET /nodes/pve/status reports it: total minus reserved minus the running containers
    free = twin.call(lambda: twin.host.free_memory_mib())
    assert result["host_memory"] == {"total_mib": 65536, "free_mib": free}
    assert free < 65536 - 8192


def test_grow_then_idempotent(twin, module_runner):
    args = twin.module_args(vmid=103, memory=20480, cores=8)
    first = no_secret(module_runner(mod, args, diff=True))
    assert not first.failed, first
    assert first["changed"] is True
    assert first["diff"]["before"] == {"memory": 8192, "cores": 6}
    assert first["diff"]["after"] == {"memory": 20480, "cores": 8}
    assert first["after"] == {"memory": 20480, "swap": 512, "cores": 8}
    assert first["config"]["memory"] == 20480
    assert state(twin) == (20480, 512, 8, "running", {})
    assert twin.events == []  # hot-applied, no restart

    second = no_secret(module_runner(mod, args, diff=True))
    assert not second.failed, second
    assert second["changed"] is False
    assert second["diff"]["before"] == second["diff"]["after"] == {}


def test_check_mode_reports_diff_and_changes_nothing(twin, module_runner):
    result = no_secret(module_runner(mod, twin.module_args(vmid=103, memory=16384, swap=0), check_mode=True, diff=True))
    assert not result.failed, result
    assert result["changed"] is True
    assert result["diff"]["before"] == {"memory": 8192, "swap": 512}
    assert result["diff"]["after"] == {"memory": 16384, "swap": 0}
    assert result["config"]["memory"] == 16384
    assert state(twin) == (8192, 512, 6, "running", {})


def test_shrink_refused_unless_allowed(twin, module_runner):
    refused = no_secret(module_runner(mod, twin.module_args(vmid=103, memory=4096)))
    assert refused.failed
    assert refused["msg"].startswith("memory:")
    assert "allow_shrink" in refused["msg"] and "drain" in refused["msg"]
    assert state(twin) == (8192, 512, 6, "running", {})

    allowed = no_secret(module_runner(mod, twin.module_args(vmid=103, memory=4096, allow_shrink=True)))
    assert not allowed.failed, allowed
    assert allowed["changed"] is True
    assert state(twin)[0] == 4096


def test_restart_waits_for_reboot_task(twin, module_runner):
    result = no_secret(module_runner(mod, twin.module_args(vmid=103, memory=12288, restart=True, restart_timeout=30)))
    assert not result.failed, result
    assert result["restarted"] is True
    assert result["task"]["exitstatus"] == "OK"
    assert ":vzreboot:103:" in result["task"]["upid"]
    assert result["status"] == "running"
    assert twin.events == [(103, "stopped", 12288), (103, "started", 12288)]
    assert state(twin) == (12288, 512, 6, "running", {})


def test_no_restart_when_nothing_changed(twin, module_runner):
    result = no_secret(module_runner(mod, twin.module_args(vmid=103, memory=8192, restart=True)))
    assert not result.failed, result
    assert result["changed"] is False and result["restarted"] is False
    assert twin.events == []


def test_restart_timeout_fails_with_the_field_named(twin, module_runner):
    twin.call(twin.host.task_seconds.update, {"vzshutdown": 500.0})  # 5 s on the twin
    result = no_secret(module_runner(mod, twin.module_args(vmid=103, cores=4, restart=True, restart_timeout=1)))
    assert result.failed
    assert result["msg"].startswith("restart_timeout:")
    assert result["changed"] is True  # the config change was made before the reboot


def test_a_failing_reboot_task_fails_with_its_exit_status_and_log(twin, module_runner):
    twin.call(setattr, twin.host, "task_fault", lambda action: "cannot mount rootfs" if action == "reboot" else None)
    try:
        result = no_secret(module_runner(mod, twin.module_args(vmid=103, cores=4, restart=True, restart_timeout=30)))
    finally:
        twin.call(setattr, twin.host, "task_fault", None)
    assert result.failed
    assert "cannot mount rootfs" in result["msg"], result["msg"]
    assert result["changed"] is True  # the config change was made before the reboot
    assert result["task"]["exitstatus"] == "cannot mount rootfs"
    assert result["task"]["log"] == ["TASK ERROR: cannot mount rootfs"]


def test_beyond_host_memory_fails_before_any_change(twin, module_runner):
    free = TOTAL_MIB - RESERVED_MIB - (4096 + 8192 + 8192)
    result = no_secret(module_runner(mod, twin.module_args(vmid=103, memory=8192 + free + 1024)))
    assert result.failed
    assert result["msg"].startswith("memory:")
    assert f"only {free} MiB free" in result["msg"] and f"at most {8192 + free}" in result["msg"]
    assert state(twin) == (8192, 512, 6, "running", {})

    exact = no_secret(module_runner(mod, twin.module_args(vmid=103, memory=8192 + free)))
    assert not exact.failed, exact
    assert state(twin)[0] == 8192 + free


def test_api_refusal_is_undone(twin, module_runner, monkeypatch):
    """If the host reports room but the hotplug fails anyway (a race), nothing stays changed or pending."""
    real = ProxmoxClient.host_status

    def roomy(self, node=None, vmid=None):
        status = real(self, node, vmid)
        status["memory"]["free"] = 10**15
        return status

    monkeypatch.setattr(ProxmoxClient, "host_status", roomy)
    result = no_secret(module_runner(mod, twin.module_args(vmid=103, memory=100000, cores=2)))
    assert result.failed
    assert result["msg"].startswith("memory:") and "unable to hotplug memory" in result["msg"]
    assert state(twin) == (8192, 512, 6, "running", {})


def test_unknown_vmid_and_bad_sizes(twin, module_runner):
    unknown = no_secret(module_runner(mod, twin.module_args(vmid=999, memory=1024)))
    assert unknown.failed
    assert unknown["msg"].startswith("vmid:") and "999" in unknown["msg"]

    for field, value in (("memory", 0), ("memory", -5), ("swap", -1), ("cores", 0)):
        bad = no_secret(module_runner(mod, twin.module_args(vmid=103, **{field: value})))
        assert bad.failed
        assert bad["msg"].startswith(f"{field}: must be at least")
    assert state(twin) == (8192, 512, 6, "running", {})


def test_node_discovery_and_full_token_id(twin, module_runner):
    args = twin.module_args(vmid=102, cores=3)
    del args["node"], args["api_user"]
    args["api_token_id"] = "root@pam!inference"
    result = no_secret(module_runner(mod, args))
    assert not result.failed, result
    assert result["node"] == NODE and result["changed"] is True
    assert state(twin, 102)[2] == 3


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"api_token_secret": "not-the-secret"}, "invalid token value!"),
        ({"ca_path": None}, "TLS verification"),
    ],
)
def test_connection_failures_are_clear(twin, module_runner, change, fragment):
    args = twin.module_args(vmid=103, memory=9000)
    args.update(change)
    result = no_secret(module_runner(mod, args))
    assert result.failed
    assert fragment in result["msg"]
    assert state(twin)[0] == 8192
