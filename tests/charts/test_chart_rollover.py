"""The graceful-rollover pieces of every chart: a `preStop` delay (the `sleep` action) longer than the endpoint
propagation, a grace period longer than that delay plus the longest request in flight, and readiness that fails
first. That they work, with the twin's kubelet and its lagging service proxy, is shown in
tests/lab/test_termination.py; here: the rendered Pods, the defaults' reasons, the checks, the lab's values."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from charts_helpers import CHART_NAMES, CHARTS, ROOT, container, kubernetes_validate, one

from lab.serviceproxy import topology_lag

charts = pytest.mark.parametrize("chart", CHART_NAMES)
LAB_VARS = ROOT / "inventory" / "lab" / "group_vars" / "all" / "main.yml"
# kube-proxy programs a change about 1 s after it happens (more on a busy node): the chart defaults keep 5x that
KUBE_PROXY_PROPAGATION = 1.0


def defaults(chart: str) -> dict:
    return yaml.safe_load((CHARTS / chart / "values.yaml").read_text())


def pod_spec(objs: list[dict]) -> dict:
    return one(objs, "Deployment")["spec"]["template"]["spec"]


def lab_values(role: str) -> dict:
    """The chart values the lab inventory sets for the rollover (REAL seconds, see inventory/lab)."""
    lab = yaml.safe_load(LAB_VARS.read_text())
    return {
        "preStopSleepSeconds": lab[f"{role}_prestop_sleep_seconds"],
        "terminationGracePeriodSeconds": lab[f"{role}_termination_grace_period_seconds"],
    }


@charts
def test_the_prestop_delay_is_a_sleep_hook_well_above_the_propagation_delay(helm, chart):
    values = defaults(chart)
    spec = pod_spec(helm.template(chart))
    assert container({"spec": {"template": {"spec": spec}}})["lifecycle"] == {
        "preStop": {"sleep": {"seconds": values["preStopSleepSeconds"]}}
    }
    assert values["preStopSleepSeconds"] >= 5 * KUBE_PROXY_PROPAGATION
    assert spec["terminationGracePeriodSeconds"] == values["terminationGracePeriodSeconds"]


@charts
def test_the_grace_period_outlasts_the_delay_and_the_longest_request(chart):
    """After the delay the server finishes the requests in flight: the longest is what LiteLLM waits for the
    runtime (its route's timeout), or for LiteLLM itself the whole fallback chain of the default routes."""
    config = defaults("litellm")["config"]
    timeouts = {m["model_name"]: m["litellm_params"]["timeout"] for m in config["model_list"]}
    ((first, rest),) = [item for fallback in config["router_settings"]["fallbacks"] for item in fallback.items()]
    chain = [first, *rest]  # vllm-qwen, then ollama-qwen, then openai-gpt4o
    longest = {
        "litellm": sum(timeouts[alias] for alias in chain),
        "ollama": timeouts["ollama-qwen"],
        "vllm": timeouts["vllm-qwen"],
    }[chart]
    values = defaults(chart)
    assert values["terminationGracePeriodSeconds"] > values["preStopSleepSeconds"] + longest


@charts
def test_readiness_fails_first(helm, chart):
    """A server that stops answering leaves the endpoints within 10 s, long before liveness restarts it."""
    ctr = container(one(helm.template(chart), "Deployment"))
    ready, live = ctr["readinessProbe"], ctr["livenessProbe"]
    unready_after = ready["periodSeconds"] * ready["failureThreshold"]
    assert unready_after <= 10
    assert unready_after < live["periodSeconds"] * live["failureThreshold"]


@charts
def test_the_delay_and_the_grace_period_come_from_values_and_zero_means_no_hook(helm, tmp_path, chart):
    res = helm.template_text(chart, values={"preStopSleepSeconds": 3, "terminationGracePeriodSeconds": 20})
    assert res.returncode == 0, res.output
    objs = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert container(one(objs, "Deployment"))["lifecycle"] == {"preStop": {"sleep": {"seconds": 3}}}
    assert pod_spec(objs)["terminationGracePeriodSeconds"] == 20
    check = kubernetes_validate(res.stdout, tmp_path)
    assert check.returncode == 0, check.output

    objs = helm.template(chart, values={"preStopSleepSeconds": 0, "terminationGracePeriodSeconds": 0})
    assert "lifecycle" not in container(one(objs, "Deployment"))
    assert pod_spec(objs)["terminationGracePeriodSeconds"] == 0


@charts
@pytest.mark.parametrize("grace", [30, 10])
def test_a_delay_not_shorter_than_the_grace_period_is_refused(helm, chart, grace):
    res = helm.template_text(chart, values={"preStopSleepSeconds": 30, "terminationGracePeriodSeconds": grace})
    assert res.returncode != 0
    assert f"preStopSleepSeconds (30) must be shorter than terminationGracePeriodSeconds ({grace})" in res.output


@charts
@pytest.mark.parametrize("bad", [-1, 1.5, "5"], ids=["negative", "fraction", "string"])
def test_schema_refuses_a_delay_that_is_not_whole_seconds(helm, chart, bad):
    res = helm.template_text(chart, values={"preStopSleepSeconds": bad})
    assert res.returncode != 0 and "preStopSleepSeconds" in res.output, res.output


@charts
def test_the_lab_values_keep_the_delay_above_the_twins_proxy_lag(helm, tmp_path, chart):
    """The twin's service proxy lags ``kubernetes.proxy_lag_seconds`` (1 s) behind the endpoints: the lab's
    shorter delay still exceeds it by a second (the endpoint controller's own delay on a busy machine)."""
    values = lab_values(chart)
    assert values["preStopSleepSeconds"] >= topology_lag() + 1
    assert values["terminationGracePeriodSeconds"] > values["preStopSleepSeconds"] + 3  # a scaled request timeout
    res = helm.template_text(chart, values=values)
    assert res.returncode == 0, res.output
    assert kubernetes_validate(res.stdout, tmp_path).returncode == 0


def test_the_roles_pass_the_lab_values_to_the_charts(helm, tmp_path):
    """roles/*/templates/values.yaml.j2, rendered by Ansible with the lab's rollover values and without them (the
    home lab: the charts' defaults apply), then the charts rendered with the result."""
    lab = yaml.safe_load(LAB_VARS.read_text())
    rollover = {
        k: v for k, v in lab.items() if k.endswith(("_prestop_sleep_seconds", "_termination_grace_period_seconds"))
    }
    assert len(rollover) == 6, rollover
    common = {
        "inference_namespace": "ml",
        "inference_common_labels": {"app.kubernetes.io/part-of": "home-lab"},
        "ansible_python_interpreter": sys.executable,
        "ollama_release": "ollama",
        "ollama_plan": {
            "model": "phi4-mini",
            "node": "k3s-worker-02",
            "requirements": {"memory_request": "2Gi", "memory_limit": "4Gi"},
        },
        "vllm_plan": {
            "model": "Qwen/Qwen3-8B-AWQ",
            "served_model": "Qwen/Qwen3-8B-AWQ",
            "catalog": {},
            "node": "k3s-gpu-worker",
        },
        "inference_tiers": {
            "ollama": {
                "runtime": "ollama",
                "alias": "ollama-qwen",
                "service_url": "http://ollama.ml.svc:11434",
                "node": "k3s-worker-02",
            },
        },
        "inference_model_catalog": {"phi4-mini": {"runtime": "ollama"}},
        "inference_preflight_target_models": {"ollama": "phi4-mini"},
        "litellm_master_key": "unused",
    }
    rendered = {}
    for variant, extra in (("lab", rollover), ("homelab", {})):
        tasks = [
            {
                "ansible.builtin.template": {
                    "src": str(ROOT / "roles" / role / "templates" / "values.yaml.j2"),
                    "dest": str(tmp_path / f"{variant}-{role}.yaml"),
                    "mode": "0600",
                }
            }
            for role in CHART_NAMES
        ]
        play = [
            {
                "hosts": "localhost",
                "gather_facts": False,
                "vars_files": [str(ROOT / "roles" / role / "defaults" / "main.yml") for role in CHART_NAMES],
                "tasks": tasks,
            }
        ]
        (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
        (tmp_path / "v.json").write_text(json.dumps({**common, **extra}))
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
        run = subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "ansible-playbook"),
                *("-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"), "-e", f"@{tmp_path}/v.json"),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        for chart in CHART_NAMES:
            values = yaml.safe_load((tmp_path / f"{variant}-{chart}.yaml").read_text())
            rendered[variant, chart] = pod_spec(helm.template(chart, values=values))
    for chart in CHART_NAMES:
        lab_spec, home_spec = rendered["lab", chart], rendered["homelab", chart]
        want = lab_values(chart)
        assert lab_spec["terminationGracePeriodSeconds"] == want["terminationGracePeriodSeconds"]
        assert lab_spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == want["preStopSleepSeconds"]
        assert home_spec["terminationGracePeriodSeconds"] == defaults(chart)["terminationGracePeriodSeconds"]
        assert (
            home_spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
            == (defaults(chart)["preStopSleepSeconds"])
        )
