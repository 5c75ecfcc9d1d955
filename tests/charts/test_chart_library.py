"""The library chart charts/common: the shared named templates, the Service and the ServiceAccount of every chart,
and the copy of it that each chart carries in charts/<chart>/charts/common/ (Helm's place for a dependency)."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml
from charts_helpers import CHART_NAMES, CHARTS, one

from lab.charts import copy_problems, write_copies

LIBRARY = CHARTS / "common"
SHARED = (
    "name",
    "fullname",
    "chart",
    "labels",
    "selectorLabels",
    "podLabels",
    "serviceAccountName",
    "serviceName",
    "imageTag",
    "httpProbe",
    "lifecycle",
    "service",
    "serviceAccount",
)
COMPONENT = {"ollama": "inference", "vllm": "inference", "litellm": "router"}
DEFINE = re.compile(r'define "([^"]+)"')

charts = pytest.mark.parametrize("chart", CHART_NAMES)


def defines(directory) -> set[str]:
    return {name for path in directory.glob("templates/*") for name in DEFINE.findall(path.read_text())}


def test_the_library_defines_the_shared_templates_and_renders_nothing(helm):
    meta = yaml.safe_load((LIBRARY / "Chart.yaml").read_text())
    assert meta["type"] == "library" and meta["name"] == "common"
    assert {f"common.{name}" for name in SHARED} <= defines(LIBRARY)
    assert all(path.name.startswith("_") for path in (LIBRARY / "templates").iterdir())
    res = helm.run("lint", "--strict", str(LIBRARY))
    assert res.returncode == 0 and "0 chart(s) failed" in res.output, res.output
    res = helm.run("template", "common", str(LIBRARY))
    assert res.returncode != 0 and "library charts are not installable" in res.output


@charts
def test_each_chart_depends_on_the_library_and_defines_none_of_its_templates(helm, chart):
    meta = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())
    library = yaml.safe_load((LIBRARY / "Chart.yaml").read_text())
    assert meta["dependencies"] == [{"name": "common", "version": library["version"], "repository": "file://../common"}]
    own = defines(CHARTS / chart)
    assert not own & {f"{chart}.{name}" for name in SHARED}, "a shared helper is defined again in the chart"
    assert not {name for name in own if name.startswith("common.")}, "the chart overrides a library template"
    # Helm finds the dependency in charts/common/, unpacked: no `helm dependency build`, no network
    listed = helm.run("dependency", "list", str(CHARTS / chart))
    assert listed.returncode == 0, listed.output
    assert re.search(r"^common\s+0\.1\.0\s+file://\.\./common\s+unpacked\s*$", listed.stdout, re.M), listed.stdout


@charts
def test_service_and_serviceaccount_come_from_the_library(helm, tmp_path, chart):
    for kind in ("service", "serviceaccount"):
        text = (CHARTS / chart / "templates" / f"{kind}.yaml").read_text()
        template = {"service": "common.service", "serviceaccount": "common.serviceAccount"}[kind]
        assert text.strip() == f'{{{{- include "{template}" . }}}}'
    # Mark the library's Service and ServiceAccount in a copy of the chart: the rendered objects carry the mark
    copy = tmp_path / chart
    shutil.copytree(CHARTS / chart, copy)
    for name, kind in (("_service.tpl", "Service"), ("_serviceaccount.tpl", "ServiceAccount")):
        tpl = copy / "charts" / "common" / "templates" / name
        text, head = tpl.read_text(), f"kind: {kind}\nmetadata:\n"
        assert head in text
        tpl.write_text(text.replace(head, f"{head}  finalizers: [library.test/{kind}]\n"))
    objs = helm.template(copy, [f"{chart}.yaml"], release=chart)
    assert one(objs, "Service")["metadata"]["finalizers"] == ["library.test/Service"]
    assert one(objs, "ServiceAccount")["metadata"]["finalizers"] == ["library.test/ServiceAccount"]
    assert "finalizers" not in one(objs, "Deployment")["metadata"]
    # Without its copy of the library the chart does not render
    shutil.rmtree(copy / "charts")
    res = helm.template_text(copy, [f"{chart}.yaml"], release=chart)
    assert res.returncode != 0 and "missing in charts/ directory: common" in res.output


@charts
def test_component_label_comes_from_the_chart_annotation(helm, chart):
    meta = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())
    assert meta["annotations"]["homelab.inference/component"] == COMPONENT[chart]
    for obj in helm.template(chart, [f"{chart}.yaml"]):
        assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == COMPONENT[chart], obj["kind"]


@charts
def test_library_values_key_is_the_only_one_helm_adds(helm, chart):
    # Helm adds `common` (with `global`) to the values for the dependency; the closed schema allows only that
    res = helm.template_text(chart, values={"common": {"global": {}}})
    assert res.returncode == 0, res.output
    res = helm.template_text(chart, values={"common": {"nameOverride": "x"}})
    assert res.returncode != 0 and "nameOverride" in res.output


def test_each_chart_carries_an_up_to_date_copy_of_the_library():
    assert copy_problems() == []


def test_copy_check_finds_drift_and_the_copy_repairs_it(tmp_path):
    root = tmp_path / "charts"
    shutil.copytree(CHARTS, root, symlinks=True)
    assert copy_problems(root) == []
    app = root / "ollama" / "charts"
    (app / "common" / "templates" / "_names.tpl").write_text("edited\n")
    (app / "common" / "templates" / "_extra.tpl").write_text("{{/* x */}}\n")
    (app / "common-0.1.0.tgz").write_bytes(b"helm dependency build")
    (root / "vllm" / "charts" / "common" / "values.yaml").unlink()
    shutil.rmtree(root / "litellm" / "charts" / "common")
    (root / "litellm" / "charts" / "common").symlink_to("../../common")
    problems = copy_problems(root)
    assert problems == [
        "charts/litellm/charts/common: missing or not a directory (a copy of charts/common/)",
        "charts/ollama/charts/common-0.1.0.tgz: not a dependency copied from charts/",
        "charts/ollama/charts/common/templates/_extra.tpl: not in charts/common/",
        "charts/ollama/charts/common/templates/_names.tpl: differs from charts/common/templates/_names.tpl",
        "charts/vllm/charts/common/values.yaml: missing",
    ]
    (app / "common-0.1.0.tgz").unlink()
    assert [p.relative_to(root).as_posix() for p in write_copies(root)] == [
        f"{chart}/charts/common" for chart in sorted(CHART_NAMES)
    ]
    assert copy_problems(root) == []
    assert not (root / "litellm" / "charts" / "common").is_symlink()


@charts
def test_readme_is_generated_from_the_values(chart):
    readme = (CHARTS / chart / "README.md").read_text()
    assert "Generated by [helm-docs]" in readme and "make chart-docs" in readme
    assert "| file://../common | common | 0.1.0 |" in readme
    values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    for key in values:
        assert re.search(rf"^\| {re.escape(key)}(\.| )", readme, re.M), f"{key} is not in the README's values table"
