# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probe's pause file as a gate writes it (probe_paused) and the probe reads it (paused_aliases)."""

from __future__ import annotations

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.llm_probe import paused_aliases, probe_paused


def test_the_aliases_are_paused_while_the_block_runs_and_resumed_after(tmp_path):
    pause = tmp_path / "probe.pause"
    with probe_paused(str(pause), ["ollama-qwen", "vllm-qwen"]):
        assert paused_aliases(str(pause)) == {"ollama-qwen", "vllm-qwen"}
    assert not pause.exists() and paused_aliases(str(pause)) == set()


def test_a_gate_that_fails_still_resumes_the_probe(tmp_path):
    pause = tmp_path / "probe.pause"
    with pytest.raises(RuntimeError), probe_paused(str(pause), ["ollama-qwen"]):
        raise RuntimeError("gate request failed")
    assert not pause.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


@pytest.mark.parametrize("pause_file, aliases", [(None, ["ollama-qwen"]), ("", ["ollama-qwen"]), ("set", [])])
def test_nothing_is_paused_without_a_file_or_aliases(tmp_path, pause_file, aliases):
    path = str(tmp_path / "probe.pause") if pause_file == "set" else pause_file
    with probe_paused(path, aliases):
        assert list(tmp_path.iterdir()) == []
    assert paused_aliases(path) == set()
