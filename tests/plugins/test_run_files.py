"""run_files: a run's files written into their directory on the controller (created), with their mode, nothing
written in check mode, and a clear error for content that is not text or a name with a directory part."""

from __future__ import annotations

import os
import stat
import subprocess
import textwrap

from tests.conftest import ROOT

PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"


def play(tmp_path, files: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(
        textwrap.dedent(
            f"""\
            - hosts: localhost
              gather_facts: false
              vars:
                report: {{run_id: r1, probe: {{failed: 0}}}}
              tasks:
                - homelab.inference.run_files:
                    dir: {tmp_path / "reports" / "r1"}
                    files: {files}
                  register: written
                - ansible.builtin.debug:
                    msg: "changed={{{{ written.changed }}}} paths={{{{ written.paths | length }}}}"
            """
        )
    )
    return subprocess.run(
        [
            str(PLAYBOOK),
            *("-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={ROOT}/.venv/bin/python"),
            *args,
            str(tmp_path / "play.yml"),
        ],
        cwd=tmp_path,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


FILES = '{"report.json": "{{ report | to_nice_json }}\\n", "report.md": "# Run r1\\n"}'


def test_the_files_are_written_into_a_new_directory_with_their_modes(tmp_path):
    run = play(tmp_path, FILES)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "changed=False paths=2" in run.stdout  # run artefacts, not managed state
    d = tmp_path / "reports" / "r1"
    assert stat.S_IMODE(d.stat().st_mode) == 0o750
    assert (d / "report.md").read_text() == "# Run r1\n"
    assert '"failed": 0' in (d / "report.json").read_text()
    assert stat.S_IMODE((d / "report.json").stat().st_mode) == 0o640
    assert sorted(p.name for p in d.iterdir()) == ["report.json", "report.md"]  # no temporary file left
    # a second run replaces the files
    (d / "report.md").write_text("old")
    assert play(tmp_path, FILES).returncode == 0 and (d / "report.md").read_text() == "# Run r1\n"


def test_check_mode_writes_nothing(tmp_path):
    run = play(tmp_path, FILES, "--check")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "changed=False paths=0" in run.stdout and not (tmp_path / "reports").exists()


def test_content_that_is_not_text_and_names_with_a_directory_fail_before_writing(tmp_path):
    run = play(tmp_path, '{"report.json": "{{ report }}"}')
    assert run.returncode != 0 and "['report.json'] is not text" in run.stdout, run.stdout[-3000:]
    run = play(tmp_path, '{"../escape.md": "x"}')
    assert run.returncode != 0 and "not plain file names" in run.stdout, run.stdout[-3000:]
    assert not (tmp_path / "reports").exists() and not (tmp_path / "escape.md").exists()
