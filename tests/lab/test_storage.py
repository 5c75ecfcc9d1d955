"""The twin's local-path provisioner (lab/storage.py).

Unit tests drive the provisioner's watch handlers with PVC/PV JSON and a fake API; the slow tests run against a
whole twin (``python -m lab up``), where the real scheduler selects the node and the real PV controller binds.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lab.storage import (
    PROVISIONER,
    STORAGE_CLASS,
    LocalPathProvisioner,
    persistent_volume,
    wants_volume,
)
from tests.twin import wait_for

ROOT = Path(__file__).resolve().parents[2]
UID = "8d7c2b1e-0000-4000-8000-000000000001"


def claim(
    *,
    uid: str = UID,
    name: str = "ollama-models",
    node: str | None = "k3s-worker-02",
    provisioner: str | None = PROVISIONER,
    beta: bool = False,
    volume_name: str | None = None,
    storage_class: str | None = "local-path",
) -> dict:
    annotations = {}
    if provisioner:
        key = "volume.beta.kubernetes.io/storage-provisioner" if beta else "volume.kubernetes.io/storage-provisioner"
        annotations[key] = provisioner
    if node:
        annotations["volume.kubernetes.io/selected-node"] = node
    spec = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "40Gi"}},
        "volumeMode": "Filesystem",
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    if volume_name:
        spec["volumeName"] = volume_name
    return {"metadata": {"namespace": "ml", "name": name, "uid": uid, "annotations": annotations}, "spec": spec}


class FakeCore:
    """CoreV1Api's PV calls: records bodies; ``create_status`` makes create answer an error."""

    def __init__(self):
        self.created: list[dict] = []
        self.deleted: list[str] = []
        self.create_status: int | None = None
        self.fail_deletes = 0

    def create_persistent_volume(self, body):
        if self.create_status:
            raise ApiException(status=self.create_status, reason="fake")
        self.created.append(body)
        return body

    def delete_persistent_volume(self, name):
        if self.fail_deletes:
            self.fail_deletes -= 1
            raise ApiException(status=500, reason="etcd is having a bad day")
        self.deleted.append(name)


class FakeStorage:
    """StorageV1Api: the StorageClasses there are (name -> reclaim policy)."""

    def __init__(self, classes: dict[str, str] | None = None):
        self.classes = dict(classes or {})
        self.created: list[dict] = []

    def read_storage_class(self, name):
        if name not in self.classes:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(reclaim_policy=self.classes[name])

    def create_storage_class(self, body):
        self.created.append(body)
        self.classes[body["metadata"]["name"]] = body["reclaimPolicy"]


@pytest.fixture
def provisioner(tmp_path):
    prov = LocalPathProvisioner(tmp_path / "kubeconfig", tmp_path / "volumes")
    prov._core, prov._storage = FakeCore(), FakeStorage({"local-path": "Delete", "keep": "Retain"})
    prov.volumes_dir.mkdir()
    return prov


async def settle(prov: LocalPathProvisioner) -> None:
    while prov._tasks:
        await asyncio.gather(*list(prov._tasks))


# -- which claims, which volume --------------------------------------------------------------------------------


def test_only_our_claims_with_a_selected_node_and_no_volume_want_one():
    assert wants_volume(claim())
    assert wants_volume(claim(beta=True))
    assert not wants_volume(claim(node=None)), "WaitForFirstConsumer: wait for the scheduler"
    assert not wants_volume(claim(provisioner="ebs.csi.aws.com"))
    assert not wants_volume(claim(provisioner=None))
    assert not wants_volume(claim(volume_name="pvc-bound"))
    deleting = claim()
    deleting["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert not wants_volume(deleting)


def test_the_persistent_volume_is_what_local_path_creates(tmp_path):
    path = tmp_path / f"pvc-{UID}_ml_ollama-models"
    pv = persistent_volume(claim(), path, "Retain")
    assert pv == {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{UID}", "annotations": {"pv.kubernetes.io/provisioned-by": "rancher.io/local-path"}},
        "spec": {
            "capacity": {"storage": "40Gi"},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["k3s-worker-02"]}
                            ]
                        }
                    ]
                }
            },
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": "ml",
                "name": "ollama-models",
                "uid": UID,
            },
            "storageClassName": "local-path",
            "persistentVolumeReclaimPolicy": "Retain",
        },
    }


def test_storage_class_is_the_k3s_default():
    assert STORAGE_CLASS["metadata"] == {
        "name": "local-path",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    }
    assert STORAGE_CLASS["provisioner"] == "rancher.io/local-path"
    assert STORAGE_CLASS["volumeBindingMode"] == "WaitForFirstConsumer"
    assert STORAGE_CLASS["reclaimPolicy"] == "Delete"


