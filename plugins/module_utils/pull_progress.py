# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress of an Ollama model pull as a person reads it: percent, size, rate and time left.

The ``ollama_model`` module writes a pull's progress to a JSON file (``model``, ``status``, ``completed`` and
``total`` in bytes, ``percent``, ``done``); the ``ollama_pull_wait`` action reads it while it waits and prints
:func:`progress_line` for it, the rate measured by :class:`TransferRate` over the last seconds of the pull.
"""

from __future__ import annotations

import json
from collections import deque


class TransferRate:
    """Bytes per second over a sliding window of (time, completed bytes) readings.

    Args:
        window (float): seconds of readings the rate is measured over (older ones are dropped, the newest two kept).
    """

    def __init__(self, window: float = 20.0):
        self.window = window
        self._readings: deque[tuple[float, int]] = deque()

    def add(self, when: float, completed: int) -> None:
        """Record ``completed`` bytes at ``when`` (seconds, monotonic). A smaller count (a new layer, a restart)
        starts the window again."""
        if self._readings and completed < self._readings[-1][1]:
            self._readings.clear()
        self._readings.append((when, completed))
        while len(self._readings) > 2 and when - self._readings[0][0] > self.window:
            self._readings.popleft()

    def bytes_per_second(self) -> float | None:
        """The rate over the window, or None before two readings at different times."""
        if len(self._readings) < 2:
            return None
        (t0, c0), (t1, c1) = self._readings[0], self._readings[-1]
        if t1 <= t0:
            return None
        return (c1 - c0) / (t1 - t0)


def human_bytes(count: float) -> str:
    """Decimal units as Ollama shows sizes: ``512 B``, ``85.3 MB``, ``9.00 GB``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}" if unit == "GB" else f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def human_duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``1h02m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def read_progress(path: str) -> dict | None:
    """The progress file at ``path`` as a dict, or None while it is missing or half-written."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def progress_line(data: dict, rate: float | None = None) -> str:
    """One line for a pull: ``pull qwen2.5:14b 45.2% 4.07 GB/9.00 GB 85.3 MB/s ETA 1m03s (pulling 6e4c38e1172f)``.

    Args:
        data (dict): the progress file's content.
        rate (float | None): bytes per second; rate and ETA are left out without it (or when it is 0).
    """
    total = data.get("total") or 0
    completed = data.get("completed") or 0
    percent = data.get("percent")
    if percent is None and total:
        percent = 100.0 * completed / total
    parts = [f"pull {data.get('model', '?')}"]
    if percent is not None:
        parts.append(f"{percent:.1f}%")
    if total:
        parts.append(f"{human_bytes(completed)}/{human_bytes(total)}")
    if rate and rate > 0:
        parts.append(f"{human_bytes(rate)}/s")
        if total and total > completed:
            parts.append(f"ETA {human_duration((total - completed) / rate)}")
    status = data.get("status")
    if status:
        parts.append(f"({status})")
    return " ".join(parts)
