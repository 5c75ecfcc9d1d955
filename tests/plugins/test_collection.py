"""The repository root is the collection homelab.inference: `ansible-galaxy collection build` makes an artifact
without the twin, the tests and the inventories, and the artifact installed into an empty collections path
serves its modules and playbooks by FQCN, outside this work tree: it rebuilds and upgrades a twin."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.twin import Twin

BIN = ROOT / ".venv" / "bin"
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py"))
PLAYBOOKS = ("upgrade_model", "rebuild_inference_tier", "restore_tier")


def run(*cmd: str, cwd=None, env=None, timeout: float = 300, ok: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd``; with ``ok`` (the default) it must succeed, its output's tail is the failure message."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    run(str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), cwd=ROOT)
    (tarball,) = out.glob("*.tar.gz")
    return tarball


@pytest.fixture(scope="module")
def installed(artifact, tmp_path_factory):
    """The artifact installed into an empty collections path; the environment that sees only that copy."""
    home = tmp_path_factory.mktemp("elsewhere")
    path = home / "collections"
    run(
        str(BIN / "ansible-galaxy"),
        *("collection", "install", "--offline", "--no-deps", "--force", "-p", str(path), str(artifact)),
        cwd=home,
    )
    (home / "ansible.cfg").write_text("[defaults]\n")  # not the work tree's
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(home / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(path),
        "ANSIBLE_HOME": str(home / ".ansible"),
    }
    return home, path / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"], env


def test_the_artifact_leaves_out_the_twin_the_tests_and_the_inventories(artifact):
    with tarfile.open(artifact) as tar:
        top = {name.split("/", 1)[0] for name in tar.getnames()}
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert {"plugins", "roles", "playbooks", "charts", "meta", "MANIFEST.json", "FILES.json"} <= top
    assert not top & {"lab", "tests", "molecule", "inventory", ".venv", ".lab", ".ansible", "requirements"}
    assert manifest["collection_info"]["namespace"] == GALAXY["namespace"]
    assert manifest["collection_info"]["version"] == GALAXY["version"]


def test_the_installed_collection_serves_its_modules_by_fqcn(installed):
    home, where, env = installed
    docs = json.loads(
        run(
            str(BIN / "ansible-doc"), "-t", "module", "--json", *(f"{FQCN}.{m}" for m in MODULES), cwd=home, env=env
        ).stdout
    )
    assert set(docs) == {f"{FQCN}.{m}" for m in MODULES}
    for name, doc in docs.items():
        assert doc["doc"]["filename"].startswith(str(where)), (name, doc["doc"]["filename"])


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_the_installed_collection_runs_its_playbooks_by_fqcn(installed, playbook):
    # --syntax-check loads the playbook and every role it imports, from the installed copy
    home, _, env = installed
    proc = run(
        str(BIN / "ansible-playbook"), "-i", "localhost,", "--syntax-check", f"{FQCN}.{playbook}", cwd=home, env=env
    )
    assert "ERROR" not in proc.stderr


@pytest.mark.parametrize("chart", ["ollama", "vllm", "litellm"])
def test_the_installed_collection_carries_charts_with_their_library(installed, tmp_path, chart):
    # the charts install from the collection's directory: each carries its copy of the library chart (plain files,
    # no symlink) and renders what the work tree's chart renders, without `helm dependency build` or a repository
    _, where, _ = installed
    library = where / "charts" / chart / "charts" / "common"
    assert library.is_dir() and not library.is_symlink()
    assert not [p for p in library.rglob("*") if p.is_symlink()]
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none")}
    env |= {var: str(tmp_path / var.lower()) for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}
    rendered = [
        run(str(BIN / "helm"), "template", chart, str(base / "charts" / chart), "-n", "ml", env=env).stdout
        for base in (where, ROOT)
    ]
    assert "kind: Service\n" in rendered[0] and "kind: ServiceAccount\n" in rendered[0]
    assert rendered[0] == rendered[1]


def test_a_module_from_the_installed_collection_imports_its_module_utils(installed):
    # the module runs (its module_utils come from the collection) and fails on its own terms: nothing listens
    home, _, env = installed
    proc = run(
        str(BIN / "ansible"),
        *("localhost", "-c", "local", "-i", "localhost,", "-e", f"ansible_python_interpreter={BIN / 'python'}"),
        *("-m", f"{FQCN}.ollama_model", "-a", "name=phi4-mini api_url=http://127.0.0.1:9"),
        cwd=home,
        env=env,
        timeout=120,
        ok=False,
    )
    assert proc.returncode != 0
    assert "127.0.0.1:9" in proc.stdout and "ModuleNotFoundError" not in proc.stdout + proc.stderr, proc.stdout


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    twin = Twin(tmp_path_factory.mktemp("lab")).up()
    twin.kubectl("apply", "-f", str(ROOT / "lab" / "fixtures" / "paperless-ai.yaml"))
    yield twin
    twin.down()


def test_the_installed_collection_rebuilds_and_upgrades_the_twin(installed, twin, tmp_path):
    # only the installed copy of homelab.inference is visible: its dependencies come from a path that links the
    # ansible package's kubernetes, community and ansible namespaces, and sys.path is not scanned (the work tree
    # is linked into the virtualenv's ansible_collections as homelab/inference)
    home, where, env = installed
    site = Path(sysconfig.get_paths()["purelib"]) / "ansible_collections"
    deps = tmp_path / "deps" / "ansible_collections"
    deps.mkdir(parents=True)
    for namespace in ("kubernetes", "community", "ansible"):
        (deps / namespace).symlink_to(site / namespace)
    env = {
        **twin.env,
        "ANSIBLE_CONFIG": env["ANSIBLE_CONFIG"],
        "ANSIBLE_HOME": env["ANSIBLE_HOME"],
        "ANSIBLE_COLLECTIONS_PATH": f"{where.parents[2]}:{deps.parent}",
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
    }
    inventory = str(ROOT / "inventory" / "lab")
    runs = [
        [f"{FQCN}.rebuild_inference_tier"],
        [f"{FQCN}.upgrade_model", "-e", "tier=ollama", "-e", "model=qwen2.5:3b"],
    ]
    for args in runs:
        proc = run(str(BIN / "ansible-playbook"), "-i", inventory, *args, cwd=home, env=env, timeout=900)
        assert "SUCCEEDED" in proc.stdout
    helm = [str(BIN / "helm"), "--kubeconfig", twin.kubeconfig, "-n", "ml"]
    values = json.loads(run(*helm, "get", "values", "ollama", "-o", "json").stdout)
    assert values["model"] == "qwen2.5:3b"
