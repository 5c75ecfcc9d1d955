"""The twin's kubelet (lab/kubelet.py) against a whole twin: image pulls, OOM kills, restarts, node reboots,
deletions and a rolling update, observed through the real API server as a real cluster's users observe them."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from tests.lab import manifests
from tests.twin import ROOT, answers, refused

pytestmark = pytest.mark.slow

HAS_LITELLM = (ROOT / ".venv-litellm" / "bin" / "litellm").exists()
NO_LITELLM = manifests.HAS_LITELLM_NOTE


# -- helpers ----------------------------------------------------------------------------------------------------


def _ensure_namespace(core, name: str) -> None:
    try:
        core.create_namespace({"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def _gone(read) -> bool:
    try:
        read()
    except ApiException as exc:
        return exc.status == 404
    return False


def _deployment(name: str, image: str, *, labels: dict | None = None, **container) -> dict:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": image, **container}]},
            },
        },
    }


def _pod_history(core, namespace: str, selector: str, since: str, until, timeout: float = 90.0) -> list[dict]:
    """Every version of the Pods matching ``selector`` from resourceVersion ``since`` (a watch, so no status the
    kubelet posts is missed however briefly it lasts), until ``until(history)`` is true."""
    history: list[dict] = []
    version = since
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = watch.Watch()
        for event in w.stream(
            core.list_namespaced_pod,
            namespace,
            label_selector=selector,
            resource_version=version,
            timeout_seconds=max(1, int(deadline - time.monotonic())),
        ):
            if event["type"] == "ERROR":
                raise AssertionError(f"pod watch failed: {event['raw_object']}")
            pod = core.api_client.sanitize_for_serialization(event["object"])
            version = pod["metadata"]["resourceVersion"]
            history.append(pod)
            if until(history):
                w.stop()
                return history
    raise AssertionError(f"timed out after {timeout:.0f} s; last pod versions: {json.dumps(history[-3:], indent=1)}")


def _statuses(history: list[dict]) -> list[dict]:
    """The container statuses of every Pod version, in order."""
    return [s for pod in history for s in (pod.get("status") or {}).get("containerStatuses") or []]


def _terminations(statuses: list[dict]) -> list[dict]:
    found = []
    for status in statuses:
        for where in (status.get("state") or {}, status.get("lastState") or {}):
            if "terminated" in where:
                found.append(where["terminated"])
    return found


def _pod_ready(pod: dict) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or []
    )


def _processes(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process of this machine whose command line or working directory contains
    ``text`` (a LiteLLM process forked from the twin's zygote has the zygote's command line, its Pod's directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd") + "/"
        except OSError:
            continue
        if text in cmdline or text in cwd:
            found.append((int(entry.name), cmdline))
    return found


def _ready_pods(core, namespace: str, selector: str) -> list:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        p
        for p in pods
        if not p.metadata.deletion_timestamp and _pod_ready(core.api_client.sanitize_for_serialization(p))
    ]


# -- images -----------------------------------------------------------------------------------------------------


def test_an_unknown_image_tag_is_err_image_pull_then_image_pull_back_off_never_ready(twin, core, apps):
    since = core.list_namespaced_pod("default", label_selector="app=no-such-tag").metadata.resource_version
    apps.create_namespaced_deployment("default", _deployment("no-such-tag", "nginx:0.0.0-no-such-tag"))

    def backing_off(history):
        return any(
            (s.get("state") or {}).get("waiting", {}).get("reason") == "ImagePullBackOff" for s in _statuses(history)
        )

    history = _pod_history(core, "default", "app=no-such-tag", since, backing_off, timeout=90)
    reasons = []
    for status in _statuses(history):
        reason = (status.get("state") or {}).get("waiting", {}).get("reason")
        if reason and (not reasons or reasons[-1] != reason):
            reasons.append(reason)
    assert "ErrImagePull" in reasons, reasons
    assert reasons.index("ErrImagePull") < reasons.index("ImagePullBackOff"), reasons
    pulled = next(s for s in _statuses(history) if s["state"].get("waiting", {}).get("reason") == "ErrImagePull")
    assert "docker.io/library/nginx:0.0.0-no-such-tag" in pulled["state"]["waiting"]["message"]
    assert not any(_pod_ready(p) for p in history)
    assert not any("running" in (s.get("state") or {}) for s in _statuses(history))

    waited = twin.kubectl("rollout", "status", "deployment/no-such-tag", "--timeout=5s", check=False)
    assert waited.returncode != 0, "the Deployment never becomes available"
    assert "ImagePullBackOff" in twin.kubectl("get", "pods", "-l", "app=no-such-tag").stdout
    apps.delete_namespaced_deployment("no-such-tag", "default")


# -- memory -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oom_history(twin, core, apps):
    """The ml/ollama Pod's versions while its 32Mi limit is below the 64 MiB the emulated Ollama needs."""
    _ensure_namespace(core, "ml")
    since = core.list_namespaced_pod("ml", label_selector="app=ollama").metadata.resource_version
    small = {"requests": {"memory": "32Mi"}, "limits": {"memory": "32Mi"}}
    apps.create_namespaced_deployment(
        "ml",
        _deployment(
            "ollama", "ollama/ollama:0.13.3", ports=[{"name": "http", "containerPort": 11434}], resources=small
        ),
    )

    def restarted_twice(history):
        return max((s.get("restartCount", 0) for s in _statuses(history)), default=0) >= 2

    history = _pod_history(core, "ml", "app=ollama", since, restarted_twice, timeout=120)
    apps.delete_namespaced_deployment("ollama", "ml")
    twin.wait_for(lambda: not core.list_namespaced_pod("ml", label_selector="app=ollama").items, timeout=60)
    return history


