# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exclusive, recorded runs of the inference playbooks: a Lease and a run record in the cluster.

``RunLock`` holds all Kubernetes I/O of the ``inference_run`` module (like community.proxmox's ProxmoxAnsible
holds the Proxmox API's):

* the **lock** is a ``coordination.k8s.io/v1`` Lease (``<name>`` in the tier's namespace). Its
  ``holderIdentity`` is ``<user>@<host> pid <pid> run <run id>``, ``leaseDurationSeconds`` how long it stays
  valid without a renewal. Another run's unexpired Lease refuses the acquisition; an expired one, or one whose
  holder process is gone from this host, is taken over (with a warning). Updates use the Lease's
  ``resourceVersion``, so two runs that race for it cannot both win (the loser gets 409 and is refused).
* the **record** is a Secret ``<name>-record`` (a Secret because the recorded Helm values may hold keys): JSON
  with the run id, holder, what the run changes, the step it reached, its status (``running``, then
  ``succeeded``, ``rolled back``, ``rollback incomplete`` or ``restored``) and the recorded previous state. It is
  written before the first change, so a run that finds a ``running`` record of another run knows that run died
  half-way, and what to restore.

Upstream API: Lease (coordination.k8s.io/v1), Secret (v1), through the ``kubernetes`` Python client.
"""

from __future__ import absolute_import, annotations, division, print_function

import base64
import getpass
import json
import os
import socket
from datetime import UTC, datetime

try:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    HAS_KUBERNETES = True
except ImportError:  # pragma: no cover - reported by the module with missing_required_lib
    HAS_KUBERNETES = False


class RunLockError(Exception):
    """The lock is held by another run, was lost, or the API refused a request; the message says which."""


def unreachable(host: str, kubeconfig: str | None, exc: BaseException) -> str:
    """The message for a Kubernetes API that could not be reached (no HTTP answer at all): it names the URL,
    the kubeconfig and the connection error, so it is never mistaken for the API saying no."""
    reason = getattr(exc, "reason", None) or exc
    return (
        f"cannot reach the Kubernetes API at {host} (kubeconfig {kubeconfig or '~/.kube/config'}): {reason}. "
        "Check inference_kubeconfig and inference_kube_context, and that the API server runs and this machine can "
        "reach it"
    )


# a record in one of these states was not brought to an end: a run stopped while running (killed, Ctrl-C, a lost
# controller), or its rollback or restore left pieces out; the next run restores it before it records anything
UNFINISHED = ("running", "rollback incomplete")


def unfinished(record: dict | None, run_id: str) -> dict | None:
    """``record`` when it is another run's and that run was not brought to an end (status in :data:`UNFINISHED`),
    else None. A record that stays unfinished is restored by the next run, whichever run wrote it last."""
    record = record or {}
    if record.get("status") in UNFINISHED and record.get("run_id") != run_id:
        return record
    return None


def now() -> datetime:
    return datetime.now(UTC)


def micro_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(text)


def controller_pid() -> int:
    """PID of the ``ansible-playbook`` process that runs this module (the modules run on the controller).

    Walks up the parents through ``/proc`` and takes the topmost process whose command line names
    ``ansible-playbook`` (task workers are forks of it); the module's parent when there is none.
    """
    found, pid = os.getppid(), os.getpid()
    for _attempt in range(32):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                parent = int(fh.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{parent}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError, IndexError):
            break
        if b"ansible-playbook" in cmdline:
            found = parent
        if parent <= 1:
            break
        pid = parent
    return found


def holder_identity(run_id: str) -> str:
    """``user@host pid N run ID``: who holds the lock, readable by the operator who finds it."""
    return f"{getpass.getuser()}@{socket.gethostname()} pid {controller_pid()} run {run_id}"


def holder_gone(holder: str) -> bool:
    """True when ``holder`` names a process on this host that no longer runs (a killed controller)."""
    parts = (holder or "").split()
    if len(parts) < 3 or parts[1] != "pid" or "@" not in parts[0]:
        return False
    if parts[0].split("@", 1)[1] != socket.gethostname():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


class RunLock:
    """The Lease ``name`` and the Secret ``name-record`` in ``namespace``."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str, name: str):
        self.api = config.new_client_from_config(config_file=kubeconfig, context=context or None)
        # the Lease through the typed client; Namespaces and Secrets through _core(): importing the typed
        # CoreV1Api builds hundreds of pydantic validators (about 0.6 s of every call of the module)
        self.coordination = client.CoordinationV1Api(self.api)
        self.namespace = namespace
        self.name = name
        self.record_name = f"{name}-record"

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    def close(self) -> None:
        self.api.close()

    def _core(self, method: str, path: str, body: dict | None = None) -> dict:
        """One JSON request to the core API (``/api/v1``) through the client's ApiClient (the kubeconfig's
        auth, TLS and proxy settings). Raises ``ApiException`` (with ``status`` and ``reason``) when not 2xx."""
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*params)
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return json.loads(response.data)

    # -- the Lease ---------------------------------------------------------------------------------------------

    def read_lease(self):
        try:
            return self.coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RunLockError(f"cannot read Lease {self.namespace}/{self.name}: {exc.status} {exc.reason}") from exc

    def ensure_namespace(self) -> None:
        try:
            self._core("POST", "/api/v1/namespaces", {"metadata": {"name": self.namespace}})
        except ApiException as exc:
            if exc.status not in (409, 403):
                raise RunLockError(f"cannot create namespace {self.namespace}: {exc.status} {exc.reason}") from exc

    @staticmethod
    def describe(lease) -> dict:
        spec = lease.spec
        renewed = parse_time(spec.renew_time) or parse_time(spec.acquire_time)
        duration = int(spec.lease_duration_seconds or 0)
        age = (now() - renewed).total_seconds() if renewed else None
        return {
            "holder": spec.holder_identity or "",
            "acquired": micro_time(parse_time(spec.acquire_time)) if spec.acquire_time else None,
            "renewed": micro_time(renewed) if renewed else None,
            "duration": duration,
            "age": age,
            "expired": age is None or age > duration,
        }

    def acquire(self, holder: str, duration: int) -> tuple[dict, str | None]:
        """Take the lock for ``holder`` for ``duration`` seconds.

        Returns (the Lease as :meth:`describe` gives it, a warning when another run's Lease was taken over).
        Raises :class:`RunLockError` naming the holder and since when when another run holds it.
        """
        self.ensure_namespace()
        lease = self.read_lease()
        at = micro_time(now())
        spec = {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": at, "renewTime": at}
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "leaseTransitions": 0},
            }
            try:
                created = self.coordination.create_namespaced_lease(self.namespace, body)
            except ApiException as exc:
                if exc.status == 409:
                    return self.refuse(self.read_lease())
                raise RunLockError(f"cannot create Lease {self.where}: {exc.status} {exc.reason}") from exc
            return self.describe(created), None
        info = self.describe(lease)
        if info["holder"] == holder:
            return self.renew(holder, duration), None
        if not (info["expired"] or holder_gone(info["holder"])):
            return self.refuse(lease)
        why = "its process is gone from this host" if not info["expired"] else f"not renewed for {info['age']:.0f} s"
        warning = f"took over the lock of {info['holder']} (acquired {info['acquired']}; {why})"
        transitions = int(lease.spec.lease_transitions or 0) + 1
        body = {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease.metadata.resource_version,
            },
            "spec": {**spec, "leaseTransitions": transitions},
        }
        try:
            replaced = self.coordination.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return self.refuse(self.read_lease())
            raise RunLockError(f"cannot take over Lease {self.where}: {exc.status} {exc.reason}") from exc
        return self.describe(replaced), warning

    def refuse(self, lease):
        info = self.describe(lease) if lease is not None else {"holder": "?", "acquired": "?", "age": 0, "duration": 0}
        left = max(0, info["duration"] - (info["age"] or 0))
        raise RunLockError(
            f"another run holds the inference tier: {info['holder']}, since {info['acquired']} "
            f"(renewed {info['age'] or 0:.0f} s ago; its lock expires in {left:.0f} s unless renewed). "
            "Wait for it to finish. If it died, the next run takes over once the lock expires "
            f"(or at once on the same host), or remove it: kubectl -n {self.namespace} delete lease {self.name}"
        )

    def renew(self, holder: str, duration: int) -> dict:
        """Renew our lock; :class:`RunLockError` when another run took it over (ours had expired)."""
        lease = self.read_lease()
        if lease is None or (lease.spec.holder_identity or "") != holder:
            who = "nobody" if lease is None else lease.spec.holder_identity
            raise RunLockError(f"lost the lock {self.namespace}/{self.name}: it is now held by {who}")
        body = {
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": {"renewTime": micro_time(now()), "leaseDurationSeconds": duration},
        }
        try:
            return self.describe(self.coordination.patch_namespaced_lease(self.name, self.namespace, body))
        except ApiException as exc:
            raise RunLockError(f"cannot renew Lease {self.namespace}/{self.name}: {exc.status} {exc.reason}") from exc

    def release(self, holder: str) -> bool:
        """Delete the Lease if we hold it (True); leave another run's alone (False)."""
        lease = self.read_lease()
        if lease is None or (lease.spec.holder_identity or "") != holder:
            return False
        try:
            self.coordination.delete_namespaced_lease(
                self.name,
                self.namespace,
                body=client.V1DeleteOptions(preconditions={"resourceVersion": lease.metadata.resource_version}),
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise RunLockError(f"cannot release Lease {self.namespace}/{self.name}: {exc.status} {exc.reason}") from exc
        return True

    # -- the record --------------------------------------------------------------------------------------------

    def read_record(self) -> dict | None:
        try:
            secret = self._core("GET", f"/api/v1/namespaces/{self.namespace}/secrets/{self.record_name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RunLockError(f"cannot read the run record: {exc.status} {exc.reason}") from exc
        raw = (secret.get("data") or {}).get("record.json")
        return json.loads(base64.b64decode(raw)) if raw else None

    def write_record(self, record: dict, labels: dict) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": self.record_name, "namespace": self.namespace, "labels": labels},
            "data": {"record.json": base64.b64encode(json.dumps(record, sort_keys=True).encode()).decode()},
        }
        try:
            self._core("PUT", f"/api/v1/namespaces/{self.namespace}/secrets/{self.record_name}", body)
        except ApiException as exc:
            if exc.status != 404:
                raise RunLockError(f"cannot write the run record: {exc.status} {exc.reason}") from exc
            try:
                self._core("POST", f"/api/v1/namespaces/{self.namespace}/secrets", body)
            except ApiException as exc2:
                raise RunLockError(f"cannot write the run record: {exc2.status} {exc2.reason}") from exc2
