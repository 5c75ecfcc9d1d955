"""Contract of the Proxmox twin, driven by the real proxmoxer client over verified HTTPS."""

from __future__ import annotations

import json
import time

import pytest
import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from tests.proxmox.pve_twin import NODE, RESERVED_MIB, TOKEN_SECRET, TOTAL_MIB

MIB = 2**20


def api(twin, secret=TOKEN_SECRET, verify=None, tid="inference", user="root@pam"):
    return ProxmoxAPI(
        "127.0.0.1",
        port=twin.port,
        user=user,
        token_name=tid,
        token_value=secret,
        verify_ssl=str(twin.ca_path) if verify is None else verify,
        timeout=10,
    )


def wait_task(px, upid, timeout=10.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        status = px.nodes(NODE).tasks(upid).status.get()
        seen.append(status["status"])
        if status["status"] == "stopped":
            return status, seen
        time.sleep(0.02)
    raise AssertionError(f"task {upid} still running after {timeout}s")


def test_version_nodes_and_host_memory(twin):
    px = api(twin)
    assert px.version.get()["version"].startswith("8.")
    assert [n["node"] for n in px.nodes.get()] == [NODE]
    mem = px.nodes(NODE).status.get()["memory"]
    running = 4096 + 8192 + 8192
    assert mem["total"] == TOTAL_MIB * MIB
    assert mem["free"] == (TOTAL_MIB - RESERVED_MIB - running) * MIB
    assert mem["used"] + mem["free"] == mem["total"]


def test_read_config_list_and_status(twin):
    px = api(twin)
    listed = {c["vmid"]: c for c in px.nodes(NODE).lxc.get()}
    assert set(listed) == {100, 102, 103, 110}
    assert listed[110]["status"] == "stopped"
    config = px.nodes(NODE).lxc(103).config.get()
    assert (config["memory"], config["swap"], config["cores"], config["hostname"]) == (8192, 512, 6, "k3s-worker-02")
    assert len(config["digest"]) == 40
    status = px.nodes(NODE).lxc(103).status.current.get()
    assert status["status"] == "running"
    assert status["maxmem"] == 8192 * MIB
    assert 0 < status["mem"] <= status["maxmem"]


def test_update_is_synchronous_and_hot_applies(twin):
    px = api(twin)
    digest = px.nodes(NODE).lxc(103).config.get()["digest"]
    assert px.nodes(NODE).lxc(103).config.put(memory=20480, swap=1024, cores=8, digest=digest) is None
    config = px.nodes(NODE).lxc(103).config.get()
    assert (config["memory"], config["swap"], config["cores"]) == (20480, 1024, 8)
    assert config["digest"] != digest
    assert px.nodes(NODE).lxc(103).status.current.get()["maxmem"] == 20480 * MIB
    assert twin.call(twin.host.container_memory_mib, 103) == 20480
    assert [e for e in px.nodes(NODE).lxc(103).pending.get() if "pending" in e] == []
    free = px.nodes(NODE).status.get()["memory"]["free"]
    assert free == (TOTAL_MIB - RESERVED_MIB - 4096 - 8192 - 20480) * MIB


def test_digest_mismatch_is_refused(twin):
    px = api(twin)
    old = px.nodes(NODE).lxc(103).config.get()["digest"]
    px.nodes(NODE).lxc(103).config.put(cores=5)
    with pytest.raises(ResourceException) as err:
        px.nodes(NODE).lxc(103).config.put(memory=9000, digest=old)
    assert err.value.status_code == 500
    assert "detected modified configuration" in str(err.value)
    assert px.nodes(NODE).lxc(103).config.get()["memory"] == 8192


def test_parameter_errors_are_400_with_errors(twin):
    px = api(twin)
    with pytest.raises(ResourceException) as err:
        px.nodes(NODE).lxc(103).config.put(memory=8, cores="many", bogus=1)
    assert err.value.status_code == 400
    assert err.value.content == "Parameter verification failed."
    assert set(err.value.errors) == {"memory", "cores", "bogus"}
    assert "minimum value of 16" in err.value.errors["memory"]
    assert px.nodes(NODE).lxc(103).config.get()["cores"] == 6


def test_missing_vmid_is_500_with_real_text(twin):
    px = api(twin)
    with pytest.raises(ResourceException) as err:
        px.nodes(NODE).lxc(999).config.get()
    assert err.value.status_code == 500
    assert err.value.content == "Configuration file 'nodes/pve/lxc/999.conf' does not exist"


def test_resize_beyond_host_memory_fails_and_stays_pending(twin):
    px = api(twin)
    free_mib = px.nodes(NODE).status.get()["memory"]["free"] // MIB
    too_much = 8192 + free_mib + 1
    with pytest.raises(ResourceException) as err:
        px.nodes(NODE).lxc(103).config.put(memory=too_much)
    assert err.value.status_code == 400
    assert err.value.errors["memory"].startswith("unable to hotplug memory")
    # the running container keeps its memory; the value waits in the pending section like pve-container does
    assert px.nodes(NODE).lxc(103).config.get(current=1)["memory"] == 8192
    assert px.nodes(NODE).lxc(103).status.current.get()["maxmem"] == 8192 * MIB
    pending = {e["key"]: e for e in px.nodes(NODE).lxc(103).pending.get()}
    assert pending["memory"] == {"key": "memory", "value": 8192, "pending": too_much}
    assert px.nodes(NODE).lxc(103).config.get()["memory"] == too_much
    px.nodes(NODE).lxc(103).config.put(revert="memory")
    assert "pending" not in {e["key"]: e for e in px.nodes(NODE).lxc(103).pending.get()}["memory"]
    # exactly what is free fits
    px.nodes(NODE).lxc(103).config.put(memory=8192 + free_mib)
    assert px.nodes(NODE).status.get()["memory"]["free"] == 0


def test_reboot_task_upid_and_events(twin):
    px = api(twin)
    px.nodes(NODE).lxc(103).config.put(memory=20480)
    upid = px.nodes(NODE).lxc(103).status.reboot.post()
    parts = upid.split(":")
    assert len(parts) == 9 and parts[0] == "UPID" and parts[1] == NODE
    assert parts[5] == "vzreboot" and parts[6] == "103" and parts[7] == "root@pam!inference" and parts[8] == ""
    assert all(len(p) == 8 and int(p, 16) >= 0 for p in parts[2:5])
    status, seen = wait_task(px, upid)
    assert seen[0] == "running"
    assert status["exitstatus"] == "OK"
    assert status["type"] == "vzreboot" and status["user"] == "root@pam" and status["tokenid"] == "inference"
    assert px.nodes(NODE).lxc(103).status.current.get()["status"] == "running"
    assert twin.events == [(103, "stopped", 20480), (103, "started", 20480)]
    log = px.nodes(NODE).tasks(upid).log.get()
    assert log[-1] == {"n": len(log), "t": "TASK OK"}


def test_stop_start_and_start_that_does_not_fit(twin):
    px = api(twin)
    upid = px.nodes(NODE).lxc(110).status.start.post()
    assert wait_task(px, upid)[0]["exitstatus"] == "OK"
    with pytest.raises(ResourceException) as err:
        px.nodes(NODE).lxc(110).status.start.post()
    assert err.value.status_code == 500 and "already running" in err.value.content
    upid = px.nodes(NODE).lxc(110).status.stop.post()
    assert wait_task(px, upid)[0]["exitstatus"] == "OK"
    assert px.nodes(NODE).lxc(110).status.current.get()["status"] == "stopped"
    # a stopped container takes any size; starting it then fails because the host cannot hold it
    px.nodes(NODE).lxc(110).config.put(memory=60000)
    upid = px.nodes(NODE).lxc(110).status.start.post()
    status, _ = wait_task(px, upid)
    assert status["exitstatus"] != "OK" and "not enough free memory" in status["exitstatus"]
    assert px.nodes(NODE).lxc(110).status.current.get()["status"] == "stopped"
    assert px.nodes(NODE).tasks(upid).log.get()[-1]["t"].startswith("TASK ERROR:")
    assert twin.events == [(110, "started", 2048), (110, "stopped", 2048)]


def test_unknown_path_is_501(twin):
    with pytest.raises(ResourceException) as err:
        api(twin).nodes(NODE).qemu.get()
    assert err.value.status_code == 501
    assert "not implemented" in err.value.content


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": "wrong"}, "invalid token value!"),
        ({"tid": "other"}, "no such token 'other' for user 'root@pam'"),
        ({"user": "nobody@pve"}, "no such user ('nobody@pve')"),
    ],
)
def test_bad_token_is_401(twin, kwargs, message):
    with pytest.raises(ResourceException) as err:
        api(twin, **kwargs).version.get()
    assert err.value.status_code == 401
    assert err.value.content == message


