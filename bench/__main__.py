"""``make bench``: the plays' speed on a fresh twin, the figures the README shows.

Starts a twin of its own (a temporary LAB_DIR, so its own loopback address), runs, in order:

1. rebuild from empty, 2. the same rebuild again (nothing to change), 3. a ``--check --diff`` preview of an
upgrade to qwen2.5:14b, 4. that upgrade, 5. the same upgrade again (nothing to change), 6. an upgrade to qwen3:4b
that the gate fails and that is rolled back, 7. an upgrade of the vLLM tier,

each with Ansible's ``ansible.posix.json`` stdout callback, and prints per run: wall time (s), tasks run, tasks
changed, the time spent in tasks that wait on the lab (the Helm release rollouts, pulls, the gate's and the
route checks' requests, drains, the LXC restart, scales and applies that wait for their rollout, every task that
polls with ``until``) and the rest: the
controller's own share. Compared with the targets of issue 11 on a 2-core machine with nothing else running.
Wall times depend on the machine's load; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.twin import ANSIBLE_PLAYBOOK, Twin  # noqa: E402

# actions whose time is the lab's: rollouts, pulls, model loads, requests to the models, drains, LXC restarts
WAIT_ACTIONS = {
    "kubernetes.core.helm",
    "kubernetes.core.k8s_drain",
    "homelab.inference.ollama_pull_wait",
    "homelab.inference.llm_validate",
    "homelab.inference.litellm_route_check",
    "homelab.inference.proxmox_lxc_resources",
    "homelab.inference.llm_probe",
}
# actions that wait on the lab when the task asks them to (``wait: true``): a scale or an apply waiting for the
# Deployment's rollout (the fallback drill scales vLLM to 0 and back, a consumer's restart rolls its Pods)
WAIT_WHEN_ASKED = {"kubernetes.core.k8s", "kubernetes.core.k8s_scale"}
UPGRADE = ["upgrade-model.yml", "-e", "tier=ollama", "-e", "model=qwen2.5:14b"]
RUNS = [
    ("rebuild from empty", ["rebuild-inference-tier.yml"], True),
    ("no-op rebuild", ["rebuild-inference-tier.yml"], True),
    ("preview (--check --diff)", [*UPGRADE, "--check", "--diff"], True),
    ("upgrade to qwen2.5:14b", UPGRADE, True),
    ("no-op upgrade", UPGRADE, True),
    ("rolled-back upgrade to qwen3:4b", ["upgrade-model.yml", "-e", "tier=ollama", "-e", "model=qwen3:4b"], False),
    ("vLLM upgrade", ["upgrade-model.yml", "-e", "tier=vllm", "-e", "model=Qwen/Qwen2.5-7B-Instruct-AWQ"], True),
]
# seconds, issue 11 (a 2-core machine with nothing else running)
TARGETS = {"no-op upgrade": 15.0, "no-op rebuild": 20.0, "preview (--check --diff)": 20.0}
CONTROLLER_TARGET = ("upgrade to qwen2.5:14b", 30.0)


def seconds(duration: dict) -> float:
    """Length of an ``ansible.posix.json`` duration (``start``/``end`` ISO 8601 timestamps) in seconds."""
    start, end = (datetime.fromisoformat(duration[k].replace("Z", "+00:00")) for k in ("start", "end"))
    return (end - start).total_seconds()


def waits_on_lab(result: dict) -> bool:
    """Whether a task's time is the lab's: a waiting action, a task that polls with ``until``, or a scale or apply
    that waits for its rollout (its ``invocation`` shows ``wait: true``)."""
    if result.get("action") in WAIT_ACTIONS or "attempts" in result:
        return True
    args = (result.get("invocation") or {}).get("module_args") or {}
    return result.get("action") in WAIT_WHEN_ASKED and bool(args.get("wait"))


def figures(report: dict) -> dict:
    """Tasks, changed, lab waits (s) of one play run, from its ``ansible.posix.json`` output."""
    tasks = waits = 0.0
    by_task: dict[str, float] = {}
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for result in task.get("hosts", {}).values():
                if result.get("skipped"):
                    continue
                tasks += 1
                took = seconds(task["task"]["duration"]) if task["task"].get("duration", {}).get("end") else 0.0
                by_task[task["task"]["name"]] = by_task.get(task["task"]["name"], 0.0) + took
                if waits_on_lab(result):
                    waits += took
    stats = report.get("stats", {})
    return {
        "tasks": int(tasks),
        "changed": sum(host.get("changed", 0) for host in stats.values()),
        "failed": sum(host.get("failures", 0) for host in stats.values()),
        "waits": waits,
        "slowest": sorted(by_task.items(), key=lambda item: -item[1])[:5],
        "failures": [
            f"{task['task']['name']}: {result.get('msg', '')}"
            for play in report.get("plays", [])
            for task in play.get("tasks", [])
            for result in task.get("hosts", {}).values()
            if result.get("failed") and not result.get("ignore_errors")
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slowest", action="store_true", help="also print each run's five slowest tasks")
    options = parser.parse_args()
    # a twin of its own (its own LAB_DIR, so its own loopback address), driven as the tests drive theirs
    twin = Twin(Path(tempfile.mkdtemp(prefix="homelab-bench-")))
    env = dict(twin.env, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    # the JSON stdout callback alone (profile_tasks would print between its lines)
    env.update(
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_CALLBACKS_ENABLED="ansible.posix.json",
        ANSIBLE_FORCE_COLOR="0",
    )
    rows = []
    twin.up()
    try:
        twin.kubectl("apply", "-f", str(ROOT / "lab" / "fixtures" / "paperless-ai.yaml"))
        for name, args, should_pass in RUNS:
            started = time.monotonic()
            playbook = [ANSIBLE_PLAYBOOK, "-i", "inventory/lab", f"playbooks/{args[0]}"]
            proc = subprocess.run(
                [*playbook, *args[1:]],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            wall = time.monotonic() - started
            try:
                data = figures(json.loads(proc.stdout[proc.stdout.index("{") :]))
            except ValueError:
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{name}: no JSON from ansible-playbook (exit {proc.returncode})") from None
            if (proc.returncode == 0) != should_pass:
                print("\n".join(data["failures"])[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
                raise SystemExit(f"{name}: exit {proc.returncode}, expected {'success' if should_pass else 'failure'}")
            rows.append((name, wall, data))
    finally:
        twin.down()

    print(f"{'run':34} {'wall s':>7} {'tasks':>6} {'changed':>8} {'lab s':>7} {'controller s':>13}  target")
    misses = []
    for name, wall, data in rows:
        target = TARGETS.get(name)
        controller = wall - data["waits"]
        note = ""
        if target is not None:
            note = f"wall <= {target:g} s: {'met' if wall <= target else 'MISSED'}"
            misses += [name] if wall > target else []
        if name == CONTROLLER_TARGET[0]:
            limit = CONTROLLER_TARGET[1]
            note = f"controller <= {limit:g} s: {'met' if controller <= limit else 'MISSED'}"
            misses += [name] if controller > limit else []
        counts = f"{data['tasks']:6d} {data['changed']:8d}"
        print(f"{name:34} {wall:7.1f} {counts} {data['waits']:7.1f} {controller:13.1f}  {note}")
        if options.slowest:
            for task, took in data["slowest"]:
                print(f"{'':36}{took:6.1f} s  {task}")
    print(f"\ntargets missed: {', '.join(misses)}" if misses else "\nevery target met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
