"""A whole twin per test module (see tests/twin.py), and clients of its API server."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.twin import Twin


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    twin = Twin(tmp_path_factory.mktemp("lab")).up()
    yield twin
    twin.down()


@pytest.fixture(scope="module")
def api(twin):
    """A ``kubernetes`` ApiClient of the module's twin, with the admin identity."""
    api = twin.api_client()
    yield api
    api.close()


@pytest.fixture(scope="module")
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def apps(api):
    return client.AppsV1Api(api)
