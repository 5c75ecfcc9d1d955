"""Fixtures of the fault matrix: one twin per worker, rebuilt from the lab inventory (phi4-mini on Ollama,
Qwen3-8B-AWQ on vLLM), whose state is "previous" for every case; each case leaves it there again.

Starting a twin and rebuilding the tier takes one to two minutes on a busy machine, so the matrix's files share one
(with --dist loadfile a worker runs its matrix files one after the other: the longest start first). Every case
ends with the twin back in the baseline state (the ``twin`` fixture restores and asserts it), so the next file
starts where a fresh twin would. The twin is stopped as soon as the worker's next test does not use it, as
tests/kube's is, so it never idles next to a twin another file starts; should the run come back, a new one is built.
"""

from __future__ import annotations

import pytest

from tests.matrix.helpers import SharedLab, dump, playbook
from tests.twin import Twin, stop_unless_next_uses

SHARED = pytest.StashKey[SharedLab]()


@pytest.fixture(scope="session")
def shared_lab(request, tmp_path_factory) -> SharedLab:
    shared = SharedLab(tmp_path_factory)
    request.config.stash[SHARED] = shared
    yield shared
    shared.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    # after the last case of the shared twin this worker has queued (and its restore): stop the twin now, before a
    # file with a twin of its own (another directory's, or a matrix file's own) starts one beside it
    stop_unless_next_uses(item, nextitem, SHARED, lambda nxt: "shared_lab" in nxt.fixturenames)


@pytest.fixture
def lab(shared_lab: SharedLab) -> Twin:
    """The worker's matrix twin, in the baseline state."""
    return shared_lab.get()


@pytest.fixture
def twin(lab):
    """The shared twin, back in the previous state and without faults after each case."""
    yield lab
    lab.fault("clear")
    if dump(lab) != lab.baseline:
        restored = playbook(lab, "restore-tier.yml")
        assert restored.returncode == 0, restored.stdout[-3000:]
    assert dump(lab) == lab.baseline
