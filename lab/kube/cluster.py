"""The cluster state: object store with resourceVersions and watches, API semantics, nodes and kubelet hooks.

One :class:`Cluster` lives on the twin's event loop. API handlers (:mod:`lab.kube.app`) call its ``api_*``
methods, which raise :class:`~lab.kube.errors.ApiError` like the API server. Every write bumps one global
``resourceVersion`` counter, is recorded for watches and wakes the controllers (:mod:`lab.kube.controllers`:
namespaces, garbage collection, Deployments, ReplicaSets, PVC binding, the scheduler), which run level-triggered
passes until nothing changes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import json
import logging
import random
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from lab.kube import admission
from lab.kube import schema as k8s_schema
from lab.kube.errors import ApiError, already_exists, bad_request, conflict, forbidden, gone, not_found
from lab.kube.patch import PatchError, json_merge_patch, json_patch, strategic_merge_patch
from lab.kube.resources import BY_KIND, RESOURCE_TYPES, ResourceType, by_api_version_kind
from lab.kube.selectors import SelectorError, field_matcher, label_matcher, labels_match_selector

log = logging.getLogger("lab.kube")

NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATION_KINDS = {"Deployment", "ReplicaSet", "PodDisruptionBudget", "Ingress", "NetworkPolicy"}
MAX_EVENTS = 2000
HISTORY = 10000
K8S_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4+k3s1",
    "gitCommit": "b8ad61f1f1f8ab1e46fb8b46e1b0c7c1b7e8e5b5",
    "gitTreeState": "clean",
    "buildDate": "2025-04-24T00:00:00Z",
    "goVersion": "go1.23.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def now() -> str:
    """The current time in RFC 3339 (seconds), as ``metav1.Time`` serialises."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float:
    """``metav1.Time`` text to a UNIX timestamp (seconds); 0 for ``None``."""
    if not value:
        return 0.0
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def random_suffix(length: int = 5) -> str:
    """Random characters from the alphabet Kubernetes uses for generated names."""
    return "".join(random.choice(NAME_ALPHABET) for _ in range(length))


def controller_uid(obj: dict) -> str | None:
    """The uid of the controlling owner (``ownerReferences[].controller``), if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def pod_ready(pod: dict) -> bool:
    """Whether the Pod's ``Ready`` condition is ``True``."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def node_ready(node: dict) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


class _Done:
    """An already finished awaitable (returned by node calls that started no kubelet work)."""

    def __await__(self):
        return
        yield  # pragma: no cover


