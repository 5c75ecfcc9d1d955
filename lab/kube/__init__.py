"""The twin's Kubernetes API server: a k3s 1.32 control plane in one asyncio process.

The real ``helm`` 3.17, ``kubectl`` 1.32, the ``kubernetes`` Python client and the ``kubernetes.core`` Ansible
modules drive it over HTTPS (the runtime terminates TLS) with a bearer token.

Public interface (see "lab.kube" in ``docs/design.md``)::

    cluster = Cluster(kubelet=None, time_scale=0.01)
    cluster.add_node("k3s-worker-02", labels={...}, taints=[...], capacity={"cpu": "6", "memory": "8Gi"},
                     allocatable={"cpu": "6", "memory": "7936Mi"})
    cluster.set_node_ready(name, False)             # kubelet down: stop_pod for its Pods, Pods not Ready
    cluster.set_node_capacity(name, capacity, allocatable)  # what a restarted kubelet reports
    cluster.seed([{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", ...}])
    app = make_kube_app(cluster, token)             # aiohttp.web.Application
    cluster.get("apps/v1", "Deployment", "ml", "ollama"); cluster.list("v1", "Pod", "ml", "app=ollama")
    cluster.set_pod_status("ml", pod_name, "Running", ready=True)   # from the kubelet
    cluster.snapshot()                              # {"Pod": [...], ...}, Secret data redacted
    await cluster.close()

Kubelet hooks: ``cluster.kubelet.start_pod(pod)`` is awaited once a Pod is bound to a Ready node (and again
when the node comes back), ``stop_pod(pod)`` when the Pod is deleted or its node goes NotReady. The node
methods are synchronous and return an awaitable that completes when those kubelet calls have finished.

Layout: :mod:`.cluster` (store, resourceVersions, watches, API semantics, nodes, kubelet glue),
:mod:`.controllers` (namespaces, garbage collector, PV binding, Deployments, ReplicaSets), :mod:`.scheduler`,
:mod:`.admission` (defaults and validation), :mod:`.patch` (merge, JSON and strategic merge patch),
:mod:`.schema` (OpenAPI v3 and patch metadata from the upstream 1.32 definitions), :mod:`.protobuf`
(protobuf Secrets from helm), :mod:`.selectors`, :mod:`.table` (``kubectl get`` tables), :mod:`.app` (HTTP).

Libraries, and what was tried:

* HTTP: ``aiohttp`` (the twin's server stack). Object plumbing: plain dicts in the JSON form, deep-copied.
* ``kmock`` 0.8 (PyPI) was reviewed first (about 10 minutes): it is a scriptable mock server with a
  Kubernetes-flavoured object store, but it has no real resourceVersion counter (lists carry ``"..."``),
  applies every PATCH as a plain merge (no strategic merge, no JSON patch), knows nothing of protobuf, and has
  no controllers, scheduler, generations or status subresources; the namespace and core-discovery fixes the
  field notes mention would come on top. Wrapping it would have meant replacing most of it, so it is not used.
* JSON patch: ``jsonpatch`` (RFC 6902). Strategic merge patch is implemented in :mod:`.patch`; no maintained
  Python implementation exists, but its list semantics come from the upstream schema
  (``x-kubernetes-patch-merge-key``/``-strategy``) shipped by ``kubernetes-validate``, which also provides the
  OpenAPI v3 documents and server-side field validation (see :mod:`.schema` for the OpenAPI decision).
* Protobuf: the ``protobuf`` runtime with descriptors built in code (:mod:`.protobuf`).
* Server-side apply (``application/apply-patch+yaml``) is simplified: the applied configuration is merged
  strategically into the live object (or creates it); there is no field-ownership tracking or conflict detection.
"""

from lab.kube.app import make_kube_app
from lab.kube.cluster import Cluster, Watch
from lab.kube.errors import ApiError

__all__ = ["ApiError", "Cluster", "Watch", "make_kube_app"]
