"""Checks every chart must pass: helm lint --strict, kubernetes-validate --strict, schema, labels, names, docs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from charts_helpers import (
    CHART_NAMES,
    CHARTS,
    ROOT,
    find,
    kubernetes_validate,
    load_values,
    one,
)

PART_OF = {"app.kubernetes.io/part-of": "home-lab"}
# Deployment, Service and ConfigMap names consumers and the twin depend on (design.md, FIELD-NOTES.md).
ESTABLISHED = {
    "ollama": {"Deployment": "ollama", "Service": "ollama"},
    "vllm": {"Deployment": "vllm-server", "Service": "vllm-api"},
    "litellm": {"Deployment": "litellm", "Service": "litellm", "ConfigMap": "litellm-config"},
}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)

charts = pytest.mark.parametrize("chart", CHART_NAMES)


@charts
def test_helm_lint_strict_with_defaults_and_realistic_values(helm, chart):
    for files in ((), (f"{chart}.yaml",)):
        res = helm.lint(chart, files)
        assert res.returncode == 0, res.output
        assert "0 chart(s) failed" in res.output


@charts
@pytest.mark.parametrize("files", [(), ("{chart}.yaml",)], ids=["defaults", "realistic"])
def test_rendered_manifests_pass_kubernetes_validate_strict(helm, tmp_path, chart, files):
    res = helm.template_text(chart, [f.format(chart=chart) for f in files])
    assert res.returncode == 0, res.output
    objs = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert {"Deployment", "Service", "ServiceAccount"} <= {o["kind"] for o in objs}
    check = kubernetes_validate(res.stdout, tmp_path)
    assert check.returncode == 0, check.output
    # kubernetes-validate reports one "passed" line per object: make sure every object was checked.
    assert check.output.count("passed for resource") == len(objs), check.output


@charts
def test_schema_rejects_misspelt_top_level_key(helm, chart):
    good = load_values(chart)
    bad = dict(good)
    bad["nodeSelecter"] = bad.pop("nodeSelector", {"kubernetes.io/hostname": "k3s-worker-02"})
    res = helm.lint(chart, values=bad)
    assert res.returncode != 0
    assert "nodeSelecter" in res.output and "not allowed" in res.output
    res = helm.template_text(chart, values=bad)
    assert res.returncode != 0 and "nodeSelecter" in res.output


@charts
@pytest.mark.parametrize(
    "typo",
    [
        {"image": {"tagg": "1.0"}},
        {"service": {"prot": 1234}},
        {"serviceAccount": {"automountToken": True}},
        {"readinessProbe": {"enabled": True, "periodSecond": 5}},
        {"resources": {"limit": {"memory": "1Gi"}}},
    ],
    ids=["image", "service", "serviceAccount", "probe", "resources"],
)
def test_schema_rejects_misspelt_nested_key(helm, chart, typo):
    res = helm.template_text(chart, values=typo)
    assert res.returncode != 0
    (section,) = typo
    key = list(typo[section])[-1]
    assert key in res.output and "not allowed" in res.output, res.output


@charts
def test_schema_rejects_wrong_types(helm, chart):
    res = helm.template_text(chart, values={"replicaCount": "one"})
    assert res.returncode != 0 and "replicaCount" in res.output
    res = helm.template_text(chart, values={"extraEnv": [{"name": "X", "value": 5}]})
    assert res.returncode != 0 and "extraEnv" in res.output


@charts
def test_schema_is_draft07_closed_and_accepts_every_values_file(chart):
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    for name, prop in schema["properties"].items():
        if "properties" in prop:
            assert prop.get("additionalProperties") is False, f"{name} is an object we define: close it"
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    assert not list(validator.iter_errors(defaults))
    assert not list(validator.iter_errors(load_values(chart)))
    # A full values file: the defaults with every realistic value on top, as the playbooks render it.
    full = {**defaults, **load_values(chart)}
    assert not list(validator.iter_errors(full))
    # Every key the defaults set is declared (the schema documents the whole values surface).
    assert set(defaults) <= set(schema["properties"])


@charts
def test_common_labels_on_every_object_and_pod_template(helm, chart):
    objs = helm.template(chart, [f"{chart}.yaml"])
    assert objs
    for obj in objs:
        labels = obj["metadata"].get("labels", {})
        assert labels.items() >= PART_OF.items(), f"{obj['kind']}/{obj['metadata']['name']} lacks part-of"
        for key in STANDARD_LABELS:
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == chart
        assert labels["helm.sh/chart"] == f"{chart}-0.1.0"
    deployment = one(objs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels.items() >= PART_OF.items()
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert one(objs, "Service")["spec"]["selector"] == selector
    # Without commonLabels nothing adds part-of: the label really comes from the value.
    plain = helm.template(chart)
    assert all("app.kubernetes.io/part-of" not in o["metadata"].get("labels", {}) for o in plain)


@charts
def test_selector_labels_are_stable_and_cannot_be_overridden(helm, chart):
    base = one(helm.template(chart, [f"{chart}.yaml"]), "Deployment")["spec"]["selector"]["matchLabels"]
    assert base == {"app.kubernetes.io/name": chart, "app.kubernetes.io/instance": chart}
    changed = {
        "image": {"tag": "upgraded-1"},
        "commonLabels": {"app.kubernetes.io/name": "hijack", "team": "ml"},
        "podLabels": {"app.kubernetes.io/instance": "hijack", "extra": "yes"},
    }
    deployment = one(helm.template(chart, [f"{chart}.yaml"], values=changed), "Deployment")
    assert deployment["spec"]["selector"]["matchLabels"] == base
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/name"] == chart and pod_labels["app.kubernetes.io/instance"] == chart
    assert pod_labels["team"] == "ml" and pod_labels["extra"] == "yes"
    assert pod_labels["app.kubernetes.io/version"] == "upgraded-1"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == chart


@charts
def test_established_names_do_not_depend_on_the_release_name(helm, chart):
    objs = helm.template(chart, release="some-release")
    for kind, name in ESTABLISHED[chart].items():
        one(objs, kind, name)
    # fullnameOverride "" falls back to the usual <release>-<chart> naming.
    objs = helm.template(chart, release="blue", values={"fullnameOverride": ""})
    assert one(objs, "Deployment")["metadata"]["name"] == f"blue-{chart}"
    objs = helm.template(chart, release="green", values={"fullnameOverride": "green-router"})
    deployment = one(objs, "Deployment")
    assert deployment["metadata"]["name"] == "green-router"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "green-router"
    one(objs, "ServiceAccount", "green-router")


@charts
def test_image_defaults_to_app_version(helm, chart):
    meta = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["version"] == "0.1.0" and meta["name"] == chart
    defaults = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    ctr = one(helm.template(chart), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert ctr["image"] == f"{defaults['image']['repository']}:{meta['appVersion']}"
    ctr = one(helm.template(chart, values={"image": {"tag": "x1", "pullPolicy": "Always"}}), "Deployment")
    ctr = ctr["spec"]["template"]["spec"]["containers"][0]
    assert ctr["image"].endswith(":x1") and ctr["imagePullPolicy"] == "Always"


@charts
def test_scheduling_and_pod_settings_come_from_values(helm, chart):
    values = {
        "nodeSelector": {"kubernetes.io/hostname": "k3s-worker-01"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "runtimeClassName": "kata",
        "priorityClassName": "inference-critical",
        "podAnnotations": {"example.org/owner": "ml"},
        "podLabels": {"tier": "inference"},
        "podSecurityContext": {"fsGroup": 1000},
        "securityContext": {"readOnlyRootFilesystem": True},
        "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
        "extraEnv": [{"name": "EXAMPLE_SETTING", "value": "on"}],
        "imagePullSecrets": [{"name": "registry-cred"}],
        "serviceAccount": {"create": False, "name": "shared-sa"},
        "terminationGracePeriodSeconds": 77,
    }
    objs = helm.template(chart, values=values)
    assert not find(objs, "ServiceAccount")
    pod = one(objs, "Deployment")["spec"]["template"]
    spec = pod["spec"]
    # Helm merges maps into the defaults (vLLM keeps its GPU label unless it is set to null).
    assert spec["nodeSelector"].items() >= values["nodeSelector"].items()
    assert values["tolerations"][0] in spec["tolerations"]
    assert spec["runtimeClassName"] == "kata"
    assert spec["priorityClassName"] == "inference-critical"
    assert spec["securityContext"]["fsGroup"] == 1000
    assert spec["serviceAccountName"] == "shared-sa"
    assert spec["imagePullSecrets"] == [{"name": "registry-cred"}]
    assert spec["terminationGracePeriodSeconds"] == 77
    assert spec["automountServiceAccountToken"] is False
    assert pod["metadata"]["annotations"]["example.org/owner"] == "ml"
    assert pod["metadata"]["labels"]["tier"] == "inference"
    ctr = spec["containers"][0]
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["resources"]["requests"] == {"cpu": "250m", "memory": "1Gi"}
    assert ctr["resources"]["limits"]["memory"] == "3Gi"
    assert {"name": "EXAMPLE_SETTING", "value": "on"} in ctr["env"]


@charts
def test_probes_can_be_disabled_and_tuned(helm, chart):
    ctr = one(helm.template(chart), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "livenessProbe" in ctr and "readinessProbe" in ctr
    values = {
        "livenessProbe": {"enabled": False},
        "readinessProbe": {"enabled": True, "periodSeconds": 42, "failureThreshold": 7},
    }
    ctr = one(helm.template(chart, values=values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "livenessProbe" not in ctr
    assert ctr["readinessProbe"]["periodSeconds"] == 42 and ctr["readinessProbe"]["failureThreshold"] == 7


KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w./-]*):")


def undocumented_values(text: str) -> list[str]:
    """Keys of a values.yaml that lack a helm-docs `# --` comment.

    A top-level key is documented when a `# --` comment block sits right above it, or when it is a map whose
    direct children are each documented that way.
    """
    lines = text.splitlines()

    def documented(i: int) -> bool:
        j = i - 1
        while j >= 0 and lines[j].lstrip().startswith("#"):
            if lines[j].lstrip().startswith("# --"):
                return True
            j -= 1
        return False

    missing = []
    for i, line in enumerate(lines):
        m = KEY_LINE.match(line)
        if not m or m["indent"] or documented(i):
            continue
        children = []
        for k in range(i + 1, len(lines)):
            child = KEY_LINE.match(lines[k])
            if lines[k].strip() and not lines[k].startswith(" ") and not lines[k].startswith("#"):
                break
            if child and len(child["indent"]) == 2:
                children.append(k)
        if not children:
            missing.append(m["key"])
        missing += [f"{m['key']}.{KEY_LINE.match(lines[k])['key']}" for k in children if not documented(k)]
    return missing


@charts
def test_every_value_is_documented_inline(chart):
    assert undocumented_values((CHARTS / chart / "values.yaml").read_text()) == []


def test_documentation_check_finds_an_undocumented_value():
    text = "# -- documented\na: 1\nb: 2\nimage:\n  # -- yes\n  repository: x\n  tag: y\n"
    assert undocumented_values(text) == ["b", "image.tag"]


@charts
def test_notes_render_with_the_service_address(helm, chart):
    notes = helm.notes(chart, [f"{chart}.yaml"])
    service = ESTABLISHED[chart]["Service"]
    assert f"{service}.ml.svc.cluster.local" in notes
    assert "{{" not in notes


# --- no `helm --set` anywhere in the automation -------------------------------------------------------------

SET_FLAG = re.compile(r"(?<![\w-])--set(-string|-file|-json|-literal)?(?=[\s=]|$)")
SET_VALUES_PARAM = re.compile(r"^\s*-?\s*set_values\s*:")
SCANNED = ("roles", "playbooks", "molecule", "Makefile")
SCANNED_SUFFIXES = {".yml", ".yaml", ".j2", ".sh", ".py", ".cfg", ".mk", ""}


def helm_set_usages(root: Path) -> list[str]:
    """`path:line: text` of every `--set*` flag or kubernetes.core.helm `set_values:` outside comments in the
    automation under ``root`` (roles/, playbooks/, molecule/, Makefile)."""
    found = []
    for entry in SCANNED:
        base = root / entry
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        for path in files:
            if path.suffix not in SCANNED_SUFFIXES and path.name != "Makefile":
                continue
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            for n, line in enumerate(text.splitlines(), 1):
                code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
                if SET_FLAG.search(code) or SET_VALUES_PARAM.search(code):
                    found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return found


def test_no_role_playbook_or_makefile_passes_values_with_set():
    assert helm_set_usages(ROOT) == []


def test_set_scanner_finds_set_flags_and_set_values(tmp_path):
    (tmp_path / "roles" / "deploy" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "deploy" / "tasks" / "main.yml").write_text(
        "- name: deploy\n"
        "  ansible.builtin.command: helm upgrade --install ollama charts/ollama --set image.tag=1\n"
        "# helm --set in a comment is fine\n"
        "- kubernetes.core.helm:\n"
        "    name: x\n"
        "    set_values:\n"
        "      - value: a=b\n"
        "- ansible.builtin.command: helm upgrade x y --settings-are-not-a-flag -f values.yaml\n"
    )
    (tmp_path / "Makefile").write_text("deploy:\n\thelm upgrade --install x charts/x --set-string a=b\n")
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "site.yml").write_text("- hosts: all\n  tasks: []  # never --set\n")
    found = helm_set_usages(tmp_path)
    assert [f.split(":")[0:2] for f in found] == [
        ["roles/deploy/tasks/main.yml", "2"],
        ["roles/deploy/tasks/main.yml", "6"],
        ["Makefile", "2"],
    ]
