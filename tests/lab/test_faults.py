"""Faults on demand (lab/faults.py, `python -m lab fault`): each acts where the real failure would."""

from __future__ import annotations

import json

import httpx
import pytest
from proxmoxer.core import ResourceException

from lab.faults import SPECS, FaultError, Faults
from tests.lab import manifests
from tests.twin import answers

# -- the registry of faults, without a twin ---------------------------------------------------------------------


def test_parse_fills_defaults_converts_types_and_names_what_is_wrong():
    faults = Faults()
    assert faults.parse("proxmox-error", {"status": "503"}) == {**SPECS["proxmox-error"].params, "status": 503}
    with pytest.raises(FaultError, match="unknown fault 'nope'; known: apiserver-down, component-kill, host-memory"):
        faults.parse("nope", {})
    with pytest.raises(FaultError, match="takes status, path, method, message, not colour"):
        faults.parse("proxmox-error", {"colour": "red"})
    with pytest.raises(FaultError, match="mib='lots' is not a int"):
        faults.parse("host-memory-short", {"mib": "lots"})
    with pytest.raises(FaultError, match="needs deployment=<value>"):
        faults.parse("kill", {})


def test_control_plane_faults_name_their_component_signal_and_time():
    faults = Faults()
    assert faults.parse("apiserver-down", {}) == {"seconds": 15}
    assert faults.parse("apiserver-down", {"seconds": "0"}) == {"seconds": 0}, "0: until cleared"
    with pytest.raises(FaultError, match="seconds='-3' is negative"):
        faults.parse("apiserver-down", {"seconds": "-3"})
    assert faults.parse("component-kill", {"component": "kube-scheduler"}) == {
        "component": "kube-scheduler",
        "signal": "KILL",
    }
    with pytest.raises(FaultError, match="needs component=<value>"):
        faults.parse("component-kill", {})
    with pytest.raises(FaultError, match="component='kubelet' is not one of etcd, kube-apiserver, kube-controller"):
        faults.parse("component-kill", {"component": "kubelet"})
    with pytest.raises(FaultError, match="signal='HUP' is not one of KILL, TERM"):
        faults.parse("component-kill", {"component": "etcd", "signal": "HUP"})


async def test_a_task_failure_with_a_count_clears_itself():
    faults = Faults()
    await faults.inject("proxmox-task-failure", {"action": "reboot", "count": "2"})
    assert faults.proxmox_task("start") is None
    assert faults.proxmox_task("reboot") and faults.proxmox_task("reboot")
    assert faults.proxmox_task("reboot") is None and "proxmox-task-failure" not in faults.active


async def test_a_chat_error_fails_its_share_of_one_models_requests_evenly():
    faults = Faults()
    await faults.inject("ollama-chat-error", {"model": "qwen2.5:3b", "percent": "40"})
    assert faults.ollama_chat("phi4-mini:latest") is None, "another model is not hit"
    outcomes = [faults.ollama_chat("qwen2.5:3b") for _ in range(10)]
    assert sum(1 for o in outcomes if o) == 4 and all("llama runner process has terminated" in o for o in outcomes if o)
    assert [bool(o) for o in outcomes[:5]] == [False, False, True, False, True], "spread, not bunched"
    await faults.inject("ollama-chat-error", {"model": "phi4-mini"})  # 100 %, the tag added as Ollama adds it
    assert faults.ollama_chat("phi4-mini:latest") and faults.snapshot()["active"]["ollama-chat-error"]["hits"] == 1
    await faults.clear("ollama-chat-error")
    assert faults.ollama_chat("phi4-mini:latest") is None


