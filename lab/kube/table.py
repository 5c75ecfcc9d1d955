"""Server-side printing: ``meta.k8s.io/v1`` ``Table`` responses for ``kubectl get`` (the columns kubectl shows)."""

from __future__ import annotations

import time
from typing import Any

from lab.kube.cluster import parse_time


def human_duration(seconds: float) -> str:
    """``k8s.io/apimachinery/pkg/util/duration.HumanDuration``: ``"45s"``, ``"3m20s"``, ``"5h"``, ``"12d"``."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


def _age(obj: dict) -> str:
    stamp = obj["metadata"].get("creationTimestamp")
    return human_duration(time.time() - parse_time(stamp)) if stamp else "<unknown>"


def _col(name: str, kind: str = "string", fmt: str = "", priority: int = 0, description: str = "") -> dict:
    return {"name": name, "type": kind, "format": fmt, "description": description or name, "priority": priority}


def _involved(event: dict) -> str:
    ref = event.get("involvedObject") or {}
    return f"{ref.get('kind', '').lower()}/{ref.get('name', '')}"


def _pod_status(pod: dict) -> str:
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    reason = status.get("reason") or status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
    if reason == "Pending" and not pod["spec"].get("nodeName"):
        return "Pending"
    return reason


def _pod_row(pod: dict) -> list:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len(pod["spec"].get("containers") or [])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount", 0)) for cs in statuses)
    status = pod.get("status") or {}
    return [
        pod["metadata"]["name"],
        f"{ready}/{total}",
        _pod_status(pod),
        restarts,
        _age(pod),
        status.get("podIP") or "<none>",
        pod["spec"].get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _node_row(node: dict) -> list:
    conds = {c["type"]: c["status"] for c in (node.get("status") or {}).get("conditions") or []}
    status = "Ready" if conds.get("Ready") == "True" else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    roles = sorted(
        key.split("/", 1)[1]
        for key in (node["metadata"].get("labels") or {})
        if key.startswith("node-role.kubernetes.io/")
    )
    info = (node.get("status") or {}).get("nodeInfo") or {}
    addresses = {a["type"]: a["address"] for a in (node.get("status") or {}).get("addresses") or []}
    return [
        node["metadata"]["name"],
        status,
        ",".join(roles) or "<none>",
        _age(node),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP", "<none>"),
        addresses.get("ExternalIP", "<none>"),
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


def _service_row(svc: dict) -> list:
    spec = svc.get("spec") or {}
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or (
        "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"
    )
    ports = ",".join(
        f"{p['port']}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
        if p.get("nodePort")
        else f"{p['port']}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    )
    selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items()) or "<none>"
    return [
        svc["metadata"]["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        external,
        ports or "<none>",
        _age(svc),
        selector,
    ]


def _workload_wide(obj: dict) -> list[str]:
    """The ``-o wide`` columns of a Deployment or ReplicaSet: containers, images, selector."""
    containers = obj["spec"]["template"]["spec"].get("containers") or []
    selector = obj["spec"].get("selector", {}).get("matchLabels") or {}
    return [
        ",".join(c["name"] for c in containers),
        ",".join(c.get("image", "") for c in containers),
        ",".join(f"{k}={v}" for k, v in selector.items()),
    ]


COLUMNS: dict[str, tuple[list[dict], Any]] = {
    "Pod": (
        [
            _col("Name", fmt="name"),
            _col("Ready"),
            _col("Status"),
            _col("Restarts", "string"),
            _col("Age"),
            _col("IP", priority=1),
            _col("Node", priority=1),
            _col("Nominated Node", priority=1),
            _col("Readiness Gates", priority=1),
        ],
        _pod_row,
    ),
    "Deployment": (
        [
            _col("Name", fmt="name"),
            _col("Ready"),
            _col("Up-to-date", "integer"),
            _col("Available", "integer"),
            _col("Age"),
            _col("Containers", priority=1),
            _col("Images", priority=1),
            _col("Selector", priority=1),
        ],
        lambda d: [
            d["metadata"]["name"],
            f"{(d.get('status') or {}).get('readyReplicas', 0)}/{d['spec'].get('replicas', 1)}",
            (d.get("status") or {}).get("updatedReplicas", 0),
            (d.get("status") or {}).get("availableReplicas", 0),
            _age(d),
            *_workload_wide(d),
        ],
    ),
    "ReplicaSet": (
        [
            _col("Name", fmt="name"),
            _col("Desired", "integer"),
            _col("Current", "integer"),
            _col("Ready", "integer"),
            _col("Age"),
            _col("Containers", priority=1),
            _col("Images", priority=1),
            _col("Selector", priority=1),
        ],
        lambda r: [
            r["metadata"]["name"],
            r["spec"].get("replicas", 1),
            (r.get("status") or {}).get("replicas", 0),
            (r.get("status") or {}).get("readyReplicas", 0),
            _age(r),
            *_workload_wide(r),
        ],
    ),
    "Node": (
        [
            _col("Name", fmt="name"),
            _col("Status"),
            _col("Roles"),
            _col("Age"),
            _col("Version"),
            _col("Internal-IP", priority=1),
            _col("External-IP", priority=1),
            _col("OS-Image", priority=1),
            _col("Kernel-Version", priority=1),
            _col("Container-Runtime", priority=1),
        ],
        _node_row,
    ),
    "Service": (
        [
            _col("Name", fmt="name"),
            _col("Type"),
            _col("Cluster-IP"),
            _col("External-IP"),
            _col("Port(s)"),
            _col("Age"),
            _col("Selector", priority=1),
        ],
        _service_row,
    ),
    "Namespace": (
        [_col("Name", fmt="name"), _col("Status"), _col("Age")],
        lambda n: [n["metadata"]["name"], (n.get("status") or {}).get("phase", "Active"), _age(n)],
    ),
    "ConfigMap": (
        [_col("Name", fmt="name"), _col("Data", "integer"), _col("Age")],
        lambda c: [c["metadata"]["name"], len(c.get("data") or {}) + len(c.get("binaryData") or {}), _age(c)],
    ),
    "Secret": (
        [_col("Name", fmt="name"), _col("Type"), _col("Data", "integer"), _col("Age")],
        lambda s: [s["metadata"]["name"], s.get("type", "Opaque"), len(s.get("data") or {}), _age(s)],
    ),
    "PersistentVolumeClaim": (
        [
            _col("Name", fmt="name"),
            _col("Status"),
            _col("Volume"),
            _col("Capacity"),
            _col("Access Modes"),
            _col("StorageClass"),
            _col("VolumeAttributesClass"),
            _col("Age"),
            _col("VolumeMode", priority=1),
        ],
        lambda p: [
            p["metadata"]["name"],
            "Terminating" if p["metadata"].get("deletionTimestamp") else (p.get("status") or {}).get("phase", ""),
            p["spec"].get("volumeName", ""),
            ((p.get("status") or {}).get("capacity") or {}).get("storage", ""),
            ",".join(
                {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}.get(
                    m, m
                )
                for m in (p.get("status") or {}).get("accessModes") or []
            ),
            p["spec"].get("storageClassName", ""),
            "<unset>",
            _age(p),
            p["spec"].get("volumeMode", "Filesystem"),
        ],
    ),
    "Event": (
        [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")],
        lambda e: [
            human_duration(time.time() - parse_time(e.get("lastTimestamp") or e["metadata"].get("creationTimestamp"))),
            e.get("type", ""),
            e.get("reason", ""),
            _involved(e),
            e.get("message", ""),
        ],
    ),
}


def to_table(kind: str, objects: list[dict], resource_version: str, include_object: str = "Metadata") -> dict:
    """A ``Table`` of ``objects``; rows carry ``PartialObjectMetadata`` (``includeObject=Metadata``, default),
    the full object (``Object``) or nothing (``None``)."""
    columns, row = COLUMNS.get(
        kind, ([_col("Name", fmt="name"), _col("Age")], lambda o: [o["metadata"]["name"], _age(o)])
    )
    rows = []
    for obj in objects:
        entry: dict[str, Any] = {"cells": row(obj)}
        if include_object == "Object":
            entry["object"] = obj
        elif include_object != "None":
            entry["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(entry)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
