"""A whole twin per test module (see tests/twin.py)."""

from __future__ import annotations

import pytest

from tests.twin import Twin


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    twin = Twin(tmp_path_factory.mktemp("lab")).up()
    yield twin
    twin.down()
