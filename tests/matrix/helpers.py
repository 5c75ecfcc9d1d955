"""Running the real playbooks against a twin, stopping them at any instant, and reading the tier's state.

:func:`playbook` runs one to its end; :class:`Run` starts one and can stop it (SIGKILL of its process group, as a
lost controller or ``kill -9``; SIGINT to the process group, as Ctrl-C in a terminal sends it) as soon as a
condition holds inside a step: a task has started and the twin shows the operation under way (a cordoned node, a
Helm release pending, a pull's progress file, ...). :func:`dump` is the tier's state, normalised, compared with
the state before (exactly the previous state) or checked against the target.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.twin import ANSIBLE_PLAYBOOK, HELM, ROOT, SharedTwin, Twin, wait_for

INVENTORY = str(ROOT / "inventory" / "lab")
TASK_LINE = re.compile(r"^TASK \[(?:[\w.]+ : )?(.*?)\] \*+$")


class Run:
    """One ``ansible-playbook`` run against ``twin``, in a process group of its own.

    ``tasks`` lists ``(seconds since start, task name)`` as the task banners appear on its output.
    """

    def __init__(self, twin: Twin, name: str, *args: str):
        self.twin = twin
        self.cmd = [ANSIBLE_PLAYBOOK, "-i", INVENTORY, str(ROOT / "playbooks" / name), *args]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            env=twin.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.tasks: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            match = TASK_LINE.match(line.rstrip())
            if match:
                self.tasks.append((time.monotonic() - self.started, match.group(1)))

    def task_started(self, text: str) -> float | None:
        """Seconds since the last task whose name contains ``text`` started (None: none has)."""
        for at, name in reversed(self.tasks):
            if text in name:
                return time.monotonic() - self.started - at
        return None

    @property
    def current_task(self) -> str:
        return self.tasks[-1][1] if self.tasks else ""

    def stop_when(self, condition, sig: int, timeout: float = 600, what: str = "the instant") -> str:
        """Send ``sig`` to the run's process group once ``condition(self)`` is true (polled every 0.1 s); return the
        task that was running then. Fails when the run ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended before {what}: {''.join(self.lines)[-3000:]}")
            if condition(self):
                task = self.current_task
                os.killpg(self.proc.pid, sig)
                return task
            time.sleep(0.1)
        self.abandon()
        raise AssertionError(f"timed out waiting for {what}; last task {self.current_task!r}")

    def abandon(self) -> None:
        """SIGKILL the run's process group and wait for it: a case that gives up on a run must not leave it holding
        the tier's lock for the module's next cases (its record stays, for the teardown's restore-tier to undo)."""
        if group_alive(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        wait_for(lambda: not group_alive(self.proc.pid), timeout=60, interval=0.2, what="the run's processes to end")

    def wait(self, timeout: float = 900) -> subprocess.CompletedProcess:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.abandon()
            raise
        self.reader.join(timeout=30)
        # a Ctrl-C ends ansible-playbook first: let the rest of its process group (helm, a module) end too
        wait_for(lambda: not group_alive(self.proc.pid), timeout=60, interval=0.2, what="the run's processes to end")
        return subprocess.CompletedProcess(self.cmd, self.proc.returncode, "".join(self.lines), "")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def playbook(twin: Twin, name: str, *args: str, at_step: tuple | None = None) -> subprocess.CompletedProcess:
    """Run a playbook against the twin to its end. ``at_step``: ``(step, action)``, call ``action()`` once the run
    record reaches the step (to inject a fault mid-run)."""
    run = Run(twin, name, *args)
    if at_step:
        step, action = at_step
        try:
            wait_for(
                lambda: run.proc.poll() is not None or record(twin).get("step") == step,
                # as long as the run's own wait: on a slow, busy machine a vLLM upgrade took over 300 s to reach
                # its fallback drill (CI of 2026-12-07); the wait ends at once when the run ends first
                timeout=900,
                interval=0.2,
                what=f"step {step}",
            )
        except AssertionError:
            run.abandon()
            raise
        action()
    return run.wait()


def upgrade(twin: Twin, model: str, *args: str, tier: str = "ollama", **kw) -> subprocess.CompletedProcess:
    return playbook(twin, "upgrade-model.yml", "-e", f"tier={tier}", "-e", f"model={model}", *args, **kw)


def record(twin: Twin) -> dict:
    got = twin.kubectl("-n", "ml", "get", "secret", "inference-run-record", "-o", "json", check=False)
    if got.returncode != 0:
        return {}
    return json.loads(base64.b64decode(json.loads(got.stdout)["data"]["record.json"]))


def helm(twin: Twin, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [HELM, *args, "-n", "ml", "--kubeconfig", twin.kubeconfig],
        capture_output=True,
        text=True,
        check=check,
        env=twin.env,
    )


def dump(twin: Twin) -> dict:
    """The tier's state, normalised: what a rollback must put back exactly."""

    def values(release: str) -> dict:
        return json.loads(helm(twin, "get", "values", release, "-o", "json").stdout)

    def configmap(ns: str, name: str) -> dict:
        return json.loads(twin.kubectl("-n", ns, "get", "configmap", name, "-o", "json").stdout)["data"]

    nodes = json.loads(twin.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    tags = ollama_tags(twin)
    pins = twin.lab_dir / "model-pins.yml"
    return {
        "values": {release: values(release) for release in ("ollama", "vllm", "litellm")},
        "litellm_config": configmap("ml", "litellm-config"),
        "consumer_config": configmap("docs", "paperless-ai-config"),
        "lxc_memory": twin.proxmox().nodes("pve").lxc(103).config.get()["memory"],
        "models": sorted(m["name"] for m in tags),
        "pins": pins.read_text() if pins.exists() else None,
        "unschedulable": sorted(n["metadata"]["name"] for n in nodes if n["spec"].get("unschedulable")),
    }


def answers_through_litellm(twin: Twin, alias: str = "ollama-qwen", tries: int = 5) -> bool:
    """The alias answers through LiteLLM with its own model group. Up to ``tries`` requests a second apart: the
    service proxy takes a new endpoint into account 1 s after it sees it (kube-proxy's lag), so a LiteLLM Pod that
    just replaced the only one may get its first connections a moment later."""
    for attempt in range(tries):
        try:
            reply = httpx.post(
                twin.endpoints["services"]["ml/litellm"] + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {twin.secret('litellm-master-key')}"},
                json={"model": alias, "messages": [{"role": "user", "content": "Reply OK"}], "max_tokens": 8},
                timeout=30,
            )
            if reply.status_code == 200 and reply.headers.get("x-litellm-model-group") == alias:
                return True
        except httpx.TransportError:
            pass
        if attempt < tries - 1:
            time.sleep(1)
    return False


def ollama_tags(twin: Twin, tries: int = 5) -> list[dict]:
    """The models Ollama lists, through its Service (retried like :func:`answers_through_litellm`)."""
    for attempt in range(tries):
        try:
            return httpx.get(twin.endpoints["services"]["ml/ollama"] + "/api/tags", timeout=10).json()["models"]
        except httpx.TransportError:
            if attempt == tries - 1:
                raise
            time.sleep(1)
    return []


def assert_failed_and_back(twin: Twin, run: subprocess.CompletedProcess, step: str, *causes: str) -> None:
    assert run.returncode != 0, run.stdout[-3000:]
    assert f"failed at step '{step}'" in run.stdout, run.stdout[-3000:]
    for cause in causes:
        assert cause in run.stdout, (cause, run.stdout[-3000:])
    assert "Rolled back to phi4-mini; it answers again" in run.stdout
    assert record(twin)["status"] == "rolled back"
    twin.fault("clear")  # the dump reads through the APIs the fault may still break
    assert dump(twin) == twin.baseline
    assert answers_through_litellm(twin)


def assert_refused_unchanged(twin: Twin, run: subprocess.CompletedProcess, *texts: str) -> None:
    assert run.returncode != 0
    for text in texts:
        assert text in run.stdout, (text, run.stdout[-3000:])
    twin.fault("clear")  # the dump reads through the APIs the fault may still break
    assert dump(twin) == twin.baseline


# -- what the twin shows while an operation is under way ----------------------------------------------------------


def node_cordoned(twin: Twin, node: str = "k3s-worker-02") -> bool:
    got = twin.kubectl("get", "node", node, "-o", "jsonpath={.spec.unschedulable}", check=False)
    return got.stdout.strip() == "true"


def release_status(twin: Twin, release: str) -> str:
    """Status of the newest revision of ``release`` (``pending-upgrade``, ``deployed`` ...), from Helm's storage."""
    got = twin.kubectl(
        "-n", "ml", "get", "secrets", "-l", f"owner=helm,name={release}", "-o", "json", check=False, timeout=20
    )
    if got.returncode != 0:
        return ""
    items = json.loads(got.stdout)["items"]
    if not items:
        return ""
    newest = max(items, key=lambda s: int(s["metadata"]["labels"]["version"]))
    return newest["metadata"]["labels"]["status"]


def lxc_memory(twin: Twin, vmid: int = 103) -> int:
    return int(twin.proxmox().nodes("pve").lxc(vmid).config.get()["memory"])


def pull_progress(twin: Twin, model: str) -> float:
    """Percent of the running pull of ``model`` (its progress file in the twin's reports), -1 without one."""
    path = twin.lab_dir / "reports" / "progress" / (re.sub(r"[/:]", "_", model) + ".json")
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return -1.0
    return -1.0 if state.get("done") else float(state.get("percent") or 0.0)


def every_alias_answers(twin: Twin) -> bool:
    return all(answers_through_litellm(twin, alias) for alias in ("ollama-qwen", "vllm-qwen"))


# -- stopping a run inside a step ------------------------------------------------------------------------------

UPGRADE = "upgrade-model.yml"


def start(twin, model: str, *args: str, tier: str = "ollama") -> Run:
    return Run(twin, UPGRADE, "-e", f"tier={tier}", "-e", f"model={model}", *args)


def stopped(run: Run, condition, sig: int, what: str) -> str:
    """Stop ``run`` with ``sig`` once ``condition`` holds; check it ended without a rescue, its record left
    ``running``; return the task it was in."""
    task = run.stop_when(condition, sig, what=what)
    done = run.wait()
    if sig == signal.SIGKILL:
        assert done.returncode == -signal.SIGKILL
    else:  # Ctrl-C: ansible-playbook ends with "User interrupted execution", running no rescue and no always
        assert done.returncode != 0 and "User interrupted execution" in done.stdout, done.stdout[-2000:]
    assert record(run.twin)["status"] == "running", "a stopped run runs no rescue: its record stays unfinished"
    return task


def after(run: Run, text: str, seconds: float = 0.0):
    """The run is at least ``seconds`` into the last task whose name contains ``text``."""
    started = run.task_started(text)
    return started is not None and started >= seconds


def assert_back_to_previous(twin, recovered) -> None:
    assert recovered.returncode == 0, recovered.stdout[-3000:]
    state = dump(twin)
    assert state == twin.baseline, {k: (state[k], twin.baseline[k]) for k in state if state[k] != twin.baseline[k]}
    assert not state["unschedulable"] and every_alias_answers(twin)


def forget_pins(twin) -> None:
    """A successful upgrade pins its model in the inventory's pins file; the rebuilt baseline has none."""
    (twin.lab_dir / "model-pins.yml").unlink(missing_ok=True)


# an accuracy no sample of the gate can show (10 of 10: lower bound 0.72), failing closed when undecided: the gate
# fails and the run rolls back
GATE = yaml.safe_load((ROOT / "inventory" / "lab" / "group_vars" / "all" / "main.yml").read_text())["inference_gate"]
GATE_FAILS = json.dumps({"inference_gate": {**GATE, "min_accuracy": 1.0, "on_inconclusive": "fail"}})


def rebuilt(twin: Twin) -> None:
    """Make a fresh twin the matrix's "previous" state: Paperless-AI deployed, the tier rebuilt from the lab
    inventory, and that state kept as ``twin.baseline``."""
    twin.env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    twin.kubectl("apply", "-f", str(ROOT / "lab" / "fixtures" / "paperless-ai.yaml"))
    rebuild = playbook(twin, "rebuild-inference-tier.yml")
    assert rebuild.returncode == 0, rebuild.stdout[-3000:]
    twin.baseline = dump(twin)


class SharedLab(SharedTwin):
    """A twin rebuilt from the lab inventory (:func:`rebuilt`), started on first use."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        super().__init__(tmp_path_factory, prepare=rebuilt)