def test_a_memory_limit_below_the_workloads_need_is_oom_killed_and_restarted(oom_history):
    statuses = _statuses(oom_history)
    killed = [t for t in _terminations(statuses) if t["reason"] == "OOMKilled"]
    assert killed, json.dumps(statuses[-3:], indent=1)
    assert all(t["exitCode"] == 137 for t in killed)
    assert max(s["restartCount"] for s in statuses) >= 2
    assert not any(s["ready"] for s in statuses)
    assert not any(_pod_ready(p) for p in oom_history)


def test_an_oom_killed_container_waits_in_crash_loop_back_off(oom_history):
    statuses = _statuses(oom_history)
    assert any(
        s["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
        and (s.get("lastState") or {}).get("terminated", {}).get("reason") == "OOMKilled"
        for s in statuses
    ), json.dumps(statuses[-3:], indent=1)


# -- configuration --------------------------------------------------------------------------------------------


def test_a_container_whose_secret_does_not_exist_is_not_started(twin, core):
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "needs-secret", "labels": {"app": "needs-secret"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "busybox:1.36",
                        "command": ["sleep", "infinity"],
                        "env": [
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "no-such-secret", "key": "token"}}}
                        ],
                    }
                ]
            },
        },
    )

    def decided():
        statuses = core.read_namespaced_pod("needs-secret", "default").status.container_statuses or []
        state = statuses and statuses[0].state
        if state and (state.running or (state.waiting and state.waiting.reason != "ContainerCreating")):
            return state
        return None

    try:
        state = twin.wait_for(decided, timeout=60, what="the kubelet to start or refuse the container")
        assert state.running is None, "the container runs without its Secret"
        assert state.waiting.reason == "CreateContainerConfigError"
        assert 'secret "no-such-secret" not found' in state.waiting.message
    finally:
        core.delete_namespaced_pod("needs-secret", "default", grace_period_seconds=0)


# -- LiteLLM: a process that dies, a rolling update ---------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm(twin, core):
    """ml/litellm rolled out (the real proxy); its Service URL on the twin's address."""
    if not HAS_LITELLM:
        pytest.skip(NO_LITELLM)
    _ensure_namespace(core, "ml")
    twin.kubectl(
        "apply",
        "-f",
        "-",
        stdin=manifests.litellm(twin.endpoints["services"]["ml/ollama"], alias="ollama-phi", rolling=True),
    )
    twin.kubectl("rollout", "status", "deployment/litellm", "-n", "ml", "--timeout=180s", timeout=200)
    url = twin.endpoints["services"]["ml/litellm"]
    twin.wait_for(lambda: answers(url + "/health/liveliness"), timeout=60, what="the ml/litellm Service")
    return url


