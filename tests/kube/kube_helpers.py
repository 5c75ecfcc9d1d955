"""Helpers of the Kubernetes contract tests: manifests, kubectl JSON, waiting for Pods and scheduling verdicts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.twin import HELM, Twin

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHART = str(FIXTURES / "demo-chart")
PAUSE = "registry.k8s.io/pause:3.10"
# a tag the lab's registries do not serve (lab/images.yaml): its Pods never start
UNKNOWN_IMAGE = "nginx:0.0.0-not-in-the-lab"


def kjson(twin: Twin, *args: str) -> dict:
    """``kubectl <args> -o json``, parsed."""
    return json.loads(twin.kubectl(*args, "-o", "json").stdout)


def helm(twin: Twin, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    """The real ``helm`` against the twin (its kubeconfig)."""
    return subprocess.run(
        [HELM, "--kubeconfig", twin.kubeconfig, *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        env=twin.env,
    )


def deployment(
    name: str,
    image: str = PAUSE,
    replicas: int = 1,
    memory: str | None = None,
    strategy: str = "RollingUpdate",
    labels: dict | None = None,
    **pod_spec,
) -> dict:
    """A Deployment of ``replicas`` Pods labelled ``app=<name>``, one container ``main`` (``pod_spec`` merged in)."""
    container: dict = {"name": "main", "image": image}
    if memory:
        container["resources"] = {"requests": {"memory": memory}, "limits": {"memory": memory}}
    spec = {"containers": [container], "terminationGracePeriodSeconds": 5, **pod_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name, **(labels or {})}},
        "spec": {
            "replicas": replicas,
            "strategy": {"type": strategy},
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def live_pods(twin: Twin, namespace: str, selector: str) -> list[dict]:
    """Pods matching ``selector`` that are not being deleted."""
    items = kjson(twin, "-n", namespace, "get", "pods", "-l", selector)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_running(twin: Twin, namespace: str, selector: str, count: int = 1, timeout: float = 60) -> list[dict]:
    """Wait until exactly ``count`` live Pods match ``selector``, all Running and Ready; return them."""

    def running():
        pods = live_pods(twin, namespace, selector)
        ok = len(pods) == count and all(p["status"].get("phase") == "Running" and is_ready(p) for p in pods)
        return pods if ok else None

    return twin.wait_for(running, timeout=timeout, what=f"{count} running pod(s) {selector} in {namespace}")


def unschedulable_message(twin: Twin, namespace: str, selector: str, contains: str = "", timeout: float = 30) -> str:
    """Wait for a Pod of ``selector`` whose PodScheduled condition is False (containing ``contains``)."""

    def message():
        for pod in live_pods(twin, namespace, selector):
            for cond in pod["status"].get("conditions") or []:
                if cond["type"] == "PodScheduled" and cond["status"] == "False" and contains in cond["message"]:
                    return cond["message"]
        return None

    return twin.wait_for(message, timeout=timeout, what=f"{selector} unschedulable ({contains!r})")


def events(twin: Twin, namespace: str, reason: str) -> list[dict]:
    return kjson(twin, "-n", namespace, "get", "events", "--field-selector", f"reason={reason}")["items"]


def node_ready(node: dict) -> str:
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


def proxmox(twin: Twin):
    """A proxmoxer client of the twin's Proxmox VE API with the lab inventory's API token."""
    from proxmoxer import ProxmoxAPI

    url = twin.endpoints["proxmox"]
    return ProxmoxAPI(
        url.split("://", 1)[1].rsplit(":", 1)[0],
        port=int(url.rsplit(":", 1)[1]),
        user="root@pam",
        token_name="inference",
        token_value=twin.secret("proxmox-token-secret"),
        verify_ssl=twin.endpoints["ca_file"],
    )
