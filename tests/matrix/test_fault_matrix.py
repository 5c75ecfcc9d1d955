"""The fault matrix: upgrades run by the real playbooks while the twin injects faults (lab/faults.py).

For each fault the play fails (or is refused) with a message naming the step and the cause, and the tier ends
exactly in the previous state (compared as a normalised dump of the Helm values, the LiteLLM and consumer
config, the LXC size, the models Ollama has, the model pins and the node's schedulability), or exactly in the
target state; nothing is lost, and the old model answers through LiteLLM. Where the fault outlives the run
(the API stays down), the run says "rollback incomplete" and names restore-tier.yml; once the fault is
cleared, that playbook puts the previous state back.

One twin for the module: a rebuild (phi4-mini on Ollama) is the previous state every case starts from.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.matrix.helpers import (
    INVENTORY,
    answers_through_litellm,
    assert_failed_and_back,
    assert_refused_unchanged,
    dump,
    helm,
    upgrade,
)
from tests.twin import ANSIBLE_PLAYBOOK, HELM, ROOT, wait_for

pytestmark = pytest.mark.slow


# -- the matrix -------------------------------------------------------------------------------------------------


def test_proxmox_api_500_on_the_resize(twin):
    twin.fault("inject", "proxmox-error", "status=500", "method=PUT", "path=/lxc/103/config", "message=unable to write")
    run = upgrade(twin, "qwen2.5:14b")
    assert_failed_and_back(twin, run, "capacity", "500", "unable to write")


def test_proxmox_api_500_before_the_run(twin):
    twin.fault("inject", "proxmox-error", "status=500", "path=/lxc/103/config", "message=unable to read")
    run = upgrade(twin, "qwen2.5:14b")
    assert_refused_unchanged(twin, run, "cannot read LXC container 103", "500 Internal Server Error: unable to read")


def test_proxmox_api_unreachable_before_the_run(twin):
    twin.fault("inject", "proxmox-down")
    run = upgrade(twin, "qwen2.5:14b")
    # "cannot reach", never the API saying no: the URL and the connection error
    assert_refused_unchanged(
        twin, run, f"cannot reach https://{twin.address}:8006/api2/json", "Connection refused", "Nothing was changed"
    )


def test_kubernetes_api_unreachable_before_the_run(twin, tmp_path):
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(Path(twin.kubeconfig).read_text().replace(f"{twin.address}:6443", f"{twin.address}:1"))
    run = upgrade(twin, "qwen2.5:14b", "-e", f"inference_kubeconfig={unreachable}")
    assert_refused_unchanged(
        twin,
        run,
        f"cannot reach the Kubernetes API at https://{twin.address}:1 (kubeconfig {unreachable})",
        "Connection refused",
        "Nothing was changed",
    )


def test_proxmox_task_failure_on_the_restart(twin):
    twin.fault("inject", "proxmox-task-failure", "action=any", "count=1")
    assert_failed_and_back(twin, upgrade(twin, "qwen2.5:14b"), "capacity", "lxc-start")


def test_host_memory_short(twin):
    twin.fault("inject", "host-memory-short", "mib=50000")
    assert_refused_unchanged(
        twin, upgrade(twin, "qwen2.5:14b"), "too large for the Proxmox host", "Nothing was changed"
    )


def test_a_helm_release_stuck_in_pending_upgrade(twin):
    # what a helm killed while it waits leaves behind (real Helm against the real API server): the release's
    # newest revision stays pending-upgrade and Helm refuses any other operation on it
    chart = str(ROOT / "charts" / "litellm")
    wait = ("--reuse-values", "--set", "image.tag=missing", "--wait", "--timeout", "120s")
    stuck = subprocess.Popen(
        [HELM, "upgrade", "litellm", chart, "-n", "ml", "--kubeconfig", twin.kubeconfig, *wait],
        env=twin.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        twin.wait_for(
            lambda: (
                json.loads(helm(twin, "history", "litellm", "-o", "json").stdout)[-1]["status"] == "pending-upgrade"
            ),
            what="a pending-upgrade revision",
        )
    finally:
        stuck.kill()
        stuck.wait()
    run = upgrade(twin, "qwen2.5:3b")
    assert run.returncode != 0
    assert "Helm release litellm is stuck in pending-upgrade" in run.stdout, run.stdout[-3000:]
    assert "Nothing was changed" in run.stdout and "Record the current state" not in run.stdout
    fix = re.search(r"Put it back with: helm rollback litellm (\d+) -n ml", run.stdout)
    assert fix, run.stdout[-3000:]
    # the command the message gives puts the release back; the old LiteLLM Pod served all along
    helm(twin, "rollback", "litellm", fix.group(1), "--wait")
    assert dump(twin) == twin.baseline and answers_through_litellm(twin)


def test_a_second_concurrent_run_is_refused_naming_the_holder(twin):
    first = subprocess.Popen(
        [
            ANSIBLE_PLAYBOOK,
            "-i",
            INVENTORY,
            str(ROOT / "playbooks" / "upgrade-model.yml"),
            "-e",
            "tier=ollama",
            "-e",
            "model=qwen2.5:3b",
        ],
        cwd=ROOT,
        env=twin.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(
        lambda: twin.kubectl("-n", "ml", "get", "lease", "inference-run", check=False).returncode == 0,
        timeout=120,
        interval=0.2,
        what="the first run's lock",
    )
    second = upgrade(twin, "qwen2.5:14b")
    assert second.returncode != 0
    assert "another run holds the inference tier" in second.stdout and "upgrade-ollama-qwen2.5_3b" in second.stdout
    out, _ = first.communicate(timeout=900)
    assert first.returncode == 0, out[-3000:]
    assert dump(twin)["values"]["ollama"]["model"] == "qwen2.5:3b"
