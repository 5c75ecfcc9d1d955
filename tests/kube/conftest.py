"""Fixtures of the twin's Kubernetes API contract tests (the harness lives in ``tests/kube/harness.py``)."""

from __future__ import annotations

import uuid

import pytest

from tests.kube.harness import FakeKubelet, KubeServer


@pytest.fixture(scope="session")
def kube_server(tmp_path_factory) -> KubeServer:
    """One API server for the session (tests isolate themselves in their own namespaces)."""
    kubelet = FakeKubelet(delay=0.3)
    server = KubeServer(tmp_path_factory.mktemp("kube"), kubelet=kubelet).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_server(tmp_path) -> KubeServer:
    """A private API server with a recording kubelet (scheduler and node tests change nodes)."""
    server = KubeServer(tmp_path, kubelet=FakeKubelet(delay=0.1)).start()
    yield server
    server.stop()


@pytest.fixture
def namespace(kube_server: KubeServer) -> str:
    """A new namespace in the shared server, deleted afterwards."""
    name = "t-" + uuid.uuid4().hex[:8]
    kube_server.kubectl("create", "namespace", name)
    yield name
    kube_server.kubectl("delete", "namespace", name, "--wait=false", check=False)
