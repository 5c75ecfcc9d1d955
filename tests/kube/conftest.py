"""Fixtures of the Kubernetes contract tests: one twin (the real v1.32 control plane) shared by tests/kube.

Starting a twin takes seconds and about 1 GB, so all the tests of this directory share one, each in a namespace
of its own. The twin is stopped as soon as the run leaves tests/kube (not only at the end of the session), so it
never idles next to the twins other test directories start; should the run come back to tests/kube, a new one
is started.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.twin import SharedTwin, Twin, stop_unless_next_uses

HERE = Path(__file__).resolve().parent


SHARED = pytest.StashKey[SharedTwin]()


@pytest.fixture(scope="session")
def shared_twin(request, tmp_path_factory) -> SharedTwin:
    shared = SharedTwin(tmp_path_factory)
    request.config.stash[SHARED] = shared
    yield shared
    shared.stop()


@pytest.fixture
def twin(shared_twin: SharedTwin) -> Twin:
    """The running twin of tests/kube."""
    return shared_twin.get()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    # after the last test of tests/kube (and its fixtures' teardown): stop the twin now
    stop_unless_next_uses(item, nextitem, SHARED, lambda nxt: Path(nxt.path).resolve().parent == HERE)


@pytest.fixture
def api(twin: Twin):
    """A ``kubernetes`` ApiClient with the admin identity."""
    client = twin.api_client()
    yield client
    client.close()


@pytest.fixture
def namespace(request, twin: Twin) -> str:
    """A namespace of the test's own (named after it), deleted afterwards without waiting."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:5]}"
    twin.kubectl("create", "namespace", name)
    yield name
    twin.kubectl("delete", "namespace", name, "--wait=false", check=False)