def _litellm_status(core, pod: str) -> dict:
    return core.api_client.sanitize_for_serialization(core.read_namespaced_pod(pod, "ml"))


@pytest.fixture(scope="module")
def killed_litellm(twin, core, litellm):
    """Kill the ready LiteLLM Pod's process (SIGKILL, as the OOM killer or a crash would); the Pod once restarted."""
    (pod,) = _ready_pods(core, "ml", "app=litellm")
    name = pod.metadata.name
    before = _litellm_status(core, name)["status"]["containerStatuses"][0]
    workdir = f"{twin.lab_dir}/workloads/ml_{name}_litellm/"
    (process,) = _processes(workdir)
    os.kill(process[0], signal.SIGKILL)

    def restarted_and_ready():
        pod = _litellm_status(core, name)
        status = pod["status"]["containerStatuses"][0]
        return status["restartCount"] > before["restartCount"] and status["ready"] and _pod_ready(pod) and pod

    after = twin.wait_for(restarted_and_ready, timeout=180, what="the killed container to be restarted and ready")
    # the service proxy takes the ready endpoint back a moment later (its lag, as kube-proxy's)
    twin.wait_for(lambda: answers(litellm + "/health/liveliness"), timeout=30, what="the Service to answer again")
    return {"before": before, "after": after, "pid": process[0], "workdir": workdir, "url": litellm}


def test_a_killed_container_is_restarted_and_ready_again(killed_litellm):
    before, after = killed_litellm["before"], killed_litellm["after"]
    status = after["status"]["containerStatuses"][0]
    assert status["restartCount"] == before["restartCount"] + 1
    assert "running" in status["state"]
    assert status["lastState"]["terminated"]["reason"] == "Error"
    new = _processes(killed_litellm["workdir"])
    assert len(new) == 1 and new[0][0] != killed_litellm["pid"], "a new process runs the container"
    answer = httpx.get(killed_litellm["url"] + "/health/liveliness", timeout=30)
    assert answer.status_code == 200


def test_a_container_killed_by_sigkill_exits_137(killed_litellm):
    status = killed_litellm["after"]["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 137


def test_a_rolling_update_keeps_the_service_answering(twin, core, litellm):
    deployment = json.loads(twin.kubectl("get", "deployment/litellm", "-n", "ml", "-o", "json").stdout)
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    old = {p.metadata.name for p in core.list_namespaced_pod("ml", label_selector="app=litellm").items}
    results: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def client_loop():
        while not stop.is_set():
            started = time.monotonic()
            try:  # a new connection every time: each one goes through the Service's current endpoints
                results.append((started, httpx.get(litellm + "/health/liveliness", timeout=30).status_code))
            except httpx.HTTPError as exc:
                results.append((started, repr(exc)))
            stop.wait(0.05)

    loop = threading.Thread(target=client_loop, daemon=True)
    loop.start()
    try:
        twin.wait_for(lambda: len(results) >= 3, timeout=30, what="the client loop")
        twin.kubectl("rollout", "restart", "deployment/litellm", "-n", "ml")
        twin.kubectl("rollout", "status", "deployment/litellm", "-n", "ml", "--timeout=180s", timeout=200)
        twin.wait_for(
            lambda: (
                not {p.metadata.name for p in core.list_namespaced_pod("ml", label_selector="app=litellm").items} & old
            ),
            timeout=120,
            what="the old Pod to be gone",
        )
        count = len(results)
        twin.wait_for(lambda: len(results) >= count + 3, timeout=30, what="requests after the rollout")
    finally:
        stop.set()
        loop.join(timeout=60)
    failures = [r for r in results if r[1] != 200]
    assert not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:5]}"
    assert len(results) >= 20
    (new,) = _ready_pods(core, "ml", "app=litellm")
    assert new.metadata.name not in old


# -- nodes --------------------------------------------------------------------------------------------------------


