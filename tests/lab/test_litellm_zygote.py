"""The twin's LiteLLM zygote (lab/litellm_zygote.py, lab/litellm_runner.py): a Pod's LiteLLM process forked from a
process that imported LiteLLM once is the Pod's process in every way the kubelet relies on (its argv, whole
environment, working directory and log; a session of its own; a real SIGTERM with its exit code; SIGKILL of its
process group), and the kubelet execs the binary when the fork cannot stand in for it.

A stand-in ``litellm`` package in a virtualenv of its own keeps these fast; the real proxy goes through the zygote
in every twin test (tests/lab/test_twin.py reads its answers)."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.litellm_runner import BASE_ENV, LiteLLMProcess, LiteLLMZygote, interpreter

# the ``litellm`` console script's entry point: records what it was started with, exits 0 at SIGTERM (as uvicorn
# does after its shutdown), or at once with the code the environment names
FAKE_LITELLM = """
import json, os, signal, subprocess, sys, time

def run_server():
    if os.environ.get("EXIT_WITH"):
        return int(os.environ["EXIT_WITH"])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = {"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd(), "pid": os.getpid(),
              "ppid": os.getppid(), "sid": os.getsid(0), "child": child.pid,
              "imported_at": IMPORTED_AT}
    print("started", json.dumps(record), flush=True)
    while True:
        time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def fake_litellm(tmp_path_factory) -> Path:
    """A ``litellm`` console script whose interpreter (a virtualenv) imports the stand-in package."""
    root = tmp_path_factory.mktemp("fake-litellm")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    package = site / "litellm"
    (package / "proxy").mkdir(parents=True)
    (package / "__init__.py").write_text("import time\nIMPORTED_AT = time.time()\n" + FAKE_LITELLM)
    (package / "proxy" / "__init__.py").write_text("")
    (package / "proxy" / "proxy_server.py").write_text("")
    script = root / "venv" / "bin" / "litellm"
    script.write_text(f"#!{python}\nimport sys\nfrom litellm import run_server\nsys.exit(run_server())\n")
    script.chmod(0o755)
    return script


@pytest.fixture
async def zygote(fake_litellm, tmp_path):
    zygote = LiteLLMZygote(interpreter(fake_litellm), tmp_path / "zygote.log", BASE_ENV)
    assert await zygote.start(timeout=30), (tmp_path / "zygote.log").read_text()
    yield zygote
    await zygote.close()


async def started(process: LiteLLMProcess, timeout: float = 10) -> dict:
    """What the stand-in recorded at its start (read from the container log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.log_file.exists():
            for line in process.log_file.read_text().splitlines():
                if line.startswith("started "):
                    return json.loads(line.removeprefix("started "))
        await asyncio.sleep(0.05)
    raise AssertionError(f"no start recorded in {process.log_file}")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def process(fake_litellm: Path, tmp_path: Path, zygote, **env: str) -> LiteLLMProcess:
    return LiteLLMProcess(
        fake_litellm,
        tmp_path / "work",
        4123,
        "model_list: []\n",
        {"LITELLM_MASTER_KEY": "sk-test", **env},
        tmp_path / "litellm.log",
        zygote=zygote,
    )


def test_the_interpreter_is_the_console_scripts_shebang(fake_litellm, tmp_path):
    assert interpreter(fake_litellm) == fake_litellm.parent / "python"
    plain = tmp_path / "plain"
    plain.write_text("echo hi\n")
    assert interpreter(plain) is None
    assert interpreter(tmp_path / "missing") is None


async def test_a_forked_process_is_the_pods_process_and_exits_at_sigterm(fake_litellm, zygote, tmp_path):
    proc = process(fake_litellm, tmp_path, zygote)
    before = time.time()
    await proc.start()
    record = await started(proc)
    assert record["ppid"] == zygote.proc.pid, "forked from the zygote, not exec'd"
    assert record["imported_at"] < before, "LiteLLM was imported once, before the fork"
    assert record["argv"] == [
        str(fake_litellm),
        "--config",
        str(tmp_path / "work" / "config.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        "4123",
    ]
    assert record["cwd"] == str(tmp_path / "work")
    assert (tmp_path / "work" / "config.yaml").read_text() == "model_list: []\n"
    env = record["env"]
    assert env["LITELLM_MASTER_KEY"] == "sk-test" and env["HOME"] == str(tmp_path / "work")
    assert {k: env[k] for k in BASE_ENV} == BASE_ENV
    assert "PYTEST_CURRENT_TEST" not in env, "the Pod's environment only, not the zygote's or the twin's"
    assert record["sid"] == record["pid"], "a session (and process group) of its own"
    assert proc.running and proc.returncode is None and proc.pid == record["pid"]
    proc.terminate()
    assert await asyncio.wait_for(proc.wait(), 5) == 0
    assert not proc.running and proc.returncode == 0
    await proc.kill()  # the group's other process (its child) goes with it
    deadline = time.monotonic() + 5
    while alive(record["child"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not alive(record["child"])


async def test_sigkill_of_the_group_and_an_exit_code_are_reported(fake_litellm, zygote, tmp_path):
    proc = process(fake_litellm, tmp_path, zygote)
    await proc.start()
    record = await started(proc)
    await asyncio.wait_for(proc.kill(), 5)
    assert proc.returncode == -signal.SIGKILL
    assert not alive(record["pid"])
    deadline = time.monotonic() + 5  # the signal reaches the rest of the group a moment later
    while alive(record["child"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not alive(record["child"])

    failing = process(fake_litellm, tmp_path / "b", zygote, EXIT_WITH="3")
    await failing.start()
    assert await asyncio.wait_for(failing.wait(), 5) == 3


async def test_an_environment_litellm_reads_at_import_is_exec_d(fake_litellm, zygote, tmp_path):
    proc = process(fake_litellm, tmp_path, zygote, LITELLM_MODE="PRODUCTION")
    await proc.start()
    record = await started(proc)
    assert record["ppid"] == os.getpid(), "exec'd by the kubelet: the zygote imported without LITELLM_MODE"
    assert record["env"]["LITELLM_MODE"] == "PRODUCTION"
    await proc.stop(timeout=5)
    assert proc.returncode == 0


async def test_without_its_zygote_a_process_is_exec_d(fake_litellm, zygote, tmp_path):
    await zygote.close()
    assert not zygote.alive
    proc = process(fake_litellm, tmp_path, zygote)
    await proc.start()
    record = await started(proc)
    assert record["ppid"] == os.getpid()
    await proc.stop(timeout=5)


async def test_a_zygote_that_cannot_import_litellm_reports_it(tmp_path):
    zygote = LiteLLMZygote(Path(sys.executable), tmp_path / "zygote.log", BASE_ENV)  # no LiteLLM here
    assert not await zygote.start(timeout=30)
    assert "No module named 'litellm'" in (tmp_path / "zygote.log").read_text()
    assert not zygote.alive


def test_the_zygote_script_has_no_dependency_of_the_twin():
    tree = ast.parse((Path(__file__).parents[2] / "lab" / "litellm_zygote.py").read_text())
    imports = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imports |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imports <= {"__future__", "contextlib", "json", "os", "selectors", "signal", "sys", "traceback", "litellm"}


def test_a_long_interpreter_path_behind_pips_sh_launcher_is_found(tmp_path):
    # pip writes this form when the interpreter's path is too long for a #! line
    long = "/opt/" + "x" * 130 + "/bin/python3.11"
    script = tmp_path / "litellm"
    script.write_text(f"#!/bin/sh\n'''exec' {long} \"$0\" \"$@\"\n' '''\nimport sys\n")
    assert interpreter(script) == Path(long)
