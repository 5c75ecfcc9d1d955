"""The twin's local-path provisioner: what k3s's ``rancher.io/local-path`` provisioner does for our charts' PVCs.

:class:`LocalPathProvisioner` is an ordinary API client of the real kube-apiserver (an admin kubeconfig). At start
it creates the default StorageClass ``local-path`` (:data:`STORAGE_CLASS`) when it is absent, then watches:

* PersistentVolumeClaims: the PV controller annotates a claim of the class with
  ``volume.kubernetes.io/storage-provisioner: rancher.io/local-path`` and, with ``WaitForFirstConsumer``, the
  scheduler adds ``volume.kubernetes.io/selected-node`` once a Pod using it is scheduled. A claim with both and
  no ``spec.volumeName`` gets a PV ``pvc-<claim uid>``: the requested size, the claim's access modes and volume
  mode, a ``hostPath`` directory ``<volumes_dir>/pvc-<uid>_<namespace>_<name>`` (created now) pinned to the
  selected node, a ``claimRef`` to the claim and the class's reclaim policy. The PV controller then binds them.
  A PV that already exists (409, e.g. after a restart) counts as provisioned.
* PersistentVolumes: a PV this provisioner made (annotation ``pv.kubernetes.io/provisioned-by``) that became
  ``Released`` with reclaim policy ``Delete`` loses its directory, then the PV is deleted. ``Retain`` keeps both.

Only directories under ``volumes_dir`` are ever removed (:meth:`LocalPathProvisioner.volume_path`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

from lab.kubeclient import Reflector, api_status, close_api_client, new_api_client

log = logging.getLogger("lab.storage")

PROVISIONER = "rancher.io/local-path"
STORAGE_CLASS_NAME = "local-path"
STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": STORAGE_CLASS_NAME,
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": PROVISIONER,
    "volumeBindingMode": "WaitForFirstConsumer",
    "reclaimPolicy": "Delete",
}

ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
HOSTNAME_LABEL = "kubernetes.io/hostname"


def wants_volume(pvc: dict) -> bool:
    """True for a claim this provisioner must provision now: ours, its node selected, not yet bound."""
    meta = pvc.get("metadata") or {}
    ann = meta.get("annotations") or {}
    ours = PROVISIONER in (ann.get(ANN_STORAGE_PROVISIONER), ann.get(ANN_BETA_STORAGE_PROVISIONER))
    return (
        ours
        and bool(ann.get(ANN_SELECTED_NODE))
        and not (pvc.get("spec") or {}).get("volumeName")
        and not meta.get("deletionTimestamp")
    )


def volume_name(pvc: dict) -> str:
    return f"pvc-{pvc['metadata']['uid']}"


def persistent_volume(pvc: dict, path: Path, reclaim_policy: str = "Delete") -> dict:
    """The PV for ``pvc`` (which :func:`wants_volume`), with its data in the directory ``path``."""
    meta, spec = pvc["metadata"], pvc.get("spec") or {}
    node = meta["annotations"][ANN_SELECTED_NODE]
    storage_class = spec.get("storageClassName") or STORAGE_CLASS_NAME
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(pvc), "annotations": {ANN_PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {})["storage"]},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}
                    ]
                }
            },
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "storageClassName": storage_class,
            "persistentVolumeReclaimPolicy": reclaim_policy,
        },
    }


class LocalPathProvisioner:
    """``rancher.io/local-path`` for the twin (see the module docstring); volumes live under ``volumes_dir``."""

    def __init__(self, kubeconfig: Path, volumes_dir: Path):
        self.kubeconfig = Path(kubeconfig)
        self.volumes_dir = Path(volumes_dir)
        self.provisioned = 0
        self.deleted = 0
        self._api = None
        self._core = None  # CoreV1Api
        self._storage = None  # StorageV1Api
        self._reflectors: list[Reflector] = []
        self._claims: dict[str, dict] = {}  # uid -> latest PVC
        self._volumes: dict[str, dict] = {}  # name -> latest PV
        self._busy: set[str] = set()  # claim uids being provisioned, PV names being deleted
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the StorageClass when it is absent, then watch PVCs and PVs."""
        from kubernetes import client

        self._stopping = False
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        self._api = await asyncio.to_thread(new_api_client, self.kubeconfig)
        try:
            self._core, self._storage = client.CoreV1Api(self._api), client.StorageV1Api(self._api)
            await self.ensure_storage_class()
            loop = asyncio.get_running_loop()
            self._reflectors = [
                Reflector("pvcs", self._core.list_persistent_volume_claim_for_all_namespaces, self._on_claim, loop),
                Reflector("pvs", self._core.list_persistent_volume, self._on_volume, loop),
            ]
            for reflector in self._reflectors:
                reflector.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self._stopping = True
        for reflector in self._reflectors:
            reflector.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for reflector in self._reflectors:
            await reflector.join()
        self._reflectors.clear()
        close_api_client(self._api)
        self._api = self._core = self._storage = None

    @property
    def synced(self) -> bool:
        return bool(self._reflectors) and all(r.synced for r in self._reflectors)

    async def ensure_storage_class(self) -> None:
        """Create :data:`STORAGE_CLASS` unless a StorageClass of that name exists (an existing one is kept)."""
        try:
            await asyncio.to_thread(self._storage.read_storage_class, STORAGE_CLASS_NAME)
            return
        except Exception as exc:
            if api_status(exc) != 404:
                raise
        try:
            await asyncio.to_thread(self._storage.create_storage_class, STORAGE_CLASS)
            log.info("created StorageClass %s (default, %s)", STORAGE_CLASS_NAME, PROVISIONER)
        except Exception as exc:
            if api_status(exc) != 409:
                raise

    def volume_path(self, pv: dict) -> Path | None:
        """The directory of a PV this provisioner made (None for any other PV, or a path outside volumes_dir)."""
        meta, spec = pv.get("metadata") or {}, pv.get("spec") or {}
        if (meta.get("annotations") or {}).get(ANN_PROVISIONED_BY) != PROVISIONER:
            return None
        raw = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path")
        if not raw:
            return None
        path, root = Path(raw).resolve(), self.volumes_dir.resolve()
        if path == root or not path.is_relative_to(root):
            return None
        return path

    def snapshot(self) -> dict:
        return {
            "provisioned": self.provisioned,
            "deleted": self.deleted,
            "volumes": {
                name: {"phase": (pv.get("status") or {}).get("phase"), "path": str(self.volume_path(pv) or "")}
                for name, pv in sorted(self._volumes.items())
                if self.volume_path(pv) is not None
            },
        }

    # -- events (on the loop) ----------------------------------------------------------------------------------

    def _on_claim(self, event: str, data: Any) -> None:
        if event == "SYNC":
            self._claims = {c["metadata"]["uid"]: c for c in data}
            claims = list(data)
        elif event == "DELETED":
            self._claims.pop(data["metadata"]["uid"], None)
            return
        else:
            self._claims[data["metadata"]["uid"]] = data
            claims = [data]
        for pvc in claims:
            uid = pvc["metadata"]["uid"]
            if wants_volume(pvc) and uid not in self._busy:
                self._spawn(uid, self._provision(uid))

    def _on_volume(self, event: str, data: Any) -> None:
        if event == "SYNC":
            self._volumes = {v["metadata"]["name"]: v for v in data}
            volumes = list(data)
        elif event == "DELETED":
            self._volumes.pop(data["metadata"]["name"], None)
            return
        else:
            self._volumes[data["metadata"]["name"]] = data
            volumes = [data]
        for pv in volumes:
            name = pv["metadata"]["name"]
            if self._to_delete(pv) and name not in self._busy:
                self._spawn(name, self._delete(name))

    def _to_delete(self, pv: dict) -> bool:
        return (
            (pv.get("status") or {}).get("phase") == "Released"
            and (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete"
            and (pv.get("metadata") or {}).get("annotations", {}).get(ANN_PROVISIONED_BY) == PROVISIONER
        )

    def _spawn(self, key: str, coro) -> None:
        self._busy.add(key)
        task = asyncio.create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            self._busy.discard(key)

        task.add_done_callback(done)

    # -- work --------------------------------------------------------------------------------------------------

    async def _retry(self, what: str, attempt: int, exc: Exception) -> None:
        delay = min(0.5 * 2**attempt, 10.0)
        log.warning("%s failed (%s); again in %.1f s", what, exc, delay)
        await asyncio.sleep(delay)

    async def _reclaim_policy(self, storage_class: str | None) -> str:
        if not storage_class:
            return "Delete"
        try:
            sc = await asyncio.to_thread(self._storage.read_storage_class, storage_class)
        except Exception as exc:
            if api_status(exc) == 404:
                return "Delete"
            raise
        return sc.reclaim_policy or "Delete"

    async def _provision(self, uid: str) -> None:
        """Create the directory and the PV of claim ``uid``, retrying while the claim still wants one."""
        attempt = 0
        while not self._stopping:
            pvc = self._claims.get(uid)
            if pvc is None or not wants_volume(pvc):
                return
            meta = pvc["metadata"]
            name = volume_name(pvc)
            path = self.volumes_dir / f"{name}_{meta['namespace']}_{meta['name']}"
            try:
                policy = await self._reclaim_policy((pvc.get("spec") or {}).get("storageClassName"))
                body = persistent_volume(pvc, path, policy)
                await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
                try:
                    await asyncio.to_thread(self._core.create_persistent_volume, body)
                except Exception as exc:
                    if api_status(exc) != 409:
                        raise
                    log.debug("PV %s exists already (claim %s/%s)", name, meta["namespace"], meta["name"])
                    return
                self.provisioned += 1
                log.info(
                    "provisioned PV %s for %s/%s on %s at %s",
                    name,
                    meta["namespace"],
                    meta["name"],
                    meta["annotations"][ANN_SELECTED_NODE],
                    path,
                )
                return
            except (KeyError, ValueError) as exc:  # a claim we cannot serve (no size requested): nothing to retry
                log.warning("cannot provision %s/%s: %r", meta.get("namespace"), meta.get("name"), exc)
                return
            except Exception as exc:
                await self._retry(f"provisioning {name}", attempt, exc)
                attempt += 1

    async def _delete(self, name: str) -> None:
        """Remove the directory, then the PV ``name``, retrying while it is still Released."""
        attempt = 0
        while not self._stopping:
            pv = self._volumes.get(name)
            if pv is None or not self._to_delete(pv):
                return
            path = self.volume_path(pv)
            try:
                if path is not None:
                    await asyncio.to_thread(shutil.rmtree, path, ignore_errors=False)
            except FileNotFoundError:
                pass
            except OSError as exc:
                await self._retry(f"removing {path}", attempt, exc)
                attempt += 1
                continue
            try:
                await asyncio.to_thread(self._core.delete_persistent_volume, name)
            except Exception as exc:
                if api_status(exc) != 404:
                    await self._retry(f"deleting PV {name}", attempt, exc)
                    attempt += 1
                    continue
            self.deleted += 1
            log.info("deleted PV %s and %s", name, path)
            return


__all__ = [
    "PROVISIONER",
    "STORAGE_CLASS",
    "STORAGE_CLASS_NAME",
    "LocalPathProvisioner",
    "persistent_volume",
    "wants_volume",
]
