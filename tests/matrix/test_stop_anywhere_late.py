"""A run stopped inside the later steps (the fallback drill, the prune, a rollback's own Helm rollback) is
recovered by playbooks/restore-tier.yml: see test_stop_anywhere.py. A module of its own (its own twin), so that
`make test` runs it on another pytest-xdist worker than the earlier instants (``--dist loadfile``)."""

from __future__ import annotations

import signal

import pytest

from tests.matrix.test_stop_anywhere import stop_then_restore

# in make extended, not make test: the CI's 90 minutes (README "Tests and their budget")
pytestmark = [pytest.mark.slow, pytest.mark.extended]


@pytest.mark.parametrize(
    ("instant", "sig"),
    [
        ("fallback drill", signal.SIGKILL),
        ("prune", signal.SIGINT),
        ("rollback", signal.SIGKILL),
    ],
    ids=lambda v: v if isinstance(v, str) else signal.Signals(v).name,
)
def test_stopped_inside_a_late_step_then_restore_tier(twin, instant, sig):
    stop_then_restore(twin, instant, sig)