def test_no_auth_header_is_401(twin):
    resp = requests.get(f"https://127.0.0.1:{twin.port}/api2/json/version", verify=str(twin.ca_path), timeout=5)
    assert resp.status_code == 401
    assert resp.reason == "No ticket"
    assert resp.json() == {"data": None, "message": "No ticket\n"}


def test_tls_verification_is_on(twin):
    with pytest.raises(requests.exceptions.SSLError):
        api(twin, verify=True).version.get()
    assert api(twin).version.get()["release"] == "8.2"


def test_pending_memory_applies_at_next_start(twin):
    """A refused hotplug waits in the pending section; once the host has room, a reboot applies it."""
    px = api(twin)
    free_mib = px.nodes(NODE).status.get()["memory"]["free"] // MIB
    wanted = 8192 + free_mib + 4096  # does not fit now, fits once 102 (8192 MiB) is stopped
    with pytest.raises(ResourceException):
        px.nodes(NODE).lxc(103).config.put(memory=wanted)
    assert wait_task(px, px.nodes(NODE).lxc(102).status.shutdown.post())[0]["exitstatus"] == "OK"
    assert wait_task(px, px.nodes(NODE).lxc(103).status.reboot.post())[0]["exitstatus"] == "OK"
    assert px.nodes(NODE).lxc(103).config.get(current=1)["memory"] == wanted
    assert [e for e in px.nodes(NODE).lxc(103).pending.get() if "pending" in e] == []
    assert twin.events[-1] == (103, "started", wanted)


def test_topology_yaml_builds_a_host():
    """The runtime builds the host from lab/topology.yaml; the snapshot carries what `lab status` prints."""
    import yaml

    from lab.proxmox import ProxmoxHost
    from tests.conftest import ROOT

    px = yaml.safe_load((ROOT / "lab" / "topology.yaml").read_text())["proxmox"]
    host = ProxmoxHost(
        node=px["node"],
        total_memory_mib=px["total_memory_mib"],
        reserved_memory_mib=px["reserved_memory_mib"],
        containers=[dict(c) for c in px["containers"]],
        time_scale=0.01,
    )
    snap = host.snapshot()
    assert {c["vmid"] for c in snap["containers"]} == {c["vmid"] for c in px["containers"]}
    for ct, spec in zip(snap["containers"], px["containers"], strict=True):
        assert (ct["hostname"], ct["memory"], ct["status"]) == (spec["hostname"], spec["memory"], spec["status"])
        assert host.container_memory_mib(spec["vmid"]) == spec["memory"]
    running = sum(c["memory"] for c in px["containers"] if c["status"] == "running")
    assert snap["free_memory_mib"] == px["total_memory_mib"] - px["reserved_memory_mib"] - running
    json.dumps(snap)
