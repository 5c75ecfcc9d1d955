"""Controllers of the twin's control plane, run as level-triggered passes by :class:`~lab.kube.cluster.Cluster`.

* namespace controller: a deleted Namespace (``Terminating``) loses its contents, then disappears;
* garbage collector: dependents of deleted owners go (Background), Foreground owners wait for them;
* persistent volumes: PVCs of an existing StorageClass get a dynamically provisioned PV and become ``Bound``,
  ``kubernetes.io/pvc-protection`` keeps a PVC while a Pod uses it, PVs of deleted claims are reclaimed;
* Deployment controller (``pkg/controller/deployment``): one ReplicaSet per pod template (``<name>-<hash>``),
  revisions, ``Recreate`` and ``RollingUpdate`` (maxSurge/maxUnavailable), ``revisionHistoryLimit``, status and
  the ``Available``/``Progressing`` conditions that ``kubectl rollout status`` and ``helm --wait`` read;
* ReplicaSet controller: Pods ``<rs>-<5 chars>`` with ownerReferences, status counters;
* the scheduler (:mod:`lab.kube.scheduler`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from typing import TYPE_CHECKING

from lab.kube.cluster import NAME_ALPHABET, controller_uid, now, parse_time, pod_ready
from lab.kube.errors import ApiError
from lab.kube.resources import BY_KIND, RESOURCE_TYPES
from lab.kube.scheduler import schedule_pending

if TYPE_CHECKING:
    from lab.kube.cluster import Cluster

NS = BY_KIND[("", "Namespace")]
POD = BY_KIND[("", "Pod")]
RS = BY_KIND[("apps", "ReplicaSet")]
DEPLOY = BY_KIND[("apps", "Deployment")]
PVC = BY_KIND[("", "PersistentVolumeClaim")]
PV = BY_KIND[("", "PersistentVolume")]
SC = BY_KIND[("storage.k8s.io", "StorageClass")]
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"


def reconcile(cluster: Cluster) -> None:
    """One pass of every controller."""
    _namespaces(cluster)
    _garbage_collect(cluster)
    _volumes(cluster)
    for deployment in list(cluster.iter_objects(DEPLOY)):
        current = cluster.stored(DEPLOY, deployment["metadata"]["namespace"], deployment["metadata"]["name"])
        if current is not None:
            sync_deployment(cluster, current)
    for rs in list(cluster.iter_objects(RS)):
        current = cluster.stored(RS, rs["metadata"]["namespace"], rs["metadata"]["name"])
        if current is not None:
            sync_replicaset(cluster, current)
    schedule_pending(cluster)


# -- namespaces and garbage collection -------------------------------------------------------------------------


def _namespaces(cluster: Cluster) -> None:
    for ns in list(cluster.iter_objects(NS)):
        if not ns["metadata"].get("deletionTimestamp"):
            continue
        name = ns["metadata"]["name"]
        remaining = 0
        for rt in RESOURCE_TYPES:
            if not rt.namespaced:
                continue
            for obj in list(cluster.iter_objects(rt, name)):
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    cluster.delete_object(rt, obj, "Background")
        if remaining == 0:
            cluster._remove(NS, ns)


def _garbage_collect(cluster: Cluster) -> None:
    for rt in RESOURCE_TYPES:
        for obj in list(cluster.iter_objects(rt)):
            meta = obj["metadata"]
            refs = meta.get("ownerReferences") or []
            if refs and not meta.get("deletionTimestamp"):
                owners = [cluster.by_uid(ref.get("uid", "")) for ref in refs]
                if all(owner is None for owner in owners):
                    cluster.delete_object(rt, obj, "Background")
                    continue
                foreground = [
                    o
                    for o in owners
                    if o is not None
                    and o["metadata"].get("deletionTimestamp")
                    and "foregroundDeletion" in (o["metadata"].get("finalizers") or [])
                ]
                if foreground:
                    cluster.delete_object(rt, obj, "Foreground")
                    continue
            if meta.get("deletionTimestamp") and "foregroundDeletion" in (meta.get("finalizers") or []):
                if not cluster._dependents(meta["uid"]):
                    new = copy.deepcopy(obj)
                    new["metadata"]["finalizers"] = [f for f in meta["finalizers"] if f != "foregroundDeletion"]
                    if not new["metadata"]["finalizers"]:
                        new["metadata"].pop("finalizers")
                    cluster._apply_update(rt, obj, new, None, False)


# -- volumes ---------------------------------------------------------------------------------------------------


def _claim_in_use(cluster: Cluster, namespace: str, claim: str) -> bool:
    for pod in cluster.iter_objects(POD, namespace):
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for volume in pod["spec"].get("volumes") or []:
            if (volume.get("persistentVolumeClaim") or {}).get("claimName") == claim:
                return True
    return False


def _volumes(cluster: Cluster) -> None:
    for pvc in list(cluster.iter_objects(PVC)):
        meta = pvc["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or []
            if "kubernetes.io/pvc-protection" in finalizers and not _claim_in_use(cluster, ns, name):
                new = copy.deepcopy(pvc)
                new["metadata"]["finalizers"] = [f for f in finalizers if f != "kubernetes.io/pvc-protection"]
                cluster._apply_update(PVC, pvc, new, None, False)
            continue
        if (pvc.get("status") or {}).get("phase") != "Pending":
            continue
        sc_name = pvc["spec"].get("storageClassName")
        sc = cluster.stored(SC, "", sc_name) if sc_name else None
        if sc is None:
            if sc_name:
                cluster.record_event(
                    pvc,
                    "ProvisioningFailed",
                    f'storageclass.storage.k8s.io "{sc_name}" not found',
                    "Warning",
                    "persistentvolume-controller",
                )
            continue
        _provision(cluster, pvc, sc)
    for pv in list(cluster.iter_objects(PV)):
        claim = (pv.get("spec") or {}).get("claimRef")
        live = cluster.stored(PVC, claim.get("namespace"), claim.get("name", "")) if claim else None
        if pv["metadata"].get("deletionTimestamp"):
            finalizers = pv["metadata"].get("finalizers") or []
            if "kubernetes.io/pv-protection" in finalizers and (
                live is None or live["metadata"]["uid"] != claim.get("uid")
            ):
                new = copy.deepcopy(pv)
                new["metadata"]["finalizers"] = [f for f in finalizers if f != "kubernetes.io/pv-protection"]
                cluster._apply_update(PV, pv, new, None, False)
            continue
        if not claim:
            continue
        if live is None or live["metadata"]["uid"] != claim.get("uid"):
            if pv["spec"].get("persistentVolumeReclaimPolicy", "Delete") == "Delete":
                cluster.delete_object(PV, pv)
            elif (pv.get("status") or {}).get("phase") != "Released":
                new = copy.deepcopy(pv)
                new["status"] = {"phase": "Released"}
                cluster._apply_update(PV, pv, new, "status", False)


def _provision(cluster: Cluster, pvc: dict, sc: dict) -> None:
    meta = pvc["metadata"]
    spec = pvc["spec"]
    pv_name = spec.get("volumeName") or f"pvc-{meta['uid']}"
    storage = spec["resources"]["requests"]["storage"]
    if cluster.stored(PV, "", pv_name) is None:
        provisioner = sc.get("provisioner", "rancher.io/local-path")
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "annotations": {"pv.kubernetes.io/provisioned-by": provisioner},
                "finalizers": ["kubernetes.io/pv-protection"],
            },
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "resourceVersion": meta["resourceVersion"],
                },
                "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                "storageClassName": sc["metadata"]["name"],
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {
                    "path": f"/var/lib/rancher/k3s/storage/{pv_name}_{meta['namespace']}_{meta['name']}",
                    "type": "DirectoryOrCreate",
                },
            },
        }
        cluster.api_create(PV, None, pv, internal=True)
        stored_pv = cluster.stored(PV, "", pv_name)
        assert stored_pv is not None
        bound = copy.deepcopy(stored_pv)
        bound["status"] = {"phase": "Bound"}
        cluster._apply_update(PV, stored_pv, bound, "status", False)
        cluster.record_event(
            pvc,
            "ProvisioningSucceeded",
            f"Successfully provisioned volume {pv_name} using {provisioner}",
            "Normal",
            provisioner,
        )
    new = copy.deepcopy(pvc)
    new["spec"]["volumeName"] = pv_name
    annotations = new["metadata"].setdefault("annotations", {})
    annotations.update(
        {
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.beta.kubernetes.io/storage-provisioner": sc.get("provisioner", ""),
            "volume.kubernetes.io/storage-provisioner": sc.get("provisioner", ""),
        }
    )
    cluster._apply_update(PVC, pvc, new, None, False)
    current = cluster.stored(PVC, meta["namespace"], meta["name"])
    if current is None:
        return
    bound_pvc = copy.deepcopy(current)
    bound_pvc["status"] = {
        "phase": "Bound",
        "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
        "capacity": {"storage": storage},
    }
    cluster._apply_update(PVC, current, bound_pvc, "status", False)


# -- Deployments -----------------------------------------------------------------------------------------------


def template_hash(template: dict) -> str:
    """``pod-template-hash``: FNV-1a (32 bit) of the template, digits encoded like ``rand.SafeEncodeString``."""
    value = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return "".join(NAME_ALPHABET[ord(ch) % len(NAME_ALPHABET)] for ch in str(value))


def _without_hash(template: dict) -> dict:
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
    return out


def _revision(obj: dict) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _int_or_percent(value: object, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        fraction = float(value[:-1]) * total / 100
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(value or 0)  # type: ignore[call-overload]


def rolling_params(deployment: dict) -> tuple[int, int]:
    """``(maxSurge, maxUnavailable)`` resolved against ``spec.replicas`` (surge rounds up, unavailable down)."""
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(deployment: dict) -> int:
    """``deploymentutil.MaxUnavailable``: 0 for Recreate or 0 replicas, else resolved maxUnavailable (<= replicas)."""
    replicas = int(deployment["spec"].get("replicas", 1))
    if (deployment["spec"].get("strategy") or {}).get("type") == "Recreate" or replicas == 0:
        return 0
    return min(rolling_params(deployment)[1], replicas)


def _scale_rs(cluster: Cluster, deployment: dict, rs: dict, replicas: int) -> dict:
    old = int(rs["spec"].get("replicas", 0))
    if old == replicas:
        return rs
    new = copy.deepcopy(rs)
    new["spec"]["replicas"] = replicas
    annotations = new["metadata"].setdefault("annotations", {})
    annotations["deployment.kubernetes.io/desired-replicas"] = str(deployment["spec"].get("replicas", 1))
    surge, _ = rolling_params(deployment)
    annotations["deployment.kubernetes.io/max-replicas"] = str(int(deployment["spec"].get("replicas", 1)) + surge)
    cluster._apply_update(RS, rs, new, None, False)
    direction = "up" if replicas > old else "down"
    cluster.record_event(
        deployment,
        "ScalingReplicaSet",
        f"Scaled {direction} replica set {rs['metadata']['name']} from {old} to {replicas}",
        "Normal",
        "deployment-controller",
    )
    stored = cluster.stored(RS, rs["metadata"]["namespace"], rs["metadata"]["name"])
    return stored if stored is not None else new


def _owned_pods(cluster: Cluster, rs: dict) -> list[dict]:
    uid = rs["metadata"]["uid"]
    return [p for p in cluster.iter_objects(POD, rs["metadata"]["namespace"]) if controller_uid(p) == uid]


def sync_deployment(cluster: Cluster, deployment: dict) -> None:
    """Reconcile one Deployment: its ReplicaSets, the rollout step, history cleanup and status."""
    meta = deployment["metadata"]
    if meta.get("deletionTimestamp"):
        return
    ns, uid = meta["namespace"], meta["uid"]
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    template = spec.get("template") or {}
    owned = [rs for rs in cluster.iter_objects(RS, ns) if controller_uid(rs) == uid]
    new_rs = next((rs for rs in owned if _without_hash(rs["spec"]["template"]) == _without_hash(template)), None)
    old_rss = sorted(
        (rs for rs in owned if rs is not new_rs),
        key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]),
    )
    max_old_revision = max((_revision(rs) for rs in old_rss), default=0)
    created_new = False
    if new_rs is None and not spec.get("paused"):
        new_rs = _create_replicaset(cluster, deployment, max_old_revision + 1)
        created_new = True
    elif new_rs is not None and _revision(new_rs) <= max_old_revision:
        bumped = copy.deepcopy(new_rs)
        bumped["metadata"].setdefault("annotations", {})[REVISION] = str(max_old_revision + 1)
        cluster._apply_update(RS, new_rs, bumped, None, False)
        new_rs = cluster.stored(RS, ns, new_rs["metadata"]["name"])
    if new_rs is not None and (meta.get("annotations") or {}).get(REVISION) != str(_revision(new_rs)):
        annotated = copy.deepcopy(deployment)
        annotated["metadata"].setdefault("annotations", {})[REVISION] = str(_revision(new_rs))
        cluster._apply_update(DEPLOY, deployment, annotated, None, False)
        deployment = cluster.stored(DEPLOY, ns, meta["name"]) or annotated

    if not spec.get("paused") and new_rs is not None:
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        if strategy == "Recreate":
            _rollout_recreate(cluster, deployment, new_rs, old_rss, replicas)
        else:
            _rollout_rolling(cluster, deployment, new_rs, old_rss, replicas)
        _cleanup_history(cluster, deployment, [rs for rs in old_rss if cluster.stored(RS, ns, rs["metadata"]["name"])])
    _update_deployment_status(cluster, deployment, new_rs, created_new)


def _create_replicaset(cluster: Cluster, deployment: dict, revision: int) -> dict:
    meta = deployment["metadata"]
    template = copy.deepcopy(deployment["spec"]["template"])
    pod_hash = template_hash(template)
    template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
    selector = copy.deepcopy(deployment["spec"]["selector"])
    selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
    labels = dict(template["metadata"]["labels"])
    surge, _ = rolling_params(deployment)
    replicas = int(deployment["spec"].get("replicas", 1))
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{pod_hash}",
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {
                REVISION: str(revision),
                "deployment.kubernetes.io/desired-replicas": str(replicas),
                "deployment.kubernetes.io/max-replicas": str(replicas + surge),
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": 0,
            "minReadySeconds": deployment["spec"].get("minReadySeconds", 0),
            "selector": selector,
            "template": template,
        },
    }
    if not rs["spec"]["minReadySeconds"]:
        rs["spec"].pop("minReadySeconds")
    created = cluster.api_create(RS, meta["namespace"], rs, internal=True)
    return cluster.stored(RS, meta["namespace"], created["metadata"]["name"]) or created


def _rollout_recreate(cluster: Cluster, deployment: dict, new_rs: dict, old_rss: list[dict], replicas: int) -> None:
    active_old = [rs for rs in old_rss if int(rs["spec"].get("replicas", 0)) > 0]
    if active_old:
        for rs in active_old:
            _scale_rs(cluster, deployment, rs, 0)
        return
    if any(_owned_pods(cluster, rs) for rs in old_rss):
        return  # wait until the old Pods are gone (Recreate never runs old and new Pods together)
    _scale_rs(cluster, deployment, new_rs, replicas)


def _rollout_rolling(cluster: Cluster, deployment: dict, new_rs: dict, old_rss: list[dict], replicas: int) -> None:
    surge, unavailable = rolling_params(deployment)
    if not any(int(rs["spec"].get("replicas", 0)) > 0 for rs in old_rss):
        _scale_rs(cluster, deployment, new_rs, replicas)
        return
    all_rss = [new_rs, *old_rss]
    total = sum(int(rs["spec"].get("replicas", 0)) for rs in all_rss)
    new_count = int(new_rs["spec"].get("replicas", 0))
    # scale up the new ReplicaSet within maxSurge
    if new_count < replicas and total < replicas + surge:
        target = min(replicas, new_count + (replicas + surge - total))
        _scale_rs(cluster, deployment, new_rs, target)
        return
    if new_count > replicas:
        new_rs = _scale_rs(cluster, deployment, new_rs, replicas)
        return
    # scale down old ReplicaSets while keeping replicas - maxUnavailable available
    min_available = replicas - unavailable
    new_unavailable = int(new_rs["spec"].get("replicas", 0)) - int(
        (new_rs.get("status") or {}).get("availableReplicas", 0)
    )
    max_scaled_down = total - min_available - new_unavailable
    if max_scaled_down <= 0:
        return
    scaled = 0
    for rs in old_rss:  # first the unhealthy replicas: removing them costs no availability
        if max_scaled_down - scaled <= 0:
            break
        count = int(rs["spec"].get("replicas", 0))
        unhealthy = count - int((rs.get("status") or {}).get("availableReplicas", 0))
        if unhealthy <= 0:
            continue
        down = min(unhealthy, max_scaled_down - scaled)
        rs = _scale_rs(cluster, deployment, rs, count - down)
        scaled += down
    if scaled:
        return
    available = sum(int((rs.get("status") or {}).get("availableReplicas", 0)) for rs in all_rss)
    budget = available - min_available
    for rs in old_rss:
        if budget <= 0:
            break
        count = int(rs["spec"].get("replicas", 0))
        if count == 0:
            continue
        down = min(count, budget)
        _scale_rs(cluster, deployment, rs, count - down)
        budget -= down


def _cleanup_history(cluster: Cluster, deployment: dict, old_rss: list[dict]) -> None:
    limit = deployment["spec"].get("revisionHistoryLimit", 10)
    if limit is None:
        return
    idle = [
        rs
        for rs in old_rss
        if int(rs["spec"].get("replicas", 0)) == 0
        and int((rs.get("status") or {}).get("replicas", 0)) == 0
        and not _owned_pods(cluster, rs)
        and not rs["metadata"].get("deletionTimestamp")
    ]
    idle.sort(key=_revision)
    for rs in idle[: max(len(idle) - int(limit), 0)]:
        cluster.delete_object(RS, rs, "Background")


def _condition(status: dict, ctype: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


def _put_condition(
    conditions: list[dict], previous: dict | None, ctype: str, value: str, reason: str, message: str, progressed: bool
) -> None:
    stamp = now()
    cond = {
        "type": ctype,
        "status": value,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }
    if previous is not None:
        if previous.get("status") == value:
            cond["lastTransitionTime"] = previous.get("lastTransitionTime", stamp)
        same = (
            previous.get("status") == value and previous.get("reason") == reason and previous.get("message") == message
        )
        if same and not progressed:
            cond["lastUpdateTime"] = previous.get("lastUpdateTime", stamp)
    conditions.append(cond)


def _update_deployment_status(cluster: Cluster, deployment: dict, new_rs: dict | None, created_new: bool) -> None:
    meta = deployment["metadata"]
    ns, uid = meta["namespace"], meta["uid"]
    current = cluster.stored(DEPLOY, ns, meta["name"])
    if current is None:
        return
    deployment = current
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    owned = [rs for rs in cluster.iter_objects(RS, ns) if controller_uid(rs) == uid]
    if new_rs is not None:
        new_rs = cluster.stored(RS, ns, new_rs["metadata"]["name"])

    def total(field: str, rss: list[dict]) -> int:
        return sum(int((rs.get("status") or {}).get(field, 0)) for rs in rss)

    old_status = deployment.get("status") or {}
    status_replicas = total("replicas", owned)
    updated = int((new_rs.get("status") or {}).get("replicas", 0)) if new_rs else 0
    ready = total("readyReplicas", owned)
    available = total("availableReplicas", owned)
    spec_total = sum(int(rs["spec"].get("replicas", 0)) for rs in owned)
    unavailable = max(spec_total - available, 0)
    generation = int(meta.get("generation", 1))
    status: dict = {"observedGeneration": generation}
    for key, value in (
        ("replicas", status_replicas),
        ("updatedReplicas", updated),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("unavailableReplicas", unavailable),
    ):
        if value:
            status[key] = value
    if old_status.get("collisionCount"):
        status["collisionCount"] = old_status["collisionCount"]
    progressed = (
        created_new
        or any(
            int(status.get(k, 0)) > int(old_status.get(k, 0))
            for k in ("updatedReplicas", "readyReplicas", "availableReplicas")
        )
        or (int(status.get("replicas", 0)) < int(old_status.get("replicas", 0)) and updated < replicas)
    )
    conditions: list[dict] = []
    prev_available = _condition(old_status, "Available")
    if available >= replicas - max_unavailable(deployment):
        _put_condition(
            conditions,
            prev_available,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            False,
        )
    else:
        _put_condition(
            conditions,
            prev_available,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            False,
        )
    prev_progress = _condition(old_status, "Progressing")
    rs_name = new_rs["metadata"]["name"] if new_rs else ""
    complete = updated == replicas and status_replicas == replicas and available == replicas
    deadline = spec.get("progressDeadlineSeconds")
    if spec.get("paused"):
        _put_condition(
            conditions, prev_progress, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", False
        )
    elif complete:
        _put_condition(
            conditions,
            prev_progress,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs_name}" has successfully progressed.',
            False,
        )
    elif created_new:
        _put_condition(
            conditions,
            prev_progress,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            f'Created new replica set "{rs_name}"',
            True,
        )
    else:
        last = parse_time((prev_progress or {}).get("lastUpdateTime")) if prev_progress else 0.0
        timed_out = (
            deadline is not None
            and prev_progress is not None
            and not progressed
            and (
                prev_progress.get("reason") == "ProgressDeadlineExceeded"
                or time.time() - last > cluster.progress_deadline(deadline)
            )
        )
        if timed_out:
            _put_condition(
                conditions,
                prev_progress,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
                False,
            )
        else:
            if prev_progress is not None and prev_progress.get("reason") == "NewReplicaSetCreated" and not progressed:
                conditions.append(prev_progress)
            else:
                _put_condition(
                    conditions,
                    prev_progress,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    f'ReplicaSet "{rs_name}" is progressing.',
                    progressed,
                )
            if deadline is not None:
                remaining = cluster.progress_deadline(deadline) - (
                    time.time() - parse_time(conditions[-1]["lastUpdateTime"])
                )
                cluster.kick_later(f"deadline/{uid}", remaining + 1.0)
    conditions.sort(key=lambda c: 0 if c["type"] == "Available" else 1)
    status["conditions"] = conditions
    if status != old_status:
        new = copy.deepcopy(deployment)
        new["status"] = status
        cluster._apply_update(DEPLOY, deployment, new, "status", False)


# -- ReplicaSets -----------------------------------------------------------------------------------------------


def _available(cluster: Cluster, pod: dict, min_ready: int) -> bool:
    if not pod_ready(pod):
        return False
    if not min_ready:
        return True
    since = next(
        (parse_time(c.get("lastTransitionTime")) for c in pod["status"].get("conditions", []) if c["type"] == "Ready"),
        0.0,
    )
    waited = time.time() - since
    needed = min_ready * cluster.time_scale
    if waited >= needed:
        return True
    cluster.kick_later(f"minready/{pod['metadata']['uid']}", needed - waited + 0.05)
    return False


def _deletion_rank(pod: dict) -> tuple:
    phase = (pod.get("status") or {}).get("phase")
    return (
        0 if not pod["spec"].get("nodeName") else 1,
        {"Pending": 0, "Unknown": 1, "Running": 2}.get(phase or "", 0),
        1 if pod_ready(pod) else 0,
        # newer pods first
        -parse_time(pod["metadata"].get("creationTimestamp")),
    )


def sync_replicaset(cluster: Cluster, rs: dict) -> None:
    """Reconcile one ReplicaSet: create or delete Pods to match ``spec.replicas``; update status."""
    meta = rs["metadata"]
    if meta.get("deletionTimestamp"):
        return
    ns = meta["namespace"]
    pods = _owned_pods(cluster, rs)
    active = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    wanted = int(rs["spec"].get("replicas", 0))
    failure: str | None = None
    if len(active) < wanted:
        for _ in range(wanted - len(active)):
            try:
                pod = _pod_from_template(rs)
                created = cluster.api_create(POD, ns, pod, internal=True)
            except ApiError as exc:
                failure = f"Error creating: {exc.message}"
                cluster.record_event(rs, "FailedCreate", failure, "Warning", "replicaset-controller")
                break
            active.append(cluster.stored(POD, ns, created["metadata"]["name"]) or created)
            cluster.record_event(
                rs, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", "Normal", "replicaset-controller"
            )
    elif len(active) > wanted:
        victims = sorted(active, key=_deletion_rank)[: len(active) - wanted]
        for pod in victims:
            cluster.delete_object(POD, pod)
            cluster.record_event(
                rs, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}", "Normal", "replicaset-controller"
            )
        names = {p["metadata"]["name"] for p in victims}
        active = [p for p in active if p["metadata"]["name"] not in names]
    current = cluster.stored(RS, ns, meta["name"])
    if current is None:
        return
    live = [cluster.stored(POD, ns, p["metadata"]["name"]) or p for p in active]
    min_ready = int(current["spec"].get("minReadySeconds", 0) or 0)
    template_labels = ((current["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
    status: dict = {"replicas": len(live)}
    labeled = sum(
        1 for p in live if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in template_labels.items())
    )
    ready = sum(1 for p in live if pod_ready(p))
    available = sum(1 for p in live if _available(cluster, p, min_ready))
    for key, value in (("fullyLabeledReplicas", labeled), ("readyReplicas", ready), ("availableReplicas", available)):
        if value:
            status[key] = value
    status["observedGeneration"] = int(current["metadata"].get("generation", 1))
    old_status = current.get("status") or {}
    previous_failure = _condition(old_status, "ReplicaFailure")
    if failure:
        cond = {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": failure,
            "lastTransitionTime": (previous_failure or {}).get("lastTransitionTime") or now(),
        }
        status["conditions"] = [cond]
    elif previous_failure is not None and len(live) < wanted:
        status["conditions"] = [previous_failure]
    if status != old_status:
        new = copy.deepcopy(current)
        new["status"] = status
        cluster._apply_update(RS, current, new, "status", False)


def _pod_from_template(rs: dict) -> dict:
    meta = rs["metadata"]
    template = copy.deepcopy(rs["spec"].get("template") or {})
    pod_meta = template.get("metadata") or {}
    pod_meta.pop("name", None)
    pod_meta.pop("namespace", None)
    pod_meta["generateName"] = f"{meta['name']}-"
    pod_meta["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template.get("spec") or {}}
