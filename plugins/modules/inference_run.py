#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, annotations, division, print_function

DOCUMENTATION = r"""
module: inference_run
short_description: Hold the inference tier's lock (a Kubernetes Lease) and keep the run record in the cluster
description:
  - Makes runs of the inference playbooks exclusive and recorded. The lock is a C(coordination.k8s.io/v1) Lease
    O(name) in O(namespace); the run record is the Secret C(<name>-record) next to it (JSON under C(record.json)).
  - O(state=acquired) takes the lock for this run. Another run's Lease that is not expired refuses it, naming the
    holder (C(user@host pid N run ID)) and since when. A Lease not renewed for its O(duration), or whose holder
    process is gone from this host (a killed controller), is taken over with a warning. Updates carry the
    Lease's C(resourceVersion), so of two runs racing for the lock one gets it and the other is refused.
    Returns RV(unfinished), the record of another run that was not brought to an end (status C(running), when it
    was stopped half-way by a kill, Ctrl-C or a lost controller; or C(rollback incomplete), when its rollback or
    restore left pieces out), so the caller can restore what it recorded before taking a new snapshot.
  - O(state=recorded) renews the lock and writes the record with O(step), O(status) and O(data) merged in. Write it
    before the first change, with the recorded previous state in O(data), and at every step after.
  - O(state=released) writes the final O(status) (when given) and deletes the Lease if this run holds it.
  - In check mode O(state=acquired) only checks that the lock is free (it fails like a real run would),
    O(state=recorded) calls no API (it sets the step's fact only) and O(state=released) changes nothing.
version_added: "0.1.0"
author: home-lab inference project (!UNKNOWN)
options:
  kubeconfig:
    description:
      - Path to the kubeconfig; the C(KUBECONFIG) environment variable or C(~/.kube/config) when not set.
    type: path
  context:
    description:
      - Context of the kubeconfig to use; its current context when not set.
    type: str
  namespace:
    description:
      - Namespace of the Lease and the record; created when absent.
    type: str
    default: ml
  name:
    description:
      - Name of the Lease; the record is the Secret C(<name>-record).
    type: str
    default: inference-run
  run_id:
    description:
      - Identifier of this run (the report's run id); part of the holder identity.
    type: str
    required: true
  duration:
    description:
      - Seconds the lock stays valid without a renewal (C(leaseDurationSeconds)). Longer than the longest step
        between two O(state=recorded) calls.
    type: int
    default: 1800
  state:
    description:
      - C(acquired), C(recorded) or C(released) (see the description).
    type: str
    choices: [acquired, recorded, released]
    default: acquired
  step:
    description:
      - With O(state=recorded), the step the run has reached (C(capacity), C(deploy), ...).
    type: str
  status:
    description:
      - The run's status to record. C(running) while it changes things; then C(succeeded), C(rolled back),
        C(rollback incomplete) or C(restored).
    type: str
    choices: [running, succeeded, rolled back, rollback incomplete, restored, failed]
  data:
    description:
      - Keys merged into the record (for example C(kind), C(tier), C(model), C(snapshot), C(plan)).
    type: dict
    default: {}
  labels:
    description:
      - Labels of the record Secret.
    type: dict
    default: {app.kubernetes.io/part-of: home-lab}
requirements:
  - kubernetes >= 24 (Python library) on the host that runs the module
notes:
  - Follows the upstream API of Lease C(coordination.k8s.io/v1) (C(holderIdentity), C(acquireTime), C(renewTime),
    C(leaseDurationSeconds), C(leaseTransitions)) and Secret C(v1).
"""

EXAMPLES = r"""
- name: Take the lock before any change
  inference_run:
    kubeconfig: "{{ inference_kubeconfig }}"
    run_id: "{{ inference_run_id }}"
    duration: 1800
  register: inference_run_lock

- name: Record the previous state and the step, before the first change
  inference_run:
    kubeconfig: "{{ inference_kubeconfig }}"
    run_id: "{{ inference_run_id }}"
    state: recorded
    step: capacity
    status: running
    data:
      kind: upgrade
      tier: ollama
      model: qwen2.5:14b
      snapshot: "{{ inference_snapshot_data }}"

- name: Release the lock with the outcome
  inference_run:
    kubeconfig: "{{ inference_kubeconfig }}"
    run_id: "{{ inference_run_id }}"
    state: released
    status: succeeded
"""

