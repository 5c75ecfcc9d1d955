"""Fixtures of the fault matrix: one twin per test module, rebuilt from the lab inventory (phi4-mini on Ollama,
Qwen3-8B-AWQ on vLLM), whose state is "previous" for every case; each case leaves it there again."""

from __future__ import annotations

import pytest

from tests.matrix.helpers import ROOT, dump, playbook
from tests.twin import Twin


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    twin = Twin(tmp_path_factory.mktemp("lab")).up()
    twin.env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    try:
        twin.kubectl("apply", "-f", str(ROOT / "lab" / "fixtures" / "paperless-ai.yaml"))
        rebuild = playbook(twin, "rebuild-inference-tier.yml")
        assert rebuild.returncode == 0, rebuild.stdout[-3000:]
        twin.baseline = dump(twin)
        yield twin
    finally:
        twin.down()


@pytest.fixture
def twin(lab):
    """The module's twin, back in the previous state and without faults after each case."""
    yield lab
    lab.fault("clear")
    if dump(lab) != lab.baseline:
        restored = playbook(lab, "restore-tier.yml")
        assert restored.returncode == 0, restored.stdout[-3000:]
    assert dump(lab) == lab.baseline