def test_a_rebooted_lxc_makes_its_node_not_ready_then_ready_with_the_new_memory(twin, core):
    pve = twin.proxmox().nodes("pve")
    node = core.read_node("k3s-worker-02")
    assert parse_quantity(node.status.capacity["memory"]) == 8192 * 2**20
    pve.lxc(103).config.put(memory=16384)
    assert core.read_node("k3s-worker-02").status.capacity["memory"] == node.status.capacity["memory"]

    upid = pve.lxc(103).status.reboot.post()
    seen: list[tuple[str, int]] = []
    w = watch.Watch()
    for event in w.stream(
        core.list_node,
        field_selector="metadata.name=k3s-worker-02",
        resource_version=node.metadata.resource_version,
        timeout_seconds=90,
    ):
        status = event["object"].status
        ready = next(c.status for c in status.conditions if c.type == "Ready")
        seen.append((ready, int(parse_quantity(status.capacity["memory"]) / 2**20)))
        if ready == "True" and seen[-1][1] == 16384:
            w.stop()
    assert seen and seen[-1] == ("True", 16384), seen
    assert ("False", 8192) in seen, f"the node went NotReady while its LXC was down: {seen}"
    assert seen.index(("False", 8192)) < seen.index(("True", 16384))
    task = twin.wait_for(
        lambda: (t := pve.tasks(upid).status.get())["status"] == "stopped" and t, timeout=60, what="the reboot task"
    )
    assert task["exitstatus"] == "OK"
    allocatable = core.read_node("k3s-worker-02").status.allocatable["memory"]
    assert parse_quantity(allocatable) == (16384 - 256) * 2**20


# -- deletions ----------------------------------------------------------------------------------------------------


def test_deleting_a_claim_after_its_pod_removes_its_volume_and_directory(twin, core):
    core.create_namespaced_persistent_volume_claim(
        "default",
        {
            "metadata": {"name": "scratch"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "scratch"},
            "spec": {
                "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "infinity"]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "scratch"}}],
            },
        },
    )
    pvc = twin.wait_for(
        lambda: (c := core.read_namespaced_persistent_volume_claim("scratch", "default")).status.phase == "Bound" and c,
        timeout=120,
        what="the claim to be bound",
    )
    twin.wait_for(lambda: core.read_namespaced_pod("scratch", "default").status.phase == "Running", timeout=60)
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    path = Path(pv.spec.host_path.path)
    assert path.parent == twin.lab_dir.resolve() / "volumes"
    assert path.is_dir()
    (path / "data.txt").write_text("written by the pod")

    core.delete_namespaced_pod("scratch", "default")
    twin.wait_for(lambda: _gone(lambda: core.read_namespaced_pod("scratch", "default")), timeout=60, what="pod gone")
    assert (path / "data.txt").exists(), "the volume outlives its Pod while the claim exists"
    assert core.read_persistent_volume(pv.metadata.name).status.phase == "Bound"

    core.delete_namespaced_persistent_volume_claim("scratch", "default")
    twin.wait_for(
        lambda: _gone(lambda: core.read_persistent_volume(pv.metadata.name)), timeout=90, what="the PV to be deleted"
    )
    assert not path.exists()


def test_deleting_a_namespace_stops_its_workloads(twin, core):
    _ensure_namespace(core, "ml")
    twin.kubectl("apply", "-f", "-", stdin=manifests.ollama())
    twin.kubectl("rollout", "status", "deployment/ollama", "-n", "ml", "--timeout=120s")
    services = twin.endpoints["services"]
    twin.wait_for(lambda: answers(services["ml/ollama"] + "/"), timeout=30, what="the ml/ollama Service")
    workloads = twin.state()["workloads"]
    ports = [p["port"] for w in workloads.values() for p in w["pods"] if p["port"]]
    assert workloads["ml/ollama"]["ready"] is True and ports
    processes = _processes(f"{twin.lab_dir}/workloads/ml_")  # LiteLLM's, when the tests above left one running

    twin.kubectl("delete", "namespace", "ml", "--wait=false")
    for url in services.values():
        twin.wait_for(lambda url=url: refused(url + "/"), timeout=120, what=f"{url} to stop answering")
    for port in ports:
        twin.wait_for(lambda port=port: refused(f"http://{twin.address}:{port}/"), timeout=60, what="servers to stop")
    twin.wait_for(lambda: _gone(lambda: core.read_namespace("ml")), timeout=180, what="the namespace to be gone")
    assert twin.state()["workloads"] == {}
    assert not [p for p in processes if Path(f"/proc/{p[0]}").exists()], "the LiteLLM processes are stopped"
    assert not _processes(f"{twin.lab_dir}/workloads/ml_")