RETURN = r"""
lease:
  description: The Lease after the call (empty after a release).
  returned: always
  type: dict
  sample:
    holder: ops@ctl pid 4242 run 20261130T101500Z-upgrade-ollama-qwen2.5_14b
    acquired: "2026-11-30T10:15:00.000000Z"
    renewed: "2026-11-30T10:17:12.000000Z"
    duration: 1800
    age: 0.2
    expired: false
holder:
  description: This run's holder identity.
  returned: always
  type: str
controller_pid:
  description:
    - PID of the C(ansible-playbook) process of this run (helpers such as M(homelab.inference.llm_probe) stop
      when it is gone).
  returned: always
  type: int
record:
  description: The run record after the call (C(run_id), C(holder), C(step), C(status), C(updated) and O(data)).
  returned: always
  type: dict
unfinished:
  description:
    - With O(state=acquired), the record of another run whose status is C(running) or C(rollback incomplete)
      (else null).
  returned: always
  type: dict
taken_over:
  description: The warning given when another run's expired Lease was taken over (else null).
  returned: always
  type: str
ansible_facts:
  description: Facts set for the rest of the play.
  returned: with O(state=recorded) and O(step)
  type: complex
  contains:
    inference_run_current_step:
      description: The step this call recorded (the step the run has reached; check mode sets it too).
      type: str
      sample: deploy
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.homelab.inference.plugins.module_utils.inference_run import (
    HAS_KUBERNETES,
    RunLock,
    RunLockError,
    controller_pid,
    holder_identity,
    micro_time,
    now,
    unfinished,
    unreachable,
)

try:
    import urllib3
    from kubernetes.config.config_exception import ConfigException
except ImportError:  # pragma: no cover - reported by main() with missing_required_lib
    pass


def module_args() -> dict:
    return dict(
        kubeconfig=dict(type="path"),
        context=dict(type="str"),
        namespace=dict(type="str", default="ml"),
        name=dict(type="str", default="inference-run"),
        run_id=dict(type="str", required=True),
        duration=dict(type="int", default=1800),
        state=dict(type="str", choices=["acquired", "recorded", "released"], default="acquired"),
        step=dict(type="str"),
        status=dict(
            type="str", choices=["running", "succeeded", "rolled back", "rollback incomplete", "restored", "failed"]
        ),
        data=dict(type="dict", default={}),
        labels=dict(type="dict", default={"app.kubernetes.io/part-of": "home-lab"}),
    )


class InferenceRun:
    """One call of the module: take, record or release."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        p = module.params
        self.holder = holder_identity(p["run_id"])
        self.lock = RunLock(p["kubeconfig"], p["context"], p["namespace"], p["name"])

    def run(self) -> dict:
        p = self.module.params
        result = {"changed": False, "holder": self.holder, "lease": {}, "record": {}, "unfinished": None}
        result["controller_pid"] = controller_pid()
        result["taken_over"] = None
        if self.module.check_mode and p["state"] == "recorded":
            # a preview records nothing: the step reached as a fact, without a read of the record
            self.lock.close()
            if p["step"]:
                result["ansible_facts"] = {"inference_run_current_step": p["step"]}
            return result
        try:
            record = self.lock.read_record() or {}
            result["record"] = record
            step = {"acquired": self._acquire, "recorded": self._record, "released": self._release}[p["state"]]
            step(record, result)
        except RunLockError as exc:
            self.module.fail_json(msg=str(exc), **result)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            msg = unreachable(self.lock.api.configuration.host, p["kubeconfig"], exc)
            self.module.fail_json(msg=msg + (". Nothing was changed." if p["state"] == "acquired" else "."), **result)
        finally:
            self.lock.close()
        return result

    def _acquire(self, record: dict, result: dict) -> None:
        p = self.module.params
        result["unfinished"] = unfinished(record, p["run_id"])
        if self.module.check_mode:
            lease = self.lock.read_lease()
            info = self.lock.describe(lease) if lease is not None else {}
            if info and info["holder"] != self.holder and not info["expired"]:
                self.lock.refuse(lease)
            result["lease"] = info
            return
        result["lease"], result["taken_over"] = self.lock.acquire(self.holder, p["duration"])
        result["changed"] = True
        if result["taken_over"]:
            self.module.warn(result["taken_over"])

    def _record(self, record: dict, result: dict) -> None:
        p = self.module.params
        if p["step"]:
            # the step reached, as a fact (the caller's failure message names it): only when this call succeeds,
            # so a run that cannot renew its lock has not reached the step
            result["ansible_facts"] = {"inference_run_current_step": p["step"]}
        if self.module.check_mode:
            return
        result["lease"] = self.lock.renew(self.holder, p["duration"])
        result["record"] = self._write(record)
        result["changed"] = True

    def _release(self, record: dict, result: dict) -> None:
        p = self.module.params
        if self.module.check_mode:
            return
        if p["status"] and record.get("run_id") == p["run_id"]:
            result["record"] = self._write(record)
        result["changed"] = self.lock.release(self.holder)

    def _write(self, record: dict) -> dict:
        p = self.module.params
        if record.get("run_id") != p["run_id"]:
            record = {"run_id": p["run_id"], "started": micro_time(now())}
        record.update(p["data"])
        record["holder"] = self.holder
        record["updated"] = micro_time(now())
        if p["step"]:
            record["step"] = p["step"]
        if p["status"]:
            record["status"] = p["status"]
        self.lock.write_record(record, p["labels"])
        return record


def main():
    module = AnsibleModule(argument_spec=module_args(), supports_check_mode=True)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"))
    try:
        run = InferenceRun(module)
    except ConfigException as exc:
        module.fail_json(msg=f"cannot load kubeconfig {module.params['kubeconfig'] or '~/.kube/config'}: {exc}")
    module.exit_json(**run.run())


if __name__ == "__main__":
    main()
