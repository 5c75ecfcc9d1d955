"""Helpers for the chart tests: run the virtualenv's helm and kubernetes-validate, load rendered objects."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
VALUES = Path(__file__).resolve().parent / "values"
BIN = ROOT / ".venv" / "bin"
HELM = BIN / "helm"
KUBERNETES_VALIDATE = BIN / "kubernetes-validate"
CHART_NAMES = ("ollama", "vllm", "litellm")
# Kubernetes version the manifests are validated against (k3s in the home lab is 1.32).
KUBE_VERSION = "1.32.0"


@dataclass
class HelmResult:
    """Outcome of one helm (or kubernetes-validate) run."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _env(tmp_root: Path) -> dict[str, str]:
    # Keep helm away from the user's config/cache and from any cluster.
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp_root / var.lower())
    env["KUBECONFIG"] = str(tmp_root / "no-kubeconfig")
    return env


class Helm:
    """Runs `.venv/bin/helm` on the charts; values only ever come from files (`-f`), never `--set`."""

    def __init__(self, tmp_root: Path):
        self.tmp_root = tmp_root
        self.env = _env(tmp_root)
        self._n = 0

    def values_file(self, values: dict) -> Path:
        """Write ``values`` to a fresh YAML file and return its path."""
        self._n += 1
        path = self.tmp_root / f"values-{self._n}.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return path

    def _value_args(self, values_files, values) -> list[str]:
        args: list[str] = []
        for f in values_files or ():
            args += ["-f", str(VALUES / f if isinstance(f, str) else f)]
        if values is not None:
            args += ["-f", str(self.values_file(values))]
        return args

    def run(self, *args: str, stdin: str | None = None) -> HelmResult:
        proc = subprocess.run(
            [str(HELM), *args], input=stdin, capture_output=True, text=True, env=self.env, timeout=60, check=False
        )
        return HelmResult(proc.returncode, proc.stdout, proc.stderr)

    def template_text(
        self,
        chart: str | Path,
        values_files: tuple | list = (),
        values: dict | None = None,
        release: str | None = None,
        namespace: str = "ml",
    ) -> HelmResult:
        chart_path = CHARTS / chart if isinstance(chart, str) else chart
        release = release or (chart if isinstance(chart, str) else chart_path.name)
        return self.run("template", release, str(chart_path), "-n", namespace, *self._value_args(values_files, values))

    def template(self, chart, values_files=(), values=None, release=None, namespace="ml") -> list[dict]:
        """Render ``chart`` and return the objects; fails the test when helm fails."""
        res = self.template_text(chart, values_files, values, release, namespace)
        assert res.returncode == 0, res.output
        return [doc for doc in yaml.safe_load_all(res.stdout) if doc]

    def lint(self, chart: str, values_files=(), values=None) -> HelmResult:
        return self.run("lint", "--strict", str(CHARTS / chart), *self._value_args(values_files, values))

    def notes(self, chart: str, values_files=(), values=None, release: str | None = None) -> str:
        """Render the chart's NOTES.txt offline (helm only renders NOTES on install, which needs a cluster).

        Copies the chart, wraps NOTES.txt in a named template and a ConfigMap, and returns the rendered text.
        """
        copy = self.tmp_root / f"notes-{chart}-{self._n}"
        self._n += 1
        shutil.copytree(CHARTS / chart, copy)
        notes = (copy / "templates" / "NOTES.txt").read_text()
        (copy / "templates" / "NOTES.txt").unlink()
        (copy / "templates" / "zz-notes-under-test.yaml").write_text(
            '{{- define "notes.under.test" }}' + notes + "{{- end }}\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\n"
            'data:\n  notes: {{ include "notes.under.test" . | toJson }}\n'
        )
        objs = self.template(copy, values_files, values, release or chart)
        (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "notes-under-test"]
        return cm["data"]["notes"]


def kubernetes_validate(manifests: str, tmp_root: Path) -> HelmResult:
    """Validate multi-document YAML with `kubernetes-validate --strict` for KUBE_VERSION (reads stdin)."""
    proc = subprocess.run(
        [str(KUBERNETES_VALIDATE), "--strict", "-k", KUBE_VERSION, "-"],
        input=manifests,
        capture_output=True,
        text=True,
        env=_env(tmp_root),
        timeout=120,
        check=False,
    )
    return HelmResult(proc.returncode, proc.stdout, proc.stderr)


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    """Objects of ``kind`` (and ``name``) among rendered objects."""
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    """The single object of ``kind`` (and ``name``); fails when there is not exactly one."""
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(deployment: dict, index: int = 0) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][index]


def env_map(ctr: dict) -> dict[str, dict]:
    """Container env as name -> EnvVar; fails on duplicate names."""
    names = [e["name"] for e in ctr.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {e["name"]: e for e in ctr.get("env", [])}


def load_values(name: str) -> dict:
    """A realistic values file from tests/charts/values/."""
    return yaml.safe_load((VALUES / f"{name}.yaml").read_text())


# Nodes of the home lab (FIELD-NOTES.md, lab/topology.yaml) with the labels and taints the scheduler sees.
LAB_NODES = [
    {"name": "k3s-master", "labels": {"node-role.kubernetes.io/control-plane": "true"}, "taints": []},
    {"name": "k3s-worker-01", "labels": {}, "taints": []},
    {"name": "k3s-worker-02", "labels": {}, "taints": []},
    {
        "name": "k3s-gpu-worker",
        "labels": {"nvidia.com/gpu": "true"},
        "taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}],
    },
]
for _node in LAB_NODES:
    _node["labels"] = {"kubernetes.io/hostname": _node["name"], "kubernetes.io/os": "linux", **_node["labels"]}


def _expr_matches(expr: dict, labels: dict[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values", [])
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":  # Kubernetes: also true when the label is absent
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise AssertionError(f"operator {op} not handled by this test scheduler")


def _tolerates(tolerations: list[dict], taint: dict) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint["effect"]:
            continue
        if tol.get("operator") == "Exists" and (not tol.get("key") or tol["key"] == taint["key"]):
            return True
        if (
            tol.get("key") == taint["key"]
            and tol.get("operator", "Equal") == "Equal"
            and tol.get("value") == taint.get("value")
        ):
            return True
    return False


def schedulable_nodes(pod_spec: dict, nodes: list[dict] = LAB_NODES) -> list[str]:
    """Names of the nodes whose labels and taints admit ``pod_spec`` (nodeSelector, required node affinity,
    NoSchedule/NoExecute taints), the way kube-scheduler filters them."""
    result = []
    terms = (
        pod_spec.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms")
    )
    for node in nodes:
        labels = node["labels"]
        if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
            continue
        if terms and not any(all(_expr_matches(e, labels) for e in t.get("matchExpressions", [])) for t in terms):
            continue
        hard = [t for t in node["taints"] if t["effect"] in ("NoSchedule", "NoExecute")]
        if not all(_tolerates(pod_spec.get("tolerations") or [], t) for t in hard):
            continue
        result.append(node["name"])
    return result
