"""The run lock and record of the playbooks (plugins/module_utils/inference_run.py) against the real API server."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.inference_run import (
    RunLock,
    RunLockError,
    holder_gone,
    holder_identity,
)

pytestmark = pytest.mark.slow


def _lock(twin, namespace: str) -> RunLock:
    return RunLock(twin.kubeconfig, None, namespace, "inference-run")


def test_second_holder_is_refused_naming_the_first_and_since_when(twin, namespace):
    first, second = _lock(twin, namespace), _lock(twin, namespace)
    try:
        info, warning = first.acquire("ops@ctl pid 1 run A", 600)
        assert info["holder"] == "ops@ctl pid 1 run A" and warning is None
        with pytest.raises(RunLockError) as refused:
            second.acquire("ops@ctl pid 2 run B", 600)
        message = str(refused.value)
        assert "ops@ctl pid 1 run A" in message and info["acquired"] in message
        assert f"kubectl -n {namespace} delete lease inference-run" in message
        # the holder renews and releases; then the second run gets it
        assert first.renew("ops@ctl pid 1 run A", 600)["holder"] == "ops@ctl pid 1 run A"
        assert not second.release("ops@ctl pid 2 run B"), "a run never releases another run's lock"
        assert first.release("ops@ctl pid 1 run A")
        assert second.acquire("ops@ctl pid 2 run B", 600)[0]["holder"] == "ops@ctl pid 2 run B"
    finally:
        first.close()
        second.close()


def test_an_expired_lock_is_taken_over_with_a_warning_and_the_old_holder_loses_it(twin, namespace):
    old, new = _lock(twin, namespace), _lock(twin, namespace)
    try:
        old.acquire("ops@elsewhere pid 7 run A", 1)
        time.sleep(1.5)
        info, warning = new.acquire("ops@ctl pid 8 run B", 600)
        assert info["holder"] == "ops@ctl pid 8 run B"
        assert "took over the lock of ops@elsewhere pid 7 run A" in warning and "not renewed" in warning
        with pytest.raises(RunLockError, match="lost the lock"):
            old.renew("ops@elsewhere pid 7 run A", 1)
        lease = new.read_lease()
        assert lease.spec.lease_transitions == 1
    finally:
        old.close()
        new.close()


def test_a_holder_whose_process_is_gone_from_this_host_is_taken_over_at_once(twin, namespace):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = holder_identity("A").rsplit(" pid ", 1)[0] + f" pid {dead.pid} run A"
    assert holder_gone(holder)
    assert not holder_gone(holder_identity("B")), "this process's controller runs"
    old, new = _lock(twin, namespace), _lock(twin, namespace)
    try:
        old.acquire(holder, 600)
        _, warning = new.acquire(holder_identity("B"), 600)
        assert "its process is gone from this host" in warning
    finally:
        old.close()
        new.close()


def test_the_record_is_a_secret_that_survives_the_run(twin, namespace, api):
    from kubernetes import client

    lock = _lock(twin, namespace)
    try:
        assert lock.read_record() is None
        record = {"run_id": "A", "step": "deploy", "status": "running", "snapshot": {"lxc": {"103": {"memory": 8192}}}}
        lock.write_record(record, {"app.kubernetes.io/part-of": "home-lab"})
        lock.write_record({**record, "step": "gate"}, {"app.kubernetes.io/part-of": "home-lab"})
        assert lock.read_record()["step"] == "gate"
        secret = client.CoreV1Api(api).read_namespaced_secret("inference-run-record", namespace)
        assert secret.type == "Opaque" and set(secret.data) == {"record.json"}
    finally:
        lock.close()


@pytest.mark.parametrize(
    ("status", "left"),
    [
        ("running", True),
        ("rollback incomplete", True),
        ("succeeded", False),
        ("rolled back", False),
        ("restored", False),
    ],
)
def test_a_record_stays_unfinished_until_a_restore_completes(status, left):
    from ansible_collections.homelab.inference.plugins.module_utils.inference_run import unfinished

    record = {"run_id": "A", "status": status, "snapshot": {}}
    assert (unfinished(record, "B") is record) is left
    assert unfinished(record, "A") is None, "a run never restores its own record"
    assert unfinished(None, "B") is None


def test_a_step_in_check_mode_sets_its_fact_and_calls_no_api(module_runner, tmp_path):
    """A preview records nothing: state=recorded in check mode returns the step's fact without reading the record
    (the API server here refuses every connection, so any call would fail the task)."""
    from ansible_collections.homelab.inference.plugins.modules import inference_run

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    args = {"kubeconfig": str(kubeconfig), "namespace": "ml", "name": "inference-run", "run_id": "r1"}
    step = module_runner(inference_run, dict(args, state="recorded", step="gate", status="running"), check_mode=True)
    assert not step.failed, step.get("msg")
    assert step["changed"] is False and step["ansible_facts"] == {"inference_run_current_step": "gate"}
    assert step["record"] == {} and step["lease"] == {}
    acquire = module_runner(inference_run, dict(args, state="acquired"), check_mode=True)
    assert acquire.failed and "127.0.0.1:1" in acquire["msg"], "acquiring in check mode still reads the lock"
