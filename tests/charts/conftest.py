"""Fixtures for the chart tests (helpers live in charts_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from charts_helpers import Helm


@pytest.fixture
def helm(tmp_path: Path) -> Helm:
    return Helm(tmp_path)


@pytest.fixture(scope="session")
def helm_session(tmp_path_factory) -> Helm:
    return Helm(tmp_path_factory.mktemp("helm"))
