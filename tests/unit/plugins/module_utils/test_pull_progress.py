"""A pull's progress as a person reads it: percent, size, rate over the last seconds, time left."""

from __future__ import annotations

import json

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.pull_progress import (
    TransferRate,
    human_bytes,
    human_duration,
    progress_line,
    read_progress,
)

PULLING = {
    "model": "qwen2.5:14b",
    "status": "pulling 6e4c38e1172f",
    "completed": 4_070_000_000,
    "total": 9_000_000_000,
    "percent": 45.2,
    "done": False,
}


def test_a_line_with_percent_size_rate_and_eta():
    line = progress_line(PULLING, rate=85_300_000)
    # (9.00 - 4.07) GB at 85.3 MB/s is 57.8 s
    assert line == "pull qwen2.5:14b 45.2% 4.07 GB/9.00 GB 85.3 MB/s ETA 58s (pulling 6e4c38e1172f)"


def test_a_line_without_a_rate_or_a_size():
    assert progress_line(PULLING) == "pull qwen2.5:14b 45.2% 4.07 GB/9.00 GB (pulling 6e4c38e1172f)"
    assert progress_line(PULLING, rate=0.0) == progress_line(PULLING)
    assert progress_line({"model": "m", "status": "pulling manifest"}) == "pull m (pulling manifest)"
    # percent worked out when the file has none
    assert progress_line({"model": "m", "completed": 1, "total": 4}).startswith("pull m 25.0% 1 B/4 B")


def test_the_rate_is_measured_over_a_sliding_window_and_restarts_when_the_count_drops():
    rate = TransferRate(window=10)
    assert rate.bytes_per_second() is None
    rate.add(0.0, 0)
    assert rate.bytes_per_second() is None
    rate.add(5.0, 50_000_000)
    assert rate.bytes_per_second() == pytest.approx(10_000_000)
    rate.add(20.0, 100_000_000)  # the first reading falls out of the window: 50 MB in the last 15 s
    assert rate.bytes_per_second() == pytest.approx(50_000_000 / 15)
    rate.add(21.0, 1_000)  # the next layer starts from zero
    assert rate.bytes_per_second() is None
    rate.add(21.0, 2_000)  # no time passed
    assert rate.bytes_per_second() is None


@pytest.mark.parametrize(
    ("count", "text"), [(512, "512 B"), (1_500, "1.5 kB"), (85_300_000, "85.3 MB"), (9_000_000_000, "9.00 GB")]
)
def test_human_bytes(count, text):
    assert human_bytes(count) == text


@pytest.mark.parametrize(("seconds", "text"), [(42.4, "42s"), (187, "3m07s"), (3720, "1h02m")])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_read_progress_tolerates_a_missing_or_half_written_file(tmp_path):
    path = tmp_path / "qwen.json"
    assert read_progress(str(path)) is None
    path.write_text('{"model": "qwen')
    assert read_progress(str(path)) is None
    path.write_text("[1, 2]")
    assert read_progress(str(path)) is None
    path.write_text(json.dumps(PULLING))
    assert read_progress(str(path)) == PULLING
