"""Rollouts of workloads that start in real time (the real LiteLLM proxy) get a floor under the scaled deadline."""

import pytest

from lab.kube import Cluster


@pytest.mark.parametrize(
    ("floor", "deadline", "expected"),
    [
        (0, 600, 6.0),  # pure time scale: Kubernetes' default 600 s becomes 6 s
        (120, 600, 120.0),  # the twin's runtime keeps two real minutes for a real process to start
        (120, 60, 60.0),  # never longer than the Deployment asked for
    ],
)
def test_progress_deadline(floor, deadline, expected):
    cluster = Cluster(time_scale=0.01, min_progress_deadline=floor)
    assert cluster.progress_deadline(deadline) == expected
