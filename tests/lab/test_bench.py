"""``make bench``'s accounting (bench/__main__.py): which task time is the lab's and which the controller's."""

from __future__ import annotations

from bench.__main__ import figures, waits_on_lab


def task(name: str, seconds: float, result: dict) -> dict:
    duration = {"start": "2026-12-07T10:00:00Z", "end": f"2026-12-07T10:00:{seconds:02.0f}Z"}
    return {"task": {"name": name, "duration": duration}, "hosts": {"localhost": result}}


def test_a_task_that_waits_for_a_rollout_is_the_labs_and_the_rest_the_controllers():
    scale = {"action": "kubernetes.core.k8s_scale", "invocation": {"module_args": {"replicas": 0, "wait": True}}}
    apply = {"action": "kubernetes.core.k8s", "invocation": {"module_args": {"wait": False}}, "changed": True}
    assert waits_on_lab(scale)
    assert not waits_on_lab(apply), "an apply that does not wait is the controller's"
    assert waits_on_lab({"action": "kubernetes.core.helm"})
    assert waits_on_lab({"action": "ansible.builtin.uri", "attempts": 3}), "a task polling with until"
    assert not waits_on_lab({"action": "ansible.builtin.set_fact"})
    report = {
        "plays": [
            {
                "tasks": [
                    task("Scale vLLM to 0", 6, scale),
                    task("Apply", 2, apply),
                    task("Skipped", 9, {"action": "kubernetes.core.k8s_scale", "skipped": True}),
                ]
            }
        ],
        "stats": {"localhost": {"changed": 1}},
    }
    got = figures(report)
    assert (got["tasks"], got["changed"], got["waits"]) == (2, 1, 6.0)
