"""A small kube-scheduler: filters like the default profile, binds to the least allocated feasible node.

Filters, in the order of the 1.32 default profile (the first failing one is the node's reason):
``NodeUnschedulable`` (cordoned), ``TaintToleration`` (NoSchedule/NoExecute taints; PreferNoSchedule ignored),
``NodeAffinity`` (``nodeSelector`` and required node affinity: In, NotIn, Exists, DoesNotExist, Gt, Lt,
``matchFields`` on ``metadata.name``) and ``NodeResourcesFit`` (requests of all Pods on the node against
``status.allocatable``: cpu, memory, ``pods`` and extended resources such as ``nvidia.com/gpu``). Unschedulable
Pods get ``PodScheduled=False`` (reason ``Unschedulable``) with the scheduler's message
(``0/4 nodes are available: 1 Insufficient memory, ...``) and a ``FailedScheduling`` Warning Event. Pending Pods
are retried on every controller pass, i.e. whenever nodes or Pods change.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import TYPE_CHECKING

from lab.kube.cluster import controller_uid, now, parse_time
from lab.kube.resources import BY_KIND
from lab.units import parse_quantity

if TYPE_CHECKING:
    from lab.kube.cluster import Cluster

POD = BY_KIND[("", "Pod")]
NODE = BY_KIND[("", "Node")]


def pod_requests(spec: dict) -> dict[str, float]:
    """Effective requests of a Pod: sum over containers, at least each init container, plus overhead.

    Values are numbers: cpu in cores, memory in bytes, others in units. Adds ``pods: 1``.
    """
    total: Counter = Counter()
    for container in spec.get("containers") or []:
        for name, value in ((container.get("resources") or {}).get("requests") or {}).items():
            total[name] += parse_quantity(value)
    for container in spec.get("initContainers") or []:
        for name, value in ((container.get("resources") or {}).get("requests") or {}).items():
            total[name] = max(total[name], parse_quantity(value))
    for name, value in (spec.get("overhead") or {}).items():
        total[name] += parse_quantity(value)
    total["pods"] = 1
    return dict(total)


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    """Whether any toleration matches the taint (key/operator/value/effect rules of ``v1.Toleration``)."""
    for tol in tolerations or []:
        effect = tol.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        operator = tol.get("operator") or "Equal"
        key = tol.get("key") or ""
        if not key:
            if operator == "Exists":
                return True
            continue
        if key != taint.get("key"):
            continue
        if operator == "Exists" or (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _match_expression(expr: dict, value: str | None, present: bool) -> bool:
    operator = expr.get("operator")
    values = expr.get("values") or []
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        try:
            number, bound = int(value or ""), int(values[0])
        except (ValueError, IndexError):
            return False
        return number > bound if operator == "Gt" else number < bound
    return False


def node_matches_affinity(pod_spec: dict, node: dict) -> bool:
    """``nodeSelector`` and ``requiredDuringSchedulingIgnoredDuringExecution`` node affinity against a Node."""
    labels = node["metadata"].get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    terms = required.get("nodeSelectorTerms") or []
    for term in terms:
        exprs = term.get("matchExpressions") or []
        fields = term.get("matchFields") or []
        if not exprs and not fields:
            continue
        ok = all(_match_expression(e, labels.get(e.get("key")), e.get("key") in labels) for e in exprs)
        ok = ok and all(
            _match_expression(f, node["metadata"]["name"], True) for f in fields if f.get("key") == "metadata.name"
        )
        if ok:
            return True
    return False


def _filter(pod: dict, node: dict, used: dict[str, float], requests: dict[str, float]) -> list[str]:
    """Reasons the node does not fit (empty when it fits), as the scheduler words them."""
    spec = pod["spec"]
    tolerations = spec.get("tolerations") or []
    if (node.get("spec") or {}).get("unschedulable") and not tolerates(
        tolerations, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    ):
        return ["node(s) were unschedulable"]
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not tolerates(tolerations, taint):
            return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"]
    if not node_matches_affinity(spec, node):
        return ["node(s) didn't match Pod's node affinity/selector"]
    allocatable = {k: parse_quantity(v) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()}
    reasons = []
    if used.get("pods", 0) + 1 > allocatable.get("pods", 110):
        reasons.append("Too many pods")
    for name in sorted(requests):
        if name == "pods" or requests[name] <= 0:
            continue
        if used.get(name, 0) + requests[name] > allocatable.get(name, 0) + 1e-9:
            reasons.append(f"Insufficient {name}")
    return reasons


def _usage(cluster: Cluster) -> dict[str, Counter]:
    usage: dict[str, Counter] = {}
    for pod in cluster.iter_objects(POD):
        node = pod["spec"].get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        bucket = usage.setdefault(node, Counter())
        for name, value in pod_requests(pod["spec"]).items():
            bucket[name] += value
    return usage


def _score(node: dict, used: Counter, requests: dict[str, float]) -> float:
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    score = 0.0
    for name in ("cpu", "memory"):
        cap = parse_quantity(allocatable.get(name, "0")) or 1.0
        score += (cap - used.get(name, 0) - requests.get(name, 0)) / cap
    return score


def schedule_pending(cluster: Cluster) -> None:
    """Try to bind every Pending, unbound Pod of the default scheduler."""
    pending = [
        p
        for p in cluster.iter_objects(POD)
        if not p["spec"].get("nodeName")
        and not p["metadata"].get("deletionTimestamp")
        and (p.get("status") or {}).get("phase", "Pending") == "Pending"
        and p["spec"].get("schedulerName", "default-scheduler") == "default-scheduler"
    ]
    if not pending:
        return
    nodes = list(cluster.iter_objects(NODE))
    usage = _usage(cluster)
    pending.sort(
        key=lambda p: (
            -int(p["spec"].get("priority", 0)),
            parse_time(p["metadata"].get("creationTimestamp")),
            p["metadata"]["name"],
        )
    )
    for pod in pending:
        requests = pod_requests(pod["spec"])
        feasible = []
        reasons: Counter = Counter()
        resource_only = 0
        for node in nodes:
            used = usage.get(node["metadata"]["name"], Counter())
            why = _filter(pod, node, used, requests)
            if not why:
                feasible.append(node)
            else:
                for reason in why:
                    reasons[reason] += 1
                if all(r.startswith("Insufficient") or r == "Too many pods" for r in why):
                    resource_only += 1
        if feasible:
            owner = controller_uid(pod)
            siblings = Counter(
                p["spec"].get("nodeName")
                for p in cluster.iter_objects(POD, pod["metadata"]["namespace"])
                if owner and controller_uid(p) == owner and p["spec"].get("nodeName")
            )
            # spread Pods of one owner across nodes (default topology spreading), then least allocated
            best = min(
                feasible,
                key=lambda n: (
                    siblings[n["metadata"]["name"]],
                    -_score(n, usage.get(n["metadata"]["name"], Counter()), requests),
                    usage.get(n["metadata"]["name"], Counter()).get("pods", 0),
                    n["metadata"]["name"],
                ),
            )
            name = best["metadata"]["name"]
            cluster.bind_pod(pod, name)
            bucket = usage.setdefault(name, Counter())
            for res, value in requests.items():
                bucket[res] += value
            continue
        _unschedulable(cluster, pod, _message(len(nodes), reasons, resource_only))


def _message(total: int, reasons: Counter, resource_only: int) -> str:
    if total == 0:
        return "no nodes available to schedule pods"
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    preemption = []
    if resource_only:
        preemption.append(f"{resource_only} No preemption victims found for incoming pod")
    if total - resource_only:
        preemption.append(f"{total - resource_only} Preemption is not helpful for scheduling")
    return (
        f"0/{total} nodes are available: {', '.join(parts)}. "
        f"preemption: 0/{total} nodes are available: {', '.join(sorted(preemption))}."
    )


def _unschedulable(cluster: Cluster, pod: dict, message: str) -> None:
    status = pod.get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    if cond is not None and cond.get("status") == "False" and cond.get("message") == message:
        return
    new = copy.deepcopy(pod)
    new_status = new.setdefault("status", {})
    conditions = [c for c in new_status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    conditions.append(
        {
            "type": "PodScheduled",
            "status": "False",
            "lastProbeTime": None,
            "lastTransitionTime": now(),
            "reason": "Unschedulable",
            "message": message,
        }
    )
    new_status["conditions"] = conditions
    new_status["phase"] = "Pending"
    cluster._apply_update(POD, pod, new, "status", False)
    cluster.record_event(new, "FailedScheduling", message, "Warning", "default-scheduler")