def test_volume_path_only_for_our_volumes_inside_volumes_dir(provisioner):
    inside = provisioner.volumes_dir / f"pvc-{UID}_ml_x"
    ours = persistent_volume(claim(), inside)
    assert provisioner.volume_path(ours) == inside.resolve()
    foreign = json.loads(json.dumps(ours))
    foreign["metadata"]["annotations"] = {"pv.kubernetes.io/provisioned-by": "kubernetes.io/host-path"}
    assert provisioner.volume_path(foreign) is None
    for escape in (provisioner.volumes_dir / ".." / "secrets", provisioner.volumes_dir, Path("/etc")):
        assert provisioner.volume_path(persistent_volume(claim(), escape)) is None, escape


# -- provisioning and deletion with a fake API -----------------------------------------------------------------


async def test_a_claim_gets_a_directory_and_a_volume(provisioner):
    provisioner._on_claim("ADDED", claim(node=None))
    await settle(provisioner)
    assert provisioner._core.created == [], "no node selected yet"

    provisioner._on_claim("MODIFIED", claim())
    await settle(provisioner)
    [pv] = provisioner._core.created
    path = provisioner.volumes_dir / f"pvc-{UID}_ml_ollama-models"
    assert pv["spec"]["hostPath"]["path"] == str(path)
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert path.is_dir()
    assert provisioner.provisioned == 1

    provisioner._on_claim("MODIFIED", claim(volume_name=pv["metadata"]["name"]))  # the PV controller bound it
    await settle(provisioner)
    assert len(provisioner._core.created) == 1


async def test_the_reclaim_policy_comes_from_the_storage_class(provisioner):
    provisioner._on_claim("SYNC", [claim(storage_class="keep"), claim(uid="u-2", storage_class="gone")])
    await settle(provisioner)
    policies = {pv["metadata"]["name"]: pv["spec"]["persistentVolumeReclaimPolicy"] for pv in provisioner._core.created}
    assert policies == {f"pvc-{UID}": "Retain", "pvc-u-2": "Delete"}


async def test_a_volume_that_exists_already_is_fine(provisioner):
    provisioner._core.create_status = 409  # e.g. after a restart, before the PV controller bound it
    provisioner._on_claim("SYNC", [claim()])
    await settle(provisioner)
    assert provisioner._core.created == []
    assert (provisioner.volumes_dir / f"pvc-{UID}_ml_ollama-models").is_dir()


async def test_provisioning_retries_until_it_works_or_the_claim_is_gone(provisioner, monkeypatch):
    monkeypatch.setattr("lab.storage.LocalPathProvisioner._retry", lambda self, what, attempt, exc: asyncio.sleep(0))
    provisioner._core.create_status = 500
    provisioner._on_claim("ADDED", claim())
    await asyncio.sleep(0.05)
    assert provisioner._tasks, "still retrying"
    provisioner._core.create_status = None
    await settle(provisioner)
    assert len(provisioner._core.created) == 1

    provisioner._core.create_status = 500
    provisioner._on_claim("ADDED", claim(uid="u-3"))
    await asyncio.sleep(0.05)
    provisioner._on_claim("DELETED", claim(uid="u-3"))
    await asyncio.wait_for(settle(provisioner), 5)


def released(pv: dict, policy: str = "Delete") -> dict:
    pv = json.loads(json.dumps(pv))
    pv["spec"]["persistentVolumeReclaimPolicy"] = policy
    pv["status"] = {"phase": "Released"}
    return pv


async def test_a_released_volume_loses_its_directory_then_is_deleted(provisioner):
    path = provisioner.volumes_dir / f"pvc-{UID}_ml_ollama-models"
    (path / "models").mkdir(parents=True)
    (path / "models" / "blob").write_bytes(b"x" * 10)
    pv = persistent_volume(claim(), path)
    provisioner._on_volume("SYNC", [{**pv, "status": {"phase": "Bound"}}])
    await settle(provisioner)
    assert path.exists() and provisioner._core.deleted == []

    provisioner._core.fail_deletes = 1
    provisioner._retry = lambda what, attempt, exc: asyncio.sleep(0)
    provisioner._on_volume("MODIFIED", released(pv))
    await settle(provisioner)
    assert not path.exists()
    assert provisioner._core.deleted == [f"pvc-{UID}"]
    assert provisioner.deleted == 1