# -- against a twin ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_proxmox_error_down_task_failure_and_host_memory(twin):
    pve = twin.proxmox()
    free = pve.nodes("pve").status.get()["memory"]["free"]
    twin.fault("inject", "proxmox-error", "status=503", "path=/lxc/103/config")
    with pytest.raises(ResourceException) as error:
        pve.nodes("pve").lxc(103).config.get()
    assert error.value.status_code == 503
    assert pve.nodes("pve").lxc(102).config.get()["memory"] == 8192, "other paths still answer"
    twin.fault("clear", "proxmox-error")
    assert pve.nodes("pve").lxc(103).config.get()["memory"] == 8192

    twin.fault("inject", "proxmox-down")
    with pytest.raises(Exception) as down:
        pve.nodes("pve").status.get()
    assert "refused" in str(down.value).lower() or "connection" in str(down.value).lower()
    twin.fault("clear", "proxmox-down")
    assert twin.wait_for(lambda: pve.nodes("pve").status.get(), what="the Proxmox API back")

    twin.fault("inject", "proxmox-task-failure", "action=reboot")
    upid = pve.nodes("pve").lxc(100).status.reboot.post()
    task = twin.wait_for(lambda: (t := pve.nodes("pve").tasks(upid).status.get())["status"] == "stopped" and t)
    assert "failed" in task["exitstatus"] and task["exitstatus"] != "OK"
    assert "proxmox-task-failure" not in json.loads(twin.lab("status", "--json").stdout)["faults"], "count=1: gone"

    twin.fault("inject", "host-memory-short", "mib=4096")
    assert pve.nodes("pve").status.get()["memory"]["free"] == free - 4096 * 2**20
    twin.fault("clear")
    assert pve.nodes("pve").status.get()["memory"]["free"] == free


@pytest.mark.slow
def test_ollama_pull_and_load_faults_and_kill(twin):
    twin.kubectl("create", "namespace", "ml", check=False)
    twin.kubectl("apply", "-f", "-", stdin=manifests.ollama())
    url = twin.endpoints["services"]["ml/ollama"]
    twin.wait_for(lambda: answers(url), timeout=120, what="Ollama through its Service")

    twin.fault("inject", "ollama-disk-full")
    lines = _pull(url, "llama3.2:1b")
    assert "no space left on device" in lines[-1].get("error", "")
    twin.fault("clear", "ollama-disk-full")

    twin.fault("inject", "ollama-pull-error", "percent=30")
    lines = _pull(url, "llama3.2:1b")
    assert lines[0]["status"] == "pulling manifest" and "connection reset" in lines[-1].get("error", "")
    twin.fault("clear")
    assert _pull(url, "llama3.2:1b")[-1] == {"status": "success"}, "the pull resumes once the network is back"

    twin.fault("inject", "ollama-load-oom")
    answer = httpx.post(url + "/api/chat", json={"model": "llama3.2:1b", "messages": [], "stream": False}, timeout=30)
    assert answer.status_code == 500 and "requires more system memory" in answer.json()["error"]
    twin.fault("clear")

    def restarts() -> int:
        pods = json.loads(twin.kubectl("-n", "ml", "get", "pods", "-l", "app=ollama", "-o", "json").stdout)["items"]
        return sum(s.get("restartCount", 0) for p in pods for s in p["status"].get("containerStatuses") or [])

    before = restarts()
    twin.fault("inject", "kill", "deployment=ollama")
    twin.wait_for(lambda: restarts() == before + 1, timeout=60, what="the killed container to restart")
    twin.wait_for(lambda: answers(url), timeout=120, what="Ollama back")


@pytest.mark.slow
def test_an_image_the_registry_stops_serving_is_not_pulled(twin):
    twin.kubectl("create", "namespace", "imgs", check=False)
    twin.fault("inject", "image-missing", "image=nginx:1.27")
    try:
        twin.kubectl("-n", "imgs", "create", "deployment", "web", "--image=nginx:1.27")

        def waiting_reason():
            pods = json.loads(twin.kubectl("-n", "imgs", "get", "pods", "-o", "json").stdout)["items"]
            statuses = [s for p in pods for s in p["status"].get("containerStatuses") or []]
            return next((s["state"]["waiting"]["reason"] for s in statuses if "waiting" in s["state"]), None)

        assert twin.wait_for(lambda: waiting_reason() in ("ErrImagePull", "ImagePullBackOff") and waiting_reason())
    finally:
        twin.fault("clear", "image-missing")
    twin.wait_for(lambda: "Running" in twin.kubectl("-n", "imgs", "get", "pods").stdout, timeout=60)


def _pull(url: str, model: str) -> list[dict]:
    with httpx.stream("POST", url + "/api/pull", json={"model": model}, timeout=60) as response:
        assert response.status_code == 200
        return [json.loads(line) for line in response.iter_lines() if line.strip()]