class Watch:
    """One watch stream: queued ``{"type", "object"}`` events for a resource, namespace and selectors."""

    def __init__(self, rt: ResourceType, namespace: str | None, label: Callable, field: Callable):
        self.rt = rt
        self.namespace = namespace
        self._label = label
        self._field = field
        self.queue: asyncio.Queue[dict | None] = asyncio.Queue()

    def _match(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return bool(self._label(obj) and self._field(obj))

    def feed(self, etype: str, old: dict | None, new: dict) -> None:
        """Queue the event as this watcher sees it (objects moving out of the selection become DELETED)."""
        if etype == "ADDED":
            if self._match(new):
                self.queue.put_nowait({"type": "ADDED", "object": new})
        elif etype == "DELETED":
            if self._match(new):
                self.queue.put_nowait({"type": "DELETED", "object": new})
        else:
            was, now_ = self._match(old), self._match(new)
            if was and now_:
                self.queue.put_nowait({"type": "MODIFIED", "object": new})
            elif now_:
                self.queue.put_nowait({"type": "ADDED", "object": new})
            elif was:
                self.queue.put_nowait({"type": "DELETED", "object": new})

    def close(self) -> None:
        self.queue.put_nowait(None)


class Cluster:
    """A Kubernetes 1.32 control plane in memory: store, API semantics, controllers, scheduler, kubelet hooks.

    ``kubelet`` is an object with ``async start_pod(pod: dict)`` and ``async stop_pod(pod: dict)``; without one,
    bound Pods become Running and Ready at once. ``time_scale`` multiplies simulated durations (progress
    deadlines, ``minReadySeconds``), e.g. 0.01 makes the default 600 s progress deadline 6 s.
    """

    def __init__(self, kubelet: Any = None, time_scale: float = 0.01, min_progress_deadline: float = 0.0):
        self.kubelet = kubelet
        self.time_scale = float(time_scale)
        # Some workloads start in real time even in the twin (the real LiteLLM proxy takes 5-30 s): the runtime
        # sets a floor (seconds) under the scaled progress deadline so their rollouts do not time out.
        self.min_progress_deadline = float(min_progress_deadline)
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {rt.key: {} for rt in RESOURCE_TYPES}
        self._uids: dict[str, tuple[tuple[str, str], str, str]] = {}
        self._rv = 0
        self._history: deque[tuple[int, tuple[str, str], str, dict | None, dict]] = deque(maxlen=HISTORY)
        self._watches: set[Watch] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._dirty = False
        self._pod_ops: dict[str, asyncio.Task] = {}
        self._started: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._event_keys: dict[tuple, tuple[str, str]] = {}
        self._service_ips: set[str] = {"10.43.0.1", "10.43.0.10"}
        self._node_ports: set[int] = set()
        self._pod_ip_counter: dict[str, int] = {}
        self._node_numbers: dict[str, int] = {}
        self.controller_state: dict[str, dict] = {}
        self._bootstrap()

    def progress_deadline(self, deadline_seconds: float) -> float:
        """Seconds a Deployment may go without progress: ``progressDeadlineSeconds`` scaled by ``time_scale``,
        but not below ``min_progress_deadline`` (and never above the unscaled value)."""
        deadline = float(deadline_seconds)
        return min(deadline, max(deadline * self.time_scale, self.min_progress_deadline))

    # -- store primitives ------------------------------------------------------------------------------------

    @staticmethod
    def rt_of(obj: dict) -> ResourceType:
        rt = by_api_version_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        if rt is None:
            raise ValueError(f"kind {obj.get('apiVersion')}/{obj.get('kind')} is not served by this cluster")
        return rt

    def iter_objects(self, rt: ResourceType, namespace: str | None = None) -> Iterator[dict]:
        """Stored objects of ``rt`` (live references: do not modify), sorted by namespace and name."""
        bucket = self._objects[rt.key]
        for key in sorted(bucket):
            if namespace is None or key[0] == namespace:
                yield bucket[key]

    def stored(self, rt: ResourceType, namespace: str | None, name: str) -> dict | None:
        return self._objects[rt.key].get((namespace or "", name))

    def by_uid(self, uid: str) -> dict | None:
        entry = self._uids.get(uid)
        if entry is None:
            return None
        rt_key, ns, name = entry
        return self._objects[rt_key].get((ns, name))

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def _put(self, rt: ResourceType, obj: dict, trigger: bool = True) -> dict:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        old = self._objects[rt.key].get(key)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[rt.key][key] = obj
        self._uids[meta["uid"]] = (rt.key, key[0], key[1])
        etype = "MODIFIED" if old is not None else "ADDED"
        self._record(rt, etype, old, obj)
        if trigger:
            self.kick()
        return obj

    def _remove(self, rt: ResourceType, obj: dict, trigger: bool = True) -> dict:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        current = self._objects[rt.key].pop(key, None)
        if current is None:
            return obj
        self._uids.pop(current["metadata"]["uid"], None)
        self._rv += 1
        gone_obj = copy.deepcopy(current)
        gone_obj["metadata"]["resourceVersion"] = str(self._rv)
        self._record(rt, "DELETED", current, gone_obj)
        if trigger:
            self.kick()
        return gone_obj

    def _record(self, rt: ResourceType, etype: str, old: dict | None, new: dict) -> None:
        self._history.append((self._rv, rt.key, etype, old, new))
        for watch in list(self._watches):
            if watch.rt is rt:
                watch.feed(etype, copy.deepcopy(old) if old else None, copy.deepcopy(new))

    # -- controller loop -------------------------------------------------------------------------------------

    def kick(self) -> None:
        """Mark the state changed: controllers run a pass soon (needs a running event loop)."""
        self._dirty = True
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="lab.kube.controllers")
        assert self._wake is not None
        self._wake.set()

    def kick_later(self, key: str, delay: float) -> None:
        """Run a controller pass after ``delay`` seconds (deadlines, minReadySeconds)."""
        if self._loop is None or self._closed:
            return
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = self._loop.call_later(max(delay, 0.0), self.kick)

    async def _run(self) -> None:
        from lab.kube.controllers import reconcile

        assert self._wake is not None
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            for _ in range(200):
                self._dirty = False
                try:
                    reconcile(self)
                except Exception:
                    log.exception("controller pass failed")
                if not self._dirty:
                    break
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop the controllers, timers and watch streams."""
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for watch in list(self._watches):
            watch.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        ops = [t for t in self._pod_ops.values() if not t.done()]
        for task in ops:
            task.cancel()
        for task in ops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until controllers and kubelet calls are idle (for tests and the runtime). Raises TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(0.01)
            busy = self._dirty or (self._wake is not None and self._wake.is_set())
            busy = busy or any(not t.done() for t in self._pod_ops.values())
            if not busy:
                return
        raise TimeoutError("cluster did not settle")

    # -- bootstrap and seeding -------------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.api_create(BY_KIND[("", "Namespace")], None, {"metadata": {"name": name}})
        self.api_create(
            BY_KIND[("", "Service")],
            "default",
            {
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {
                    "clusterIP": "10.43.0.1",
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                },
            },
        )
        self.api_create(
            BY_KIND[("storage.k8s.io", "StorageClass")],
            None,
            {
                "metadata": {
                    "name": "local-path",
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "rancher.io/local-path",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            },
        )

    def seed(self, objects: list[dict]) -> None:
        """Create ``objects`` (full manifests) at start; namespaces of namespaced objects are created if missing.

        Objects that already exist are left alone. Raises ``ValueError`` for kinds this cluster does not serve
        and :class:`ApiError` for invalid objects.
        """
        ns_rt = BY_KIND[("", "Namespace")]
        for manifest in objects:
            rt = self.rt_of(manifest)
            ns = None
            if rt.namespaced:
                ns = (manifest.get("metadata") or {}).get("namespace") or "default"
                if self.stored(ns_rt, None, ns) is None:
                    self.api_create(ns_rt, None, {"metadata": {"name": ns}})
            name = (manifest.get("metadata") or {}).get("name", "")
            if self.stored(rt, ns, name) is not None:
                continue
            self.api_create(rt, ns, copy.deepcopy(manifest))

    # -- read helpers for the runtime ------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        """A copy of one object (``cluster.get("apps/v1", "Deployment", "ml", "ollama")``) or ``None``."""
        rt = by_api_version_kind(api_version, kind)
        if rt is None:
            return None
        obj = self.stored(rt, namespace if rt.namespaced else None, name)
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | dict | None = None
    ) -> list[dict]:
        """Copies of the objects of a kind, optionally in one namespace and matching a label selector.

        ``label_selector`` is a selector string (``"app=ollama,tier!=gpu"``), a ``LabelSelector`` dict
        (``matchLabels``/``matchExpressions``) or a plain ``{label: value}`` dict. Raises ``ValueError`` for a
        malformed selector.
        """
        rt = by_api_version_kind(api_version, kind)
        if rt is None:
            return []
        if isinstance(label_selector, dict):
            selector = label_selector
            if "matchLabels" not in selector and "matchExpressions" not in selector:
                selector = {"matchLabels": selector}
            match = lambda obj: labels_match_selector(obj["metadata"].get("labels"), selector)  # noqa: E731
        else:
            match = label_matcher(label_selector)
        return [copy.deepcopy(o) for o in self.iter_objects(rt, namespace) if match(o)]

    def snapshot(self) -> dict:
        """All objects grouped by kind (``{"Pod": [...], "Secret": [...]}``), Secret data redacted. JSON-able."""
        out: dict[str, list] = {}
        for rt in RESOURCE_TYPES:
            items = []
            for obj in self.iter_objects(rt):
                item = copy.deepcopy(obj)
                if rt.kind == "Secret":
                    item["data"] = {key: "<redacted>" for key in item.get("data") or {}}
                    item.pop("stringData", None)
                    annotations = item["metadata"].get("annotations") or {}
                    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
                items.append(item)
            if items:
                out[rt.kind] = items
        return out

    # -- API: read -------------------------------------------------------------------------------------------

    def _ns_key(self, rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "") if rt.namespaced else ""

    def api_get(self, rt: ResourceType, namespace: str | None, name: str) -> dict:
        """GET one object. Raises 404 NotFound."""
        obj = self.stored(rt, self._ns_key(rt, namespace), name)
        if obj is None:
            raise not_found(rt.qualified, name, rt.group, rt.plural)
        return copy.deepcopy(obj)

    def _matchers(self, rt: ResourceType, label_selector: str | None, field_selector: str | None):
        try:
            return label_matcher(label_selector), field_matcher(field_selector, rt.kind)
        except SelectorError as exc:
            raise bad_request(str(exc)) from exc

    def api_list(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict:
        """LIST as a ``<Kind>List`` with ``metadata.resourceVersion`` (and ``continue`` when ``limit`` cut it)."""
        label, field = self._matchers(rt, label_selector, field_selector)
        items = [
            o for o in self.iter_objects(rt, namespace or None if rt.namespaced else None) if label(o) and field(o)
        ]
        start = 0
        list_rv = self.resource_version
        if continue_token:
            try:
                state = json.loads(base64.urlsafe_b64decode(continue_token.encode()).decode())
                start, list_rv = int(state["start"]), str(state["rv"])
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request(f"invalid continue token: {exc}") from exc
        meta: dict[str, Any] = {"resourceVersion": list_rv}
        selected = items[start:]
        if limit and limit > 0 and len(selected) > limit:
            selected = selected[:limit]
            token = json.dumps({"start": start + limit, "rv": list_rv}).encode()
            meta["continue"] = base64.urlsafe_b64encode(token).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        out_items = []
        for obj in selected:
            item = copy.deepcopy(obj)
            item.pop("apiVersion", None)
            item.pop("kind", None)
            out_items.append({"apiVersion": rt.api_version, "kind": rt.kind, **item})
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": out_items}

    def api_watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        send_initial_events: bool = False,
    ) -> Watch:
        """Open a watch. Without ``resource_version`` (or ``"0"``) existing objects come first as ADDED; with one,
        the events after it are replayed. Raises 410 Expired when that version left the history."""
        label, field = self._matchers(rt, label_selector, field_selector)
        watch = Watch(rt, namespace if rt.namespaced else None, label, field)
        if send_initial_events or not resource_version or resource_version == "0":
            for obj in self.iter_objects(rt, watch.namespace):
                if watch._match(obj):
                    watch.queue.put_nowait({"type": "ADDED", "object": copy.deepcopy(obj)})
            if send_initial_events:
                watch.queue.put_nowait(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {
                                "resourceVersion": self.resource_version,
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    }
                )
        else:
            try:
                since = int(resource_version)
            except ValueError as exc:
                raise bad_request(f"invalid resource version: {resource_version!r}") from exc
            if since > self._rv:
                since = self._rv
            if len(self._history) == self._history.maxlen and self._history[0][0] > since + 1:
                raise gone(f"too old resource version: {since} ({self._history[0][0] - 1})")
            for rv, key, etype, old, new in self._history:
                if rv > since and key == rt.key:
                    watch.feed(etype, copy.deepcopy(old) if old else None, copy.deepcopy(new))
        self._watches.add(watch)
        return watch

    def stop_watch(self, watch: Watch) -> None:
        self._watches.discard(watch)

    # -- API: create -----------------------------------------------------------------------------------------

    def _require_namespace(self, namespace: str | None, creating: bool) -> None:
        ns = self.stored(BY_KIND[("", "Namespace")], "", namespace or "")
        if ns is None:
            raise not_found("namespaces", namespace or "", "", "namespaces")
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise forbidden(
                f"unable to create new content in namespace {namespace} because it is being terminated",
                {"name": namespace, "kind": "namespaces"},
            )

    def api_create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: dict,
        dry_run: bool = False,
        internal: bool = False,
    ) -> dict:
        """POST: create an object. Raises 409 AlreadyExists, 404 (namespace), 403, 422 Invalid, 400."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind and kind != rt.kind:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rt.api_version}) or kind {kind!r} is not {rt.kind!r}"
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or body_ns or "default"
            meta["namespace"] = namespace
            if not internal or rt.kind != "Event":
                self._require_namespace(namespace, creating=True)
        else:
            meta.pop("namespace", None)
        name = meta.get("name")
        if not name:
            if meta.get("generateName"):
                name = meta["generateName"] + random_suffix()
                meta["name"] = name
            else:
                raise admission.invalid(
                    rt,
                    "",
                    [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")],
                )
        admission.validate_name(rt, name)
        if self.stored(rt, meta.get("namespace", ""), name) is not None:
            raise already_exists(rt.qualified, name, rt.group, rt.plural)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(field, None)
        meta.pop("managedFields", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if rt.kind in GENERATION_KINDS:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        admission.apply_defaults(rt, obj)
        self._on_create(rt, obj, dry_run)
        admission.validate(rt, obj)
        if dry_run:
            return obj
        self._put(rt, obj)
        if rt.kind == "Namespace":
            self._namespace_created(obj)
        return copy.deepcopy(obj)

    def _namespace_created(self, ns: dict) -> None:
        sa = BY_KIND[("", "ServiceAccount")]
        name = ns["metadata"]["name"]
        if self.stored(sa, name, "default") is None:
            self.api_create(sa, name, {"metadata": {"name": "default"}}, internal=True)

    def _on_create(self, rt: ResourceType, obj: dict, dry_run: bool) -> None:
        kind = rt.kind
        if kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        elif kind == "Pod":
            self._admit_runtime_class(obj)
            status = {"phase": "Pending", "qosClass": _qos_class(obj["spec"])}
            obj["status"] = status
        elif kind == "Service":
            self._allocate_service(obj, None, dry_run)
        elif kind == "PersistentVolumeClaim":
            spec = obj["spec"]
            if "storageClassName" not in spec:
                default = self.default_storage_class()
                if default is not None:
                    spec["storageClassName"] = default["metadata"]["name"]
            obj["status"] = {"phase": "Pending"}
            finalizers = obj["metadata"].setdefault("finalizers", [])
            if "kubernetes.io/pvc-protection" not in finalizers:
                finalizers.append("kubernetes.io/pvc-protection")
        elif kind == "PersistentVolume":
            obj.setdefault("status", {"phase": "Available"})
        elif kind in ("Deployment", "ReplicaSet"):
            obj["status"] = {} if kind == "Deployment" else {"replicas": 0}
        elif kind == "Secret":
            _fold_string_data(obj)

    def default_storage_class(self) -> dict | None:
        for sc in self.iter_objects(BY_KIND[("storage.k8s.io", "StorageClass")]):
            annotations = sc["metadata"].get("annotations") or {}
            if annotations.get("storageclass.kubernetes.io/is-default-class") == "true":
                return sc
        return None

    def _admit_runtime_class(self, pod: dict) -> None:
        spec = pod["spec"]
        name = spec.get("runtimeClassName")
        if not name:
            return
        rc = self.stored(BY_KIND[("node.k8s.io", "RuntimeClass")], "", name)
        pod_name = pod["metadata"].get("name") or pod["metadata"].get("generateName", "")
        if rc is None:
            raise forbidden(
                f'pods "{pod_name}" is forbidden: pod rejected: RuntimeClass "{name}" not found',
                {"name": pod_name, "kind": "pods"},
            )
        scheduling = rc.get("scheduling") or {}
        for key, value in (scheduling.get("nodeSelector") or {}).items():
            selector = spec.setdefault("nodeSelector", {})
            if selector.get(key, value) != value:
                raise forbidden(
                    f'pods "{pod_name}" is forbidden: conflict: runtimeClass.scheduling.nodeSelector[{key}] = '
                    f"{value}; pod.spec.nodeSelector[{key}] = {selector[key]}",
                    {"name": pod_name, "kind": "pods"},
                )
            selector[key] = value
        tolerations = spec.setdefault("tolerations", [])
        for toleration in scheduling.get("tolerations") or []:
            if toleration not in tolerations:
                tolerations.append(copy.deepcopy(toleration))
        if rc.get("overhead", {}).get("podFixed"):
            spec["overhead"] = copy.deepcopy(rc["overhead"]["podFixed"])

    def _allocate_service(self, obj: dict, old: dict | None, dry_run: bool) -> None:
        spec = obj["spec"]
        old_spec = (old or {}).get("spec") or {}
        if spec["type"] == "ExternalName":
            spec.pop("clusterIP", None)
        elif not spec.get("clusterIP"):
            if old_spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]
            else:
                while True:
                    ip = f"10.43.{random.randint(0, 255)}.{random.randint(1, 254)}"
                    if ip not in self._service_ips:
                        break
                if not dry_run:
                    self._service_ips.add(ip)
                spec["clusterIP"] = ip
        elif old is None and not dry_run:
            self._service_ips.add(spec["clusterIP"])
        if spec.get("clusterIP") and spec["clusterIP"] != "None":
            spec["clusterIPs"] = [spec["clusterIP"]]
        elif spec.get("clusterIP") == "None":
            spec["clusterIPs"] = ["None"]
        if spec["type"] in ("NodePort", "LoadBalancer"):
            old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort") for p in old_spec.get("ports") or []}
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    previous = old_ports.get((port.get("port"), port.get("protocol")))
                    if previous:
                        port["nodePort"] = previous
                    else:
                        candidate = random.randint(30000, 32767)
                        while candidate in self._node_ports:
                            candidate = random.randint(30000, 32767)
                        if not dry_run:
                            self._node_ports.add(candidate)
                        port["nodePort"] = candidate
        status: dict[str, Any] = {"loadBalancer": {}}
        if spec["type"] == "LoadBalancer":
            # k3s servicelb (klipper-lb) publishes the nodes' addresses as the load balancer ingress
            ips = [
                addr["address"]
                for node in self.iter_objects(BY_KIND[("", "Node")])
                for addr in (node.get("status") or {}).get("addresses") or []
                if addr.get("type") == "InternalIP"
            ]
            status["loadBalancer"] = {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips[:1] or ["127.0.0.1"]]}
        obj["status"] = status

    # -- API: update / patch ---------------------------------------------------------------------------------

    def api_update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: dict,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        """PUT: replace an object (or its ``status``). Raises 404, 409 Conflict (stale resourceVersion), 422, 400."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        current = self.stored(rt, self._ns_key(rt, namespace), name)
        if current is None:
            raise not_found(rt.qualified, name, rt.group, rt.plural)
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise bad_request("the name of the object does not match the name on the URL")
        rv = meta.get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt.qualified, name, rt.group, rt.plural)
        return self._apply_update(rt, current, body, subresource, dry_run)

    def _apply_update(
        self, rt: ResourceType, current: dict, body: dict, subresource: str | None, dry_run: bool
    ) -> dict:
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(body.get("status") or {})
        else:
            new = copy.deepcopy(body)
            if "status" in rt.subresources or rt.kind in ("Namespace",):
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        meta = new.setdefault("metadata", {})
        cur_meta = current["metadata"]
        for field in ("uid", "creationTimestamp", "name", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if field in cur_meta:
                meta[field] = cur_meta[field]
            else:
                meta.pop(field, None)
        if rt.namespaced:
            meta["namespace"] = cur_meta["namespace"]
        else:
            meta.pop("namespace", None)
        meta.pop("managedFields", None)
        meta.pop("selfLink", None)
        if "generation" in cur_meta:
            meta["generation"] = cur_meta["generation"]
        if cur_meta.get("deletionTimestamp"):
            # finalizers may only be removed from an object being deleted
            meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f in (cur_meta.get("finalizers") or [])]
        admission.apply_defaults(rt, new)
        self._on_update(rt, current, new, dry_run)
        admission.validate(rt, new, old=current)
        if rt.kind in GENERATION_KINDS and _spec_part(new) != _spec_part(current):
            meta["generation"] = int(cur_meta.get("generation", 1)) + 1
        meta["resourceVersion"] = cur_meta["resourceVersion"]
        if new == current:
            return copy.deepcopy(current)
        if dry_run:
            return new
        self._put(rt, new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            if rt.kind != "Pod":
                return self._remove(rt, new)
            self._finish_pod_deletion(new)
        return copy.deepcopy(new)

    def _on_update(self, rt: ResourceType, old: dict, new: dict, dry_run: bool) -> None:
        kind = rt.kind
        if kind == "Service":
            self._allocate_service(new, old, dry_run)
        elif kind == "Secret":
            _fold_string_data(new)
        elif kind == "Pod":
            old_spec, spec = old.get("spec") or {}, new.setdefault("spec", {})
            if old_spec.get("nodeName") and spec.get("nodeName") != old_spec["nodeName"]:
                spec["nodeName"] = old_spec["nodeName"]
        elif kind == "PersistentVolumeClaim":
            old_spec, spec = old.get("spec") or {}, new.setdefault("spec", {})
            for field in ("volumeName", "storageClassName"):
                if old_spec.get(field) and not spec.get(field):
                    spec[field] = old_spec[field]
        elif kind == "Namespace":
            new.setdefault("spec", {}).setdefault("finalizers", (old.get("spec") or {}).get("finalizers", []))
        if kind == "Node" and (old.get("spec") or {}).get("unschedulable") != (new.get("spec") or {}).get(
            "unschedulable"
        ):
            _sync_unschedulable_taint(new)

    def api_patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: str,
        body: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
        force: bool = False,
    ) -> dict:
        """PATCH with ``merge``, ``json``, ``strategic`` or ``apply`` (server-side apply, simplified).

        Raises 404, 409 Conflict (``metadata.resourceVersion`` in the patch is stale), 415 for unknown patch types,
        422 for patches that cannot be applied.
        """
        current = self.stored(rt, self._ns_key(rt, namespace), name)
        if current is None:
            if patch_type == "apply" and subresource is None:
                return self.api_create(rt, namespace, body, dry_run=dry_run)
            raise not_found(rt.qualified, name, rt.group, rt.plural)
        base = copy.deepcopy(current)
        try:
            if patch_type == "merge":
                patched = json_merge_patch(base, body)
            elif patch_type == "json":
                patched = json_patch(base, body)
            elif patch_type == "strategic":
                patched = strategic_merge_patch(base, body, k8s_schema.schema_for(rt.group, rt.version, rt.kind))
            elif patch_type == "apply":
                patched = strategic_merge_patch(base, body, k8s_schema.schema_for(rt.group, rt.version, rt.kind))
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the media type {patch_type!r} is not supported")
        except PatchError as exc:
            raise ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {exc}",
                {"name": name, "group": rt.group, "kind": rt.kind},
            ) from exc
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not an object")
        rv = (patched.get("metadata") or {}).get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt.qualified, name, rt.group, rt.plural)
        if (patched.get("metadata") or {}).get("name", name) != name:
            raise bad_request("the name of the object does not match the name on the URL")
        return self._apply_update(rt, current, patched, subresource, dry_run)

    # -- API: delete -----------------------------------------------------------------------------------------

    def api_delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: dict | None = None,
        dry_run: bool = False,
    ) -> dict:
        """DELETE: returns the object (graceful/foreground/finalizers) or a ``Status`` of success.

        ``options`` is a ``DeleteOptions`` dict (``propagationPolicy`` Background|Foreground|Orphan,
        ``gracePeriodSeconds``, ``preconditions``). Raises 404 and 409 Conflict (failed precondition).
        """
        options = options or {}
        current = self.stored(rt, self._ns_key(rt, namespace), name)
        if current is None:
            raise not_found(rt.qualified, name, rt.group, rt.plural)
        pre = options.get("preconditions") or {}
        cur_meta = current["metadata"]
        if pre.get("uid") and pre["uid"] != cur_meta["uid"]:
            raise conflict(
                rt.qualified,
                name,
                rt.group,
                rt.plural,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {cur_meta['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != cur_meta["resourceVersion"]:
            raise conflict(
                rt.qualified,
                name,
                rt.group,
                rt.plural,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {cur_meta['resourceVersion']}",
            )
        policy = options.get("propagationPolicy")
        if options.get("orphanDependents") is True and not policy:
            policy = "Orphan"
        if dry_run:
            return copy.deepcopy(current)
        return self.delete_object(rt, current, policy, options.get("gracePeriodSeconds"))

    def delete_object(
        self, rt: ResourceType, current: dict, policy: str | None = None, grace: int | None = None
    ) -> dict:
        """Delete a stored object with the API server's semantics (used by the API and the controllers)."""
        meta = current["metadata"]
        success = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": meta["name"], "group": rt.group, "kind": rt.plural, "uid": meta["uid"]},
        }
        if meta.get("deletionTimestamp"):
            if rt.kind == "Pod" and grace == 0:
                self._finish_pod_deletion(current, force=True)
            return copy.deepcopy(current)
        if rt.kind == "Namespace":
            if meta["name"] in ("default", "kube-system", "kube-public"):
                raise forbidden(
                    f'namespaces "{meta["name"]}" is forbidden: this namespace may not be deleted',
                    {"name": meta["name"], "kind": "namespaces"},
                )
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = now()
            new["status"] = {"phase": "Terminating"}
            self._put(rt, new)
            return copy.deepcopy(new)
        if policy == "Orphan":
            for dependent_rt, dependent in self._dependents(meta["uid"]):
                updated = copy.deepcopy(dependent)
                refs = updated["metadata"].get("ownerReferences") or []
                updated["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != meta["uid"]]
                if not updated["metadata"]["ownerReferences"]:
                    updated["metadata"].pop("ownerReferences")
                self._put(dependent_rt, updated)
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if rt.kind == "Pod":
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = int(
                grace if grace is not None else new["spec"].get("terminationGracePeriodSeconds", 30)
            )
            if finalizers:
                new["metadata"]["finalizers"] = finalizers
            self._put(rt, new)
            self._finish_pod_deletion(new, force=grace == 0)
            return copy.deepcopy(new)
        if finalizers:
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["finalizers"] = finalizers
            self._put(rt, new)
            return copy.deepcopy(new)
        self._remove(rt, current)
        return success

    def api_delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        options: dict | None = None,
        dry_run: bool = False,
    ) -> dict:
        """DELETE on a collection: deletes every matching object; answers the ``<Kind>List`` of them."""
        listing = self.api_list(rt, namespace, label_selector, field_selector)
        for item in listing["items"]:
            with contextlib.suppress(ApiError):
                self.api_delete(rt, namespace, item["metadata"]["name"], options, dry_run)
        return listing

    def _dependents(self, uid: str) -> list[tuple[ResourceType, dict]]:
        out = []
        for rt in RESOURCE_TYPES:
            for obj in self.iter_objects(rt):
                if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or []):
                    out.append((rt, obj))
        return out

    # -- API: subresources -----------------------------------------------------------------------------------

    def api_get_scale(self, rt: ResourceType, namespace: str, name: str) -> dict:
        """GET ``.../scale``: an ``autoscaling/v1`` ``Scale``. Raises 404."""
        from lab.kube.selectors import selector_string

        obj = self.api_get(rt, namespace, name)
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": selector_string(obj["spec"].get("selector")),
            },
        }

    def api_update_scale(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        patch_type: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        """PUT/PATCH ``.../scale``: sets ``spec.replicas``. Raises 404, 409 Conflict, 422 Invalid."""
        scale = self.api_get_scale(rt, namespace, name)
        try:
            if patch_type == "json":
                scale = json_patch(scale, body)
            elif patch_type in ("merge", "strategic", "apply"):
                scale = json_merge_patch(scale, body)
            elif patch_type is None:
                rv = (body.get("metadata") or {}).get("resourceVersion")
                if rv and rv != scale["metadata"]["resourceVersion"]:
                    raise conflict(rt.qualified, name, rt.group, rt.plural)
                scale = body
        except PatchError as exc:
            raise ApiError(422, "Invalid", str(exc)) from exc
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            raise admission.invalid(
                ResourceType("autoscaling", "v1", "Scale", "scale", True),
                name,
                [
                    (
                        "spec.replicas",
                        "FieldValueInvalid",
                        f"Invalid value: {replicas}: must be greater than or equal to 0",
                    )
                ],
            )
        current = self.stored(rt, namespace, name)
        assert current is not None
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt.qualified, name, rt.group, rt.plural)
        new = copy.deepcopy(current)
        new["spec"]["replicas"] = replicas
        self._apply_update(rt, current, new, None, dry_run)
        result = self.api_get_scale(rt, namespace, name)
        result["spec"]["replicas"] = replicas
        return result

    def api_evict(self, namespace: str, name: str, body: dict | None) -> dict:
        """POST ``pods/<name>/eviction`` (``policy/v1`` Eviction): deletes the Pod gracefully (no PDB checks)."""
        pod_rt = BY_KIND[("", "Pod")]
        current = self.stored(pod_rt, namespace, name)
        if current is None:
            raise not_found("pods", name, "", "pods")
        options = (body or {}).get("deleteOptions") or {}
        if (options.get("dryRun") or []) == ["All"]:
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        self.api_delete(pod_rt, namespace, name, options)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def api_bind(self, namespace: str, name: str, body: dict) -> dict:
        """POST ``pods/<name>/binding``: bind a Pod to ``target.name``. Raises 404, 409 when already bound."""
        pod_rt = BY_KIND[("", "Pod")]
        current = self.stored(pod_rt, namespace, name)
        if current is None:
            raise not_found("pods", name, "", "pods")
        if current["spec"].get("nodeName"):
            raise conflict(
                "pods", name, "", "pods", f'pod {name} is already assigned to node "{current["spec"]["nodeName"]}"'
            )
        target = ((body or {}).get("target") or {}).get("name")
        if not target:
            raise bad_request("binding target name is required")
        self.bind_pod(current, target)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # -- events ----------------------------------------------------------------------------------------------

    def record_event(
        self, obj: dict, reason: str, message: str, event_type: str = "Normal", component: str = "default-scheduler"
    ) -> None:
        """Record a core/v1 Event about ``obj``; repeats bump ``count``. Events do not wake the controllers."""
        rt = BY_KIND[("", "Event")]
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        key = (meta.get("uid"), reason, message, event_type, component)
        stamp = now()
        existing = self._event_keys.get(key)
        if existing is not None:
            stored = self.stored(rt, *existing)
            if stored is not None:
                updated = copy.deepcopy(stored)
                updated["count"] = int(updated.get("count", 1)) + 1
                updated["lastTimestamp"] = stamp
                self._put(rt, updated, trigger=False)
                return
        event_name = f"{meta['name']}.{secrets.token_hex(8)}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name, "namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": stamp},
            "involvedObject": {
                "kind": obj.get("kind"),
                "namespace": meta.get("namespace", ""),
                "name": meta["name"],
                "uid": meta.get("uid"),
                "apiVersion": obj.get("apiVersion"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": event_type,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": "",
        }
        if not meta.get("namespace"):
            event["involvedObject"].pop("namespace")
        self._put(rt, event, trigger=False)
        self._event_keys[key] = (ns, event_name)
        bucket = self._objects[rt.key]
        if len(bucket) > MAX_EVENTS:
            oldest = sorted(bucket.values(), key=lambda e: int(e["metadata"]["resourceVersion"]))
            for stale in oldest[: len(bucket) - MAX_EVENTS]:
                self._remove(rt, stale, trigger=False)

    # -- nodes -----------------------------------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        labels: dict | None = None,
        taints: list[dict] | None = None,
        capacity: dict[str, str] | None = None,
        allocatable: dict[str, str] | None = None,
    ):
        """Register a Ready Node (``capacity``/``allocatable`` are quantities, e.g. ``{"memory": "8Gi"}``).

        ``labels`` add to ``kubernetes.io/hostname``/``os``/``arch``. Returns an awaitable (nothing to wait for).
        Raises :class:`ApiError` 409 when the node exists.
        """
        number = self._node_numbers.setdefault(name, len(self._node_numbers) + 1)
        capacity = dict(capacity or {"cpu": "2", "memory": "4Gi", "pods": "110"})
        capacity.setdefault("pods", "110")
        allocatable = dict(allocatable or capacity)
        allocatable.setdefault("pods", capacity["pods"])
        node_labels = {
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": "k3s",
        }
        node_labels.update(labels or {})
        stamp = now()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": node_labels,
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
            },
            "spec": {
                "podCIDR": f"10.42.{number}.0/24",
                "podCIDRs": [f"10.42.{number}.0/24"],
                "providerID": f"k3s://{name}",
            },
            "status": {
                "capacity": capacity,
                "allocatable": allocatable,
                "conditions": _node_conditions(True, stamp),
                "addresses": [
                    {"type": "InternalIP", "address": f"192.168.1.{100 + number}"},
                    {"type": "Hostname", "address": name},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                    "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                    "bootID": str(uuid.uuid4()),
                    "kernelVersion": "6.8.12-4-pve",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "containerRuntimeVersion": "containerd://1.7.26-k3s1",
                    "kubeletVersion": K8S_VERSION["gitVersion"],
                    "kubeProxyVersion": K8S_VERSION["gitVersion"],
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
                "images": [],
            },
        }
        if taints:
            node["spec"]["taints"] = [dict(t) for t in taints]
        self.api_create(BY_KIND[("", "Node")], None, node, internal=True)
        return _Done()

    def _node(self, name: str) -> dict:
        node = self.stored(BY_KIND[("", "Node")], "", name)
        if node is None:
            raise KeyError(f"no node {name!r}")
        return node

    def set_node_ready(self, name: str, ready: bool):
        """Set the Node's ``Ready`` condition (kubelet up/down). NotReady stops its Pods (``stop_pod``) and marks
        them not Ready; Ready starts them again (``start_pod``). Pods are not evicted.

        Returns an awaitable that finishes when the kubelet calls are done. Raises ``KeyError`` for unknown nodes.
        """
        node = self._node(name)
        if node_ready(node) == ready:
            return _Done()
        new = copy.deepcopy(node)
        new["status"]["conditions"] = _node_conditions(ready, now())
        taints = [t for t in new["spec"].get("taints") or [] if t.get("key") != "node.kubernetes.io/unreachable"]
        if not ready:
            taints.append({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now()})
        if ready:
            new["status"]["nodeInfo"]["bootID"] = str(uuid.uuid4())
        if taints:
            new["spec"]["taints"] = taints
        else:
            new["spec"].pop("taints", None)
        self._put(BY_KIND[("", "Node")], new)
        tasks = []
        pod_rt = BY_KIND[("", "Pod")]
        for pod in list(self.iter_objects(pod_rt)):
            if pod["spec"].get("nodeName") != name or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if ready:
                if not pod["metadata"].get("deletionTimestamp"):
                    task = self.start_pod(pod)
                    if task is not None:
                        tasks.append(task)
            else:
                self._mark_not_ready(pod)
                task = self._stop_pod(pod)
                if task is not None:
                    tasks.append(task)
        return asyncio.gather(*tasks) if tasks else _Done()

    def set_node_capacity(self, name: str, capacity: dict[str, str], allocatable: dict[str, str] | None = None):
        """Replace the Node's ``status.capacity``/``allocatable`` (what a restarted kubelet reports).

        Pending Pods are scheduled again. Returns an awaitable. Raises ``KeyError`` for unknown nodes.
        """
        node = self._node(name)
        new = copy.deepcopy(node)
        capacity = dict(capacity)
        capacity.setdefault("pods", node["status"]["capacity"].get("pods", "110"))
        allocatable = dict(allocatable or capacity)
        allocatable.setdefault("pods", capacity["pods"])
        new["status"]["capacity"] = capacity
        new["status"]["allocatable"] = allocatable
        if new != node:
            self._put(BY_KIND[("", "Node")], new)
        return _Done()

    # -- pods and the kubelet --------------------------------------------------------------------------------

    def _pod_op(self, uid: str, work: Callable[[], Any]) -> asyncio.Task | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        previous = self._pod_ops.get(uid)

        async def runner() -> None:
            if previous is not None and not previous.done():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await previous
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kubelet call for pod %s failed", uid)

        task = loop.create_task(runner())
        self._pod_ops[uid] = task

        def done(t: asyncio.Task) -> None:
            if self._pod_ops.get(uid) is t:
                self._pod_ops.pop(uid, None)
            self.kick()

        task.add_done_callback(done)
        return task

    def bind_pod(self, pod: dict, node_name: str) -> None:
        """Bind a Pending Pod to a node (``spec.nodeName``, PodScheduled) and start it when the node is Ready."""
        pod_rt = BY_KIND[("", "Pod")]
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node_name
        status = new.setdefault("status", {})
        _set_condition(status, "PodScheduled", "True")
        node = self._node(node_name)
        number = self._node_numbers.get(node_name, 0)
        counter = self._pod_ip_counter.get(node_name, 1) + 1
        self._pod_ip_counter[node_name] = counter
        status["hostIP"] = next(
            (a["address"] for a in node["status"].get("addresses", []) if a["type"] == "InternalIP"), ""
        )
        status["hostIPs"] = [{"ip": status["hostIP"]}]
        status["podIP"] = f"10.42.{number}.{counter % 250 + 2}"
        status["podIPs"] = [{"ip": status["podIP"]}]
        status.pop("nominatedNodeName", None)
        self._put(pod_rt, new)
        self.record_event(
            new,
            "Scheduled",
            f"Successfully assigned {new['metadata']['namespace']}/{new['metadata']['name']} to {node_name}",
        )
        if node_ready(node):
            self.start_pod(new)

    def start_pod(self, pod: dict) -> asyncio.Task | None:
        """Hand a bound Pod to the kubelet (``start_pod``), or make it Running+Ready when there is none."""
        uid = pod["metadata"]["uid"]
        self._started.add(uid)
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        snapshot = copy.deepcopy(pod)

        async def work() -> None:
            current = self.stored(BY_KIND[("", "Pod")], ns, name)
            if current is None or current["metadata"]["uid"] != uid or current["metadata"].get("deletionTimestamp"):
                return
            if self.kubelet is not None:
                await self.kubelet.start_pod(snapshot)
            else:
                self.set_pod_status(ns, name, "Running", True)

        task = self._pod_op(uid, work)
        if task is None and self.kubelet is None:
            self.set_pod_status(ns, name, "Running", True)
        return task

    def _stop_pod(self, pod: dict) -> asyncio.Task | None:
        uid = pod["metadata"]["uid"]
        if uid not in self._started:
            return None
        self._started.discard(uid)
        if self.kubelet is None:
            return None
        snapshot = copy.deepcopy(pod)

        async def work() -> None:
            await self.kubelet.stop_pod(snapshot)

        return self._pod_op(uid, work)

    def _finish_pod_deletion(self, pod: dict, force: bool = False) -> None:
        """Stop a terminating Pod's containers (kubelet ``stop_pod``), then remove it from the store."""
        uid = pod["metadata"]["uid"]
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        pod_rt = BY_KIND[("", "Pod")]
        stop = self._stop_pod(pod)

        def remove() -> None:
            current = self.stored(pod_rt, ns, name)
            if current is not None and current["metadata"]["uid"] == uid and not current["metadata"].get("finalizers"):
                self._remove(pod_rt, current)

        if stop is None and (force or uid not in self._pod_ops):
            remove()
            return

        async def work() -> None:
            remove()

        if self._pod_op(uid, work) is None:
            remove()

    def _mark_not_ready(self, pod: dict) -> None:
        new = copy.deepcopy(pod)
        status = new.setdefault("status", {})
        _set_condition(status, "Ready", "False")
        _set_condition(status, "ContainersReady", "False")
        for cs in status.get("containerStatuses") or []:
            cs["ready"] = False
        if new != pod:
            self._put(BY_KIND[("", "Pod")], new)

    def set_pod_status(
        self,
        namespace: str,
        name: str,
        phase: str,
        ready: bool,
        reason: str | None = None,
        message: str | None = None,
        restart_count: int | None = None,
    ) -> None:
        """What the kubelet reports for a Pod: ``phase`` (Pending|Running|Succeeded|Failed), readiness, an optional
        waiting/terminated ``reason``/``message`` (e.g. ``CrashLoopBackOff``) and ``restart_count``.

        Updates ``status.conditions``/``containerStatuses`` and wakes the controllers (ReplicaSet and Deployment
        status follow). Unknown Pods are ignored.
        """
        pod_rt = BY_KIND[("", "Pod")]
        pod = self.stored(pod_rt, namespace, name)
        if pod is None:
            return
        new = copy.deepcopy(pod)
        status = new.setdefault("status", {})
        stamp = now()
        status["phase"] = phase
        status.setdefault("startTime", stamp)
        if reason and not ready:
            status["reason"] = reason
        else:
            status.pop("reason", None)
        if message and not ready:
            status["message"] = message
        else:
            status.pop("message", None)
        containers = new["spec"].get("containers") or []
        waiting = {
            "ContainerCreating",
            "CrashLoopBackOff",
            "ImagePullBackOff",
            "ErrImagePull",
            "CreateContainerConfigError",
            "CreateContainerError",
            "PodInitializing",
            "RunContainerError",
        }
        previous = {cs.get("name"): cs for cs in status.get("containerStatuses") or []}
        statuses = []
        for container in containers:
            old = previous.get(container["name"], {})
            cs: dict[str, Any] = {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": old.get("imageID") or "docker.io/library/" + container.get("image", "").split("/")[-1],
                "ready": bool(ready),
                "restartCount": restart_count if restart_count is not None else old.get("restartCount", 0),
            }
            if phase in ("Succeeded", "Failed"):
                cs["state"] = {
                    "terminated": {
                        "exitCode": 0 if phase == "Succeeded" else 1,
                        "reason": reason or ("Completed" if phase == "Succeeded" else "Error"),
                        "startedAt": status["startTime"],
                        "finishedAt": stamp,
                    }
                }
                cs["started"] = False
            elif phase == "Pending" or (reason in waiting and not ready):
                cs["state"] = {"waiting": {"reason": reason or "ContainerCreating"}}
                if message:
                    cs["state"]["waiting"]["message"] = message
                cs["started"] = False
            else:
                started = ((old.get("state") or {}).get("running") or {}).get("startedAt") or stamp
                cs["state"] = {"running": {"startedAt": started}}
                cs["started"] = True
                cs["containerID"] = old.get("containerID") or "containerd://" + secrets.token_hex(32)
            statuses.append(cs)
        status["containerStatuses"] = statuses
        running = phase == "Running"
        _set_condition(status, "PodReadyToStartContainers", "True" if running or ready else "False")
        _set_condition(status, "Initialized", "True")
        names = [c["name"] for c in containers]
        not_ready_msg = f"containers with unready status: [{' '.join(names)}]"
        _set_condition(
            status,
            "Ready",
            "True" if ready else "False",
            None if ready else "ContainersNotReady",
            None if ready else not_ready_msg,
        )
        _set_condition(
            status,
            "ContainersReady",
            "True" if ready else "False",
            None if ready else "ContainersNotReady",
            None if ready else not_ready_msg,
        )
        _set_condition(status, "PodScheduled", "True")
        if new != pod:
            self._put(pod_rt, new)


