"""Zero failed requests while a Deployment is replaced, against a whole twin: the real API server and controllers,
the twin's kubelet terminating Pods as a kubelet does (preStop, SIGTERM, SIGKILL after the grace period) and its
service proxy lagging 1 s behind the endpoints as kube-proxy does (lab/topology.yaml kubernetes.proxy_lag_seconds).

A client sends requests continuously through the Service, each on a new connection, while the Deployment rolls
(RollingUpdate, maxSurge 1, maxUnavailable 0). Without a preStop delay the Pod that got SIGTERM stops accepting while
the proxy still sends it new connections: requests fail. With the charts' settings (rendered from the real charts
with the lab inventory's values) none does."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from lab.serviceproxy import topology_lag
from tests.lab import manifests
from tests.twin import HELM, ROOT, answers

pytestmark = pytest.mark.slow

HAS_LITELLM = (ROOT / ".venv-litellm" / "bin" / "litellm").exists()
LAB_VARS = ROOT / "inventory" / "lab" / "group_vars" / "all" / "main.yml"
BIG_MODEL = "llama3.1:70b"  # 40 GB: a pull lasts about 8 s in the twin (800 s at 50 MB/s, scaled)


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespace(core):
    try:
        core.create_namespace({"metadata": {"name": "ml"}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    return "ml"


def lab_values(role: str) -> dict:
    lab = yaml.safe_load(LAB_VARS.read_text())
    return {
        "preStopSleepSeconds": lab[f"{role}_prestop_sleep_seconds"],
        "terminationGracePeriodSeconds": lab[f"{role}_termination_grace_period_seconds"],
    }


def rendered_chart(twin, chart: str, values: dict) -> list[dict]:
    """``helm template`` of the real chart with ``values`` (a file, never --set)."""
    path = twin.lab_dir / f"values-{chart}.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = subprocess.run(
        [HELM, "template", chart, str(ROOT / "charts" / chart), "-n", "ml", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=twin.env,
        timeout=60,
    )
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def ollama(pod: dict | None = None, container: dict | None = None) -> str:
    """Service and Deployment ml/ollama (the emulated Ollama), rolling with a ready surge like LiteLLM's."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "ollama", "namespace": "ml"},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": {"app": "ollama"}},
            "template": {
                "metadata": {"labels": {"app": "ollama"}},
                "spec": {
                    "containers": [
                        {
                            "name": "ollama",
                            "image": "ollama/ollama:0.13.3",
                            "args": ["serve"],
                            "ports": [{"name": "http", "containerPort": 11434}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                            "resources": {"requests": {"memory": "256Mi"}},
                            **(container or {}),
                        }
                    ],
                    **(pod or {}),
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ollama", "namespace": "ml"},
        "spec": {"selector": {"app": "ollama"}, "ports": [{"name": "http", "port": 11434, "targetPort": "http"}]},
    }
    return yaml.safe_dump_all([service, deployment])


# -- observing a rollover ---------------------------------------------------------------------------------------


class Client:
    """Requests through a Service URL in a loop, each on a new connection (so each one is a new choice of the
    proxy), recording (time, status or error class)."""

    def __init__(self, url: str, pause: float = 0.02):
        self.url, self.pause = url, pause
        self.results: list[tuple[float, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.results.append((started, httpx.get(self.url, timeout=30).status_code))
            except httpx.HTTPError as exc:
                self.results.append((started, type(exc).__name__))
            self._stop.wait(self.pause)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def failures(self) -> list[tuple[float, int | str]]:
        return [r for r in self.results if r[1] != 200]


class PodWatch:
    """Every version of the Pods matching ``selector`` from now on (a watch in a thread), so the final status
    the kubelet posts just before it confirms a deletion is seen."""

    def __init__(self, core, namespace: str, selector: str):
        self.core, self.namespace, self.selector = core, namespace, selector
        self.versions: list[dict] = []
        self._since = core.list_namespaced_pod(namespace, label_selector=selector).metadata.resource_version
        self._watch = watch.Watch()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        stream = self._watch.stream(
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=self.selector,
            resource_version=self._since,
            timeout_seconds=300,
        )
        try:
            for event in stream:
                pod = self.core.api_client.sanitize_for_serialization(event["object"])
                self.versions.append({**pod, "_event": event["type"], "_at": time.monotonic()})
        except Exception:  # stop() closes the connection under the stream
            if not self._stopped:
                raise

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped = True
        self._watch.stop()

    def of(self, name: str) -> list[dict]:
        return [p for p in self.versions if p["metadata"]["name"] == name]

    def deleted_at(self, name: str) -> float:
        """When the Pod got its deletionTimestamp (the kubelet's cue to terminate it)."""
        return next(p["_at"] for p in self.of(name) if p["metadata"].get("deletionTimestamp"))

    def gone_at(self, name: str) -> float | None:
        return next((p["_at"] for p in self.of(name) if p["_event"] == "DELETED"), None)

    def final_status(self, name: str) -> dict:
        """The last status posted before the Pod was removed."""
        return self.of(name)[-1]["status"]


def live_pods(core, selector: str = "app=ollama") -> set[str]:
    return {
        p.metadata.name
        for p in core.list_namespaced_pod("ml", label_selector=selector).items
        if not p.metadata.deletion_timestamp
    }


def all_pods(core, selector: str = "app=ollama") -> set[str]:
    return {p.metadata.name for p in core.list_namespaced_pod("ml", label_selector=selector).items}


def apply_and_settle(twin, core, manifest: str, deployment: str, selector: str, timeout: float = 120) -> str:
    """Apply, wait for the rollout, for every replaced Pod to be gone and for the proxy to know it (its lag); the
    one Pod left."""
    twin.kubectl("apply", "-f", "-", stdin=manifest)
    twin.kubectl("rollout", "status", f"deployment/{deployment}", "-n", "ml", f"--timeout={int(timeout)}s")
    (pod,) = twin.wait_for(lambda: len(p := all_pods(core, selector)) == 1 and p, timeout=60, what="one Pod left")
    time.sleep(topology_lag() + 0.5)
    return pod


def roll(twin, core, deployment: str, selector: str, url: str) -> tuple[Client, PodWatch, str, str]:
    """Roll ``deployment`` (kubectl rollout restart) while a client sends requests through ``url``; returns once the
    old Pod is gone and a second more of requests (past the proxy's lag) went through the new one."""
    (old,) = live_pods(core, selector)
    with PodWatch(core, "ml", selector) as pods, Client(url) as requests:
        twin.wait_for(lambda: len(requests.results) >= 5, timeout=30, what="requests before the rollover")
        twin.kubectl("rollout", "restart", f"deployment/{deployment}", "-n", "ml")
        twin.kubectl("rollout", "status", f"deployment/{deployment}", "-n", "ml", "--timeout=180s", timeout=200)
        twin.wait_for(lambda: old not in all_pods(core, selector), timeout=120, what="the old Pod to be gone")
        twin.wait_for(lambda: pods.gone_at(old), timeout=30, what="the watch to see the old Pod go")
        settled = time.monotonic() + 1.5
        twin.wait_for(lambda: requests.results[-1][0] > settled, timeout=30, what="requests after the rollover")
    (new,) = live_pods(core, selector)
    assert new != old
    return requests, pods, old, new


def pod_log(twin, pod: str, container: str) -> str:
    return (twin.lab_dir / "logs" / "pods" / f"ml_{pod}_{container}.log").read_text()


def summary(requests: Client, pods: PodWatch, old: str) -> str:
    deleted = pods.deleted_at(old)
    return json.dumps(
        {
            "requests": len(requests.results),
            "failures (s after the old Pod's deletion, result)": [
                (round(at - deleted, 2), what) for at, what in requests.failures
            ],
        }
    )


# -- the grace period -------------------------------------------------------------------------------------------


def test_a_container_still_busy_when_the_grace_period_ends_is_killed_exit_137(twin, core, namespace):
    """A pull in flight outlasts the grace period (1 s, and upstream's 2 s after SIGTERM): SIGKILL cuts it, the
    API shows exit code 137, reason Error, phase Failed; the Pod is removed right after, not a moment sooner."""
    pod = apply_and_settle(twin, core, ollama(pod={"terminationGracePeriodSeconds": 1}), "ollama", "app=ollama")
    url = twin.endpoints["services"]["ml/ollama"]
    twin.wait_for(lambda: answers(url + "/"), timeout=30, what="ml/ollama through the proxy")
    pulled: list[str] = []

    def pull():
        try:
            with httpx.stream("POST", url + "/api/pull", json={"model": BIG_MODEL}, timeout=60) as response:
                for line in response.iter_lines():
                    pulled.append(line)
            pulled.append("END")
        except httpx.HTTPError as exc:
            pulled.append(type(exc).__name__)

    with PodWatch(core, "ml", "app=ollama") as pods:
        puller = threading.Thread(target=pull, daemon=True)
        puller.start()
        twin.wait_for(lambda: any("completed" in line for line in pulled), timeout=30, what="the pull to progress")
        deleted = time.monotonic()
        core.delete_namespaced_pod(pod, "ml")
        twin.wait_for(lambda: pods.gone_at(pod), timeout=30, what="the Pod to be removed")
        puller.join(timeout=30)
    assert pulled[-1] in ("RemoteProtocolError", "ReadError"), pulled[-3:]
    assert not any('"success"' in line for line in pulled)
    assert 2.0 <= pods.gone_at(pod) - deleted < 5, "SIGKILL 2 s after the SIGTERM, then the Pod is removed"
    status = pods.final_status(pod)
    (container,) = status["containerStatuses"]
    assert container["state"]["terminated"]["exitCode"] == 137, container
    assert container["state"]["terminated"]["reason"] == "Error"
    assert status["phase"] == "Failed"
    assert "killed (SIGKILL)" in pod_log(twin, pod, "ollama")


# -- rollovers ---------------------------------------------------------------------------------------------------


def test_without_a_prestop_delay_a_rollover_fails_requests(twin, core, namespace):
    """The old Pod gets SIGTERM at its deletion and stops accepting; for the proxy's lag it is still an endpoint."""
    apply_and_settle(twin, core, ollama(), "ollama", "app=ollama")
    url = twin.endpoints["services"]["ml/ollama"] + "/"
    rejected = twin.state()["services"]["ml/ollama"]["rejected"]
    requests, pods, old, _new = roll(twin, core, "ollama", "app=ollama", url)
    info = summary(requests, pods, old)
    assert requests.failures, f"some requests fail: {info}"
    assert {what for _at, what in requests.failures} <= {"ConnectError", "RemoteProtocolError", "ReadError"}, info
    deleted = pods.deleted_at(old)
    # as the watch saw the deletion: on a busy machine its thread delivers the event up to a second or so after the
    # kubelet acted on it (1.5 s: a failure seen 0.81 s "before" it on a half-speed day)
    assert all(-1.5 <= at - deleted <= 3 for at, _what in requests.failures), f"right after the deletion: {info}"
    assert twin.state()["services"]["ml/ollama"]["rejected"] > rejected, "the proxy reset them: nothing listened"
    assert "Stopping container ollama (SIGTERM)" in pod_log(twin, old, "ollama")
    assert "PreStop" not in pod_log(twin, old, "ollama")


def test_with_the_charts_settings_a_rollover_fails_no_request(twin, core, namespace):
    """The chart's pod settings (helm template of charts/ollama with the lab inventory's values: the preStop sleep,
    the grace period, the readiness probe) on the same rolling Deployment: no request fails. The old Pod answered
    new connections after its deletion (the proxy's lag), then exited 0 at its SIGTERM."""
    values = lab_values("ollama")
    objs = rendered_chart(twin, "ollama", values)
    spec = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    ctr = spec["containers"][0]
    settings = {k: ctr[k] for k in ("lifecycle", "readinessProbe")}
    assert settings["lifecycle"] == {"preStop": {"sleep": {"seconds": values["preStopSleepSeconds"]}}}
    manifest = ollama(pod={"terminationGracePeriodSeconds": spec["terminationGracePeriodSeconds"]}, container=settings)
    apply_and_settle(twin, core, manifest, "ollama", "app=ollama")
    url = twin.endpoints["services"]["ml/ollama"] + "/"
    requests, pods, old, _new = roll(twin, core, "ollama", "app=ollama", url)
    info = summary(requests, pods, old)
    assert not requests.failures, f"no request fails: {info}"
    assert len(requests.results) >= 20, info

    log = pod_log(twin, old, "ollama")
    assert (
        log.index(f"PreStop hook: sleep {values['preStopSleepSeconds']} s")
        < log.index("(SIGTERM)")
        < log.index("exited (0)")
    )
    served_after = [
        line for line in log[log.index("PreStop hook") : log.index("(SIGTERM)")].splitlines() if '"GET / ' in line
    ]
    assert served_after, "the proxy still sent new connections to the deleted Pod, and it answered them"
    final = pods.final_status(old)
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert final["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert final["phase"] == "Succeeded"
    # (times as the watch saw them, give or take its delivery)
    assert 1.5 <= pods.gone_at(old) - pods.deleted_at(old) < 6, "the preStop delay (2 s), then a prompt exit"


@pytest.mark.skipif(not HAS_LITELLM, reason=manifests.HAS_LITELLM_NOTE)
def test_the_litellm_chart_rolls_over_with_no_failed_request(twin, core, namespace):
    """The real chart (helm install, the lab inventory's rollover values) and the real LiteLLM proxy: uvicorn gets
    a real SIGTERM after the preStop delay; a client of the Service sees no failed request."""
    core.create_namespaced_secret(
        "ml", {"metadata": {"name": "litellm-secrets"}, "stringData": {"master-key": "sk-test-master"}}
    )
    values = {
        **lab_values("litellm"),
        "extraEnvFromSecrets": [],
        "config": {
            "model_list": [
                {
                    "model_name": "ollama-phi",
                    "litellm_params": {
                        "model": "ollama_chat/phi4-mini",
                        "api_base": twin.endpoints["services"]["ml/ollama"],
                        "timeout": 5,
                    },
                }
            ],
            "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
        },
    }
    path = Path(twin.lab_dir) / "litellm-values.yaml"
    path.write_text(yaml.safe_dump(values))
    subprocess.run(
        [HELM, "install", "litellm", str(ROOT / "charts" / "litellm"), "-n", "ml", "-f", str(path)],
        check=True,
        capture_output=True,
        text=True,
        env={**twin.env, "KUBECONFIG": twin.kubeconfig},
        timeout=120,
    )
    selector = "app.kubernetes.io/name=litellm"
    twin.kubectl("rollout", "status", "deployment/litellm", "-n", "ml", "--timeout=180s", timeout=200)
    url = twin.endpoints["services"]["ml/litellm"] + "/health/liveliness"
    twin.wait_for(lambda: answers(url), timeout=60, what="ml/litellm through the proxy")
    requests, pods, old, _new = roll(twin, core, "litellm", selector, url)
    info = summary(requests, pods, old)
    assert not requests.failures, f"no request fails: {info}"
    assert len(requests.results) >= 20, info
    log = pod_log(twin, old, "litellm")
    assert (
        log.index(f"PreStop hook: sleep {values['preStopSleepSeconds']} s")
        < log.index("(SIGTERM)")
        < log.index("Finished server process")
    )
    # uvicorn drains, then re-raises the SIGTERM it caught: 143 (128 + 15) as in a real cluster, not 137 (SIGKILL)
    terminated = pods.final_status(old)["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 143, terminated
    assert pods.gone_at(old) - pods.deleted_at(old) < lab_values("litellm")["terminationGracePeriodSeconds"]
