"""Every plugin's DOCUMENTATION/EXAMPLES/RETURN loads with ansible-doc (a YAML slip breaks ansible-playbook)."""

import json
import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(f"homelab.inference.{p.stem}" for p in (ROOT / "plugins" / "modules").glob("*.py"))


def ansible_doc(kind: str, *names: str) -> dict:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-doc"), "-t", kind, "--json", *names],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_modules_document_every_option_with_a_type_and_have_examples_and_return():
    docs = ansible_doc("module", *MODULES)
    assert set(docs) == set(MODULES)
    for name, doc in docs.items():
        options = doc["doc"]["options"]
        assert options, name
        for option, spec in options.items():
            assert spec.get("description"), f"{name}.{option} has no description"
            assert spec.get("type") or spec.get("suboptions"), f"{name}.{option} has no type"
        assert yaml.safe_load(doc["examples"]), f"{name} has no EXAMPLES"
        assert doc["return"], f"{name} has no RETURN"
