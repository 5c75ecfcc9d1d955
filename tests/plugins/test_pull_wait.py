"""ollama_pull_wait: one task waits for an async job, prints the progress file's percent, rate and ETA as it goes
(no retry lines), and ends with the job's own result, a failed job failing the task with its error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap

from tests.conftest import ROOT

PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"


def play(tmp_path, script: str) -> subprocess.CompletedProcess:
    """Start ``script`` as an async job (as the ollama role starts a pull) and wait for it with the action."""
    progress = tmp_path / "m.json"
    (tmp_path / "job.sh").write_text(script.replace("PROGRESS", str(progress)))
    (tmp_path / "play.yml").write_text(
        textwrap.dedent(
            f"""\
            - hosts: localhost
              gather_facts: false
              tasks:
                - ansible.builtin.command: sh {tmp_path / "job.sh"}
                  async: 60
                  poll: 0
                  register: job
                - homelab.inference.ollama_pull_wait:
                    jid: "{{{{ job.ansible_job_id }}}}"
                    model: m
                    progress_file: {progress}
                    poll: 0.2
                    show_every: 0
                  register: pulled
                - ansible.builtin.debug:
                    msg: "rc={{{{ pulled.rc }}}} waited={{{{ pulled.wait_seconds is defined }}}}"
            """
        )
    )
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ASYNC_DIR=str(tmp_path / "async"))
    return subprocess.run(
        [
            str(PLAYBOOK),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={ROOT}/.venv/bin/python",
            str(tmp_path / "play.yml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def progress(completed: int) -> str:
    data = {"model": "m", "status": "pulling abc", "completed": completed, "total": 4_000_000_000, "done": False}
    return f"echo '{json.dumps(data)}' > PROGRESS.tmp && mv PROGRESS.tmp PROGRESS; sleep 1"


def test_a_pull_shows_percent_rate_and_eta_and_no_retry_lines(tmp_path):
    # six states a second apart: on a slow, busy machine the task may start a few seconds after the job, and it
    # must still see a pull under way (percent, size, rate and ETA), not only its end
    run = play(tmp_path, "\n".join(progress(n * 500_000_000) for n in range(6)) + "\n")
    assert run.returncode == 0, run.stdout[-3000:]
    # a pull under way: a percent above zero (the 0.0 % of the first state alone proves no progress shown)
    assert re.search(r"pull m (?!0\.0%)\d+\.\d% \d\.\d\d GB/4\.00 GB", run.stdout), run.stdout[-3000:]
    assert "ETA" in run.stdout and "MB/s" in run.stdout
    assert "RETRYING" not in run.stdout and "retries left" not in run.stdout
    assert "rc=0 waited=True" in run.stdout  # the job's own result, and how long the task waited
    # the job's status file is cleaned up (the async directory is the one this test gave the run)
    assert (tmp_path / "async").is_dir() and not list((tmp_path / "async").glob("j*"))


def test_a_failed_pull_fails_the_task_with_its_error(tmp_path):
    run = play(tmp_path, progress(0) + "\necho 'no space left on device' >&2; exit 3\n")
    assert run.returncode != 0
    assert "no space left on device" in run.stdout and "RETRYING" not in run.stdout