async def test_retain_and_foreign_volumes_are_left_alone(provisioner):
    path = provisioner.volumes_dir / f"pvc-{UID}_ml_ollama-models"
    path.mkdir()
    pv = persistent_volume(claim(), path)
    foreign = json.loads(json.dumps(persistent_volume(claim(uid="u-9"), path)))
    foreign["metadata"]["annotations"] = {}
    provisioner._on_volume("SYNC", [released(pv, "Retain"), released(foreign)])
    await settle(provisioner)
    assert path.is_dir()
    assert provisioner._core.deleted == []


async def test_the_storage_class_is_created_only_when_absent(provisioner):
    provisioner._storage = FakeStorage()
    await provisioner.ensure_storage_class()
    assert provisioner._storage.created == [STORAGE_CLASS]
    provisioner._storage = FakeStorage({"local-path": "Retain"})  # someone's own local-path class is kept
    await provisioner.ensure_storage_class()
    assert provisioner._storage.created == []


# -- against a whole twin ------------------------------------------------------------------------------------------


def _pvc_and_pod(core, name: str) -> None:
    """A claim of the default class and a Pod using it (the real scheduler then selects the claim's node)."""
    storage = client.StorageV1Api(core.api_client)
    wait_for(lambda: not _gone(lambda: storage.read_storage_class("local-path")), what="the StorageClass")
    wait_for(lambda: not _gone(lambda: core.read_namespaced_service_account("default", "default")), what="default SA")
    core.create_namespaced_persistent_volume_claim(
        "default",
        {
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": name},
            "spec": {
                "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "infinity"]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": name}}],
            },
        },
    )


def _bound(core, name: str):
    pvc = core.read_namespaced_persistent_volume_claim(name, "default")
    return pvc.status.phase == "Bound" and pvc


def _gone(read) -> bool:
    try:
        read()
    except ApiException as exc:
        return exc.status == 404
    return False


@pytest.mark.slow
def test_live_local_path_is_the_default_storage_class(api):
    storage = client.StorageV1Api(api)
    wait_for(lambda: not _gone(lambda: storage.read_storage_class("local-path")), what="the StorageClass")
    sc = storage.read_storage_class("local-path")
    assert sc.provisioner == "rancher.io/local-path"
    assert sc.volume_binding_mode == "WaitForFirstConsumer"
    assert sc.metadata.annotations["storageclass.kubernetes.io/is-default-class"] == "true"


@pytest.mark.slow
def test_live_claim_is_provisioned_on_the_pods_node_and_deleted_with_it(twin, core):
    _pvc_and_pod(core, "data")
    pvc = wait_for(lambda: _bound(core, "data"), timeout=90, what="the claim to be bound")
    assert pvc.spec.storage_class_name == "local-path", "the default class was filled in"
    pod = wait_for(lambda: (p := core.read_namespaced_pod("data", "default")).spec.node_name and p, what="a node")
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.metadata.name == f"pvc-{pvc.metadata.uid}"
    assert pv.metadata.annotations["pv.kubernetes.io/provisioned-by"] == "rancher.io/local-path"
    term = pv.spec.node_affinity.required.node_selector_terms[0].match_expressions[0]
    assert (term.key, term.values) == ("kubernetes.io/hostname", [pod.spec.node_name])
    path = Path(pv.spec.host_path.path)
    assert path == twin.lab_dir.resolve() / "volumes" / f"pvc-{pvc.metadata.uid}_default_data"
    assert path.is_dir()

    core.delete_namespaced_pod("data", "default", grace_period_seconds=0)
    core.delete_namespaced_persistent_volume_claim("data", "default")
    wait_for(lambda: _gone(lambda: core.read_persistent_volume(pv.metadata.name)), what="the PV to be deleted")
    assert not path.exists()


@pytest.mark.slow
def test_live_retained_volume_keeps_its_directory(core):
    _pvc_and_pod(core, "keep")
    pvc = wait_for(lambda: _bound(core, "keep"), timeout=90, what="the claim to be bound")
    core.patch_persistent_volume(pvc.spec.volume_name, {"spec": {"persistentVolumeReclaimPolicy": "Retain"}})
    core.delete_namespaced_pod("keep", "default", grace_period_seconds=0)
    core.delete_namespaced_persistent_volume_claim("keep", "default")
    wait_for(lambda: core.read_persistent_volume(pvc.spec.volume_name).status.phase == "Released", what="Released")
    time.sleep(2)
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.status.phase == "Released"
    assert Path(pv.spec.host_path.path).is_dir()
    core.delete_persistent_volume(pvc.spec.volume_name)