# -- helpers ---------------------------------------------------------------------------------------------------


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _fold_string_data(secret: dict) -> None:
    string_data = secret.pop("stringData", None)
    if string_data:
        data = secret.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


_ORDER = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]


def _set_condition(status: dict, ctype: str, value: str, reason: str | None = None, message: str | None = None) -> None:
    conditions = status.setdefault("conditions", [])
    stamp = now()
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != value:
                cond["lastTransitionTime"] = stamp
            cond["status"] = value
            for key, val in (("reason", reason), ("message", message)):
                if val is None:
                    cond.pop(key, None)
                else:
                    cond[key] = val
            break
    else:
        cond = {"type": ctype, "status": value, "lastProbeTime": None, "lastTransitionTime": stamp}
        if reason is not None:
            cond["reason"] = reason
        if message is not None:
            cond["message"] = message
        conditions.append(cond)
    conditions.sort(key=lambda c: _ORDER.index(c["type"]) if c.get("type") in _ORDER else len(_ORDER))


def _node_conditions(ready: bool, stamp: str) -> list[dict]:
    conditions = []
    for ctype, reason, message in (
        ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ):
        if ready:
            conditions.append(
                {
                    "type": ctype,
                    "status": "False",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                    "reason": reason,
                    "message": message,
                }
            )
        else:
            conditions.append(
                {
                    "type": ctype,
                    "status": "Unknown",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                    "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                }
            )
    if ready:
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
            }
        )
    else:
        conditions.append(
            {
                "type": "Ready",
                "status": "Unknown",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
                "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.",
            }
        )
    return conditions


def _sync_unschedulable_taint(node: dict) -> None:
    """The node lifecycle controller mirrors ``spec.unschedulable`` as the ``unschedulable`` NoSchedule taint."""
    spec = node.setdefault("spec", {})
    key = "node.kubernetes.io/unschedulable"
    taints = [t for t in spec.get("taints") or [] if t.get("key") != key]
    if spec.get("unschedulable"):
        taints.append({"key": key, "effect": "NoSchedule", "timeAdded": now()})
    if taints:
        spec["taints"] = taints
    else:
        spec.pop("taints", None)


def _qos_class(spec: dict) -> str:
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if requests or limits:
            any_set = True
        for res in ("cpu", "memory"):
            if res not in limits or requests.get(res, limits.get(res)) != limits.get(res):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
