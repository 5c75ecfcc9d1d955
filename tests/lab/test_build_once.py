"""The cached Go builds (control plane, helm-docs) share one mechanism: built once under a lock, renamed into place
only when the build succeeded."""

from __future__ import annotations

import pytest

from lab.controlplane.build import build_once


def test_a_build_lands_whole_and_is_not_repeated(tmp_path):
    final = tmp_path / "cache" / "tool-v1"
    calls = []

    def build(staging):
        calls.append(staging)
        (staging / "bin").mkdir()
        (staging / "bin" / "tool").write_text("x")

    build_once(final, lambda: (final / "bin" / "tool").exists(), build)
    build_once(final, lambda: (final / "bin" / "tool").exists(), build)
    assert len(calls) == 1 and (final / "bin" / "tool").read_text() == "x"
    assert not calls[0].exists()  # the staging directory became final
    assert sorted(p.name for p in final.parent.iterdir()) == [".build.lock", "tool-v1"]


def test_a_failed_build_leaves_nothing_that_looks_finished(tmp_path):
    final = tmp_path / "cache" / "tool-v1"

    def build(staging):
        (staging / "bin").mkdir()
        raise RuntimeError("go build failed")

    with pytest.raises(RuntimeError, match="go build failed"):
        build_once(final, lambda: final.exists(), build)
    assert sorted(p.name for p in final.parent.iterdir()) == [".build.lock"]
