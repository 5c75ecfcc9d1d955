# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""write_atomic: the old content or the new one, never a part; nothing left behind when the write fails."""

from __future__ import annotations

import stat

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.files import write_atomic


def test_the_file_is_replaced_whole_with_its_mode(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    write_atomic(str(path), '{"status": "succeeded"}\n', 0o600)
    assert path.read_text() == '{"status": "succeeded"}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "snapshot.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(str(path), None)  # not text: the write fails after the temporary file was made
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["snapshot.json"]


def test_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "gone" / "x.json"), "{}")
