# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ollama model names: the one tag normaliser of the product and the twin.

No imports beyond the standard library, so the filters load it without the HTTP client (each task that uses a
filter imports the filter module anew in its worker process). Ollama's rule: a name without a tag means
``:latest`` (https://github.com/ollama/ollama/blob/main/docs/api.md#model-names).
"""

from __future__ import annotations


def normalize_name(name: str) -> str:
    """Return the canonical Ollama model name: append the ``:latest`` tag when no tag is given.

    ``normalize_name("phi4-mini") == "phi4-mini:latest"``; ``"qwen2.5:14b"`` is unchanged. A namespace or
    registry host prefix (``library/x``, ``registry.ollama.ai/library/x:1b``) keeps its path; only the last path
    element is checked for a tag (a ``:port`` in a host is not a tag).

    Args:
        name (str): model name as a user writes it.

    Returns:
        str: the name with an explicit tag.

    Raises:
        ValueError: for an empty name.
    """
    name = (name or "").strip()
    if not name:
        raise ValueError("model name must not be empty")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return name + ":latest"
    return name


def same_model(a: str, b: str) -> bool:
    """True when two model names refer to the same tag after :func:`normalize_name` (``x`` == ``x:latest``)."""
    return normalize_name(a) == normalize_name(b)
