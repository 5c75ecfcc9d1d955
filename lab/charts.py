"""The charts' copies of the library chart, and their READMEs generated with helm-docs.

``python -m lab.charts deps`` writes, for each chart of ``charts/`` that depends on a chart of the same directory
(``repository: file://../<name>`` in its ``Chart.yaml``), the copy ``charts/<chart>/charts/<name>/`` that Helm
loads: the playbooks install a chart from its directory, with no chart repository and no network, so the dependency
has to be inside the chart (``charts/common/README.md`` says why a committed copy rather than a symlink or
``helm dependency update``).

``python -m lab.charts docs`` generates ``charts/<chart>/README.md`` with helm-docs from ``Chart.yaml``, the
``# --`` comments of ``values.yaml`` and the templates ``charts/_readme.gotmpl`` and
``charts/<chart>/README.md.gotmpl``. helm-docs is built once from the Go module proxy, at the version that
``lab/helmdocs/go.mod`` pins (with ``go.sum``), into the cache of the control plane's build
(``lab/controlplane/build.py``: cache key, lock, temporary directory renamed into place).

``python -m lab.charts check`` (``make lint``) fails when a copy differs from its library chart or a README is not
what helm-docs generates now (it generates them again into a temporary copy of ``charts/`` and compares).

``python -m lab.charts helm-docs`` builds helm-docs unless it is cached and prints its path.

Environment:
    LAB_CACHE_DIR   where builds are kept (default ``$XDG_CACHE_HOME/homelab-inference`` or
                    ``~/.cache/homelab-inference``)
    LAB_HELM_DOCS   use this helm-docs binary instead (nothing is built)
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lab.controlplane.build import build_once, cache_root, go_binary, source_digest

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT / "charts"
SOURCE = Path(__file__).resolve().parent / "helmdocs"
MODULE = "github.com/norwoodj/helm-docs"
# measured on this project's 2-core machine with empty Go module and build caches (README "The twin")
COLD_BUILD_HINT = "about 1 minute on 2 cores when nothing is cached"
# the layout every README shares (its named templates), then the chart's own README.md.gotmpl
TEMPLATE_FILES = ("./_readme.gotmpl", "README.md.gotmpl")


# --- the library chart's copies --------------------------------------------------------------------------------


def charts(root: Path = CHARTS) -> list[Path]:
    """The chart directories directly under ``root`` (those with a Chart.yaml), by name."""
    return sorted(p.parent for p in root.glob("*/Chart.yaml"))


def local_dependencies(chart: Path) -> dict[str, Path]:
    """``{name: directory}`` of the chart's ``file://`` dependencies (a path relative to the chart)."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text()) or {}
    deps = {}
    for dep in meta.get("dependencies") or []:
        repository = str(dep.get("repository") or "")
        if repository.startswith("file://"):
            deps[dep["name"]] = (chart / repository.removeprefix("file://")).resolve()
    return deps


def _tree(directory: Path) -> dict[str, Path]:
    """Relative path -> path of every file and symlink under ``directory`` (symlinks are not followed)."""
    found = {}
    for base, dirs, files in os.walk(directory):
        for name in files + [d for d in dirs if (Path(base) / d).is_symlink()]:
            path = Path(base) / name
            found[str(path.relative_to(directory))] = path
    return found


def _copy_differences(source: Path, target: Path, where: str) -> list[str]:
    """What differs between the library chart ``source`` and its copy ``target`` (shown as ``where``)."""
    if target.is_symlink() or not target.is_dir():
        return [f"{where}: missing or not a directory (a copy of charts/{source.name}/)"]
    want, have = _tree(source), _tree(target)
    problems = [f"{where}/{rel}: missing" for rel in sorted(want.keys() - have.keys())]
    problems += [f"{where}/{rel}: not in charts/{source.name}/" for rel in sorted(have.keys() - want.keys())]
    for rel in sorted(want.keys() & have.keys()):
        if have[rel].is_symlink():
            problems.append(f"{where}/{rel}: a symlink, not a copy")
        elif have[rel].read_bytes() != want[rel].read_bytes():
            problems.append(f"{where}/{rel}: differs from charts/{source.name}/{rel}")
    return problems


def copy_problems(root: Path = CHARTS) -> list[str]:
    """What differs between each chart's ``charts/<name>/`` and the library chart it copies; empty when none."""
    problems = []
    for chart in charts(root):
        deps = local_dependencies(chart)
        sub = chart / "charts"
        for entry in sorted(sub.iterdir()) if sub.is_dir() else []:
            if entry.name not in deps:
                problems.append(f"{entry.relative_to(root.parent)}: not a dependency copied from charts/")
        for name, source in sorted(deps.items()):
            problems += _copy_differences(source, sub / name, str((sub / name).relative_to(root.parent)))
    return problems


def write_copies(root: Path = CHARTS) -> list[Path]:
    """Replace each chart's ``charts/<name>/`` by a fresh copy of its library chart; returns the copies written."""
    written = []
    for chart in charts(root):
        for name, source in sorted(local_dependencies(chart).items()):
            target = chart / "charts" / name
            staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=chart))
            try:
                shutil.copytree(source, staging / name, symlinks=False)
                if target.is_symlink() or target.is_file():
                    target.unlink()
                elif target.exists():
                    shutil.rmtree(target)
                target.parent.mkdir(exist_ok=True)
                (staging / name).rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            written.append(target)
    return written


# --- helm-docs ---------------------------------------------------------------------------------------------------


def helm_docs_version() -> str:
    """The helm-docs version that ``lab/helmdocs/go.mod`` requires, e.g. ``v1.14.2``."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(MODULE)} (v\S+)", (SOURCE / "go.mod").read_text(), re.M)
    if not match:
        raise RuntimeError(f"{SOURCE / 'go.mod'} does not require {MODULE}")
    return match.group(1)


def _go() -> str:
    return go_binary("it builds helm-docs for the charts' READMEs")


def build_key() -> str:
    return f"{helm_docs_version()}-{source_digest(SOURCE, ('go.mod', 'go.sum', 'tools.go'))}"


def helm_docs_path() -> Path:
    """Where helm-docs is (or will be) built; ``LAB_HELM_DOCS`` when set."""
    if os.environ.get("LAB_HELM_DOCS"):
        return Path(os.environ["LAB_HELM_DOCS"])
    return cache_root() / "helm-docs" / build_key() / "bin" / "helm-docs"


def _build(target: Path, log=sys.stderr) -> None:
    version = helm_docs_version()
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-buildvcs=false -mod=readonly")
    ldflags = f"-s -w -X main.version={version.lstrip('v')}"
    cmd = [_go(), "build", "-trimpath", "-ldflags", ldflags, "-o", str(target), f"{MODULE}/cmd/helm-docs"]
    print(
        f"chart-docs: building helm-docs {version} from Go modules into {target.parent.parent.parent} "
        f"({COLD_BUILD_HINT}; later runs reuse it)",
        file=log,
        flush=True,
    )
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=SOURCE, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"go build of helm-docs failed (exit {proc.returncode}):\n{tail}")
    print(f"chart-docs: built helm-docs in {time.monotonic() - started:.0f} s", file=log, flush=True)


def ensure_helm_docs(log=sys.stderr) -> Path:
    """Build helm-docs unless the cache has this build; return its path. ``RuntimeError`` when Go is missing or
    the build fails. Builds go to a temporary directory renamed into place, under a lock."""
    path = helm_docs_path()
    if os.environ.get("LAB_HELM_DOCS"):
        return path

    def build(staging: Path) -> None:
        (staging / "bin").mkdir()
        _build(staging / "bin" / path.name, log=log)

    build_once(path.parent.parent, path.exists, build)
    return path


def generate_docs(root: Path = CHARTS, helm_docs: Path | None = None) -> list[Path]:
    """Write ``README.md`` of each chart directly under ``root`` with helm-docs; returns the READMEs."""
    helm_docs = helm_docs or ensure_helm_docs()
    names = [c.name for c in charts(root)]
    # helm-docs matches --chart-to-generate against the search root joined with each chart's directory
    only = ",".join(str(root / name) for name in names)
    cmd = [str(helm_docs), "--chart-search-root", str(root), "--chart-to-generate", only]
    for template in TEMPLATE_FILES:
        cmd += ["--template-files", template]
    proc = subprocess.run([*cmd, "--log-level", "warning"], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or proc.stderr.strip():
        raise RuntimeError(f"helm-docs failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return [root / name / "README.md" for name in names]


def stale_docs(root: Path = CHARTS, helm_docs: Path | None = None) -> list[str]:
    """A unified diff per README that differs from what helm-docs generates now (in a temporary copy)."""
    with tempfile.TemporaryDirectory(prefix="chart-docs-") as tmp:
        copy = Path(tmp) / "charts"
        shutil.copytree(root, copy, symlinks=True)
        diffs = []
        for generated in generate_docs(copy, helm_docs):
            committed = root / generated.relative_to(copy)
            have = committed.read_text().splitlines(keepends=True) if committed.exists() else []
            want = generated.read_text().splitlines(keepends=True)
            if have != want:
                where = str(committed.relative_to(root.parent))
                diffs.append("".join(difflib.unified_diff(have, want, where, f"{where} (generated)")))
        return diffs


# --- command line ------------------------------------------------------------------------------------------------


def check() -> int:
    """``make lint``: 1 (and what is wrong, on stderr) when a copy or a README is out of date, else 0."""
    problems = copy_problems()
    for problem in problems:
        print(f"chart-deps: {problem}", file=sys.stderr)
    if problems:
        print("chart-deps: run `make chart-deps` (the copies come from charts/<library>/)", file=sys.stderr)
    diffs = stale_docs()
    for diff in diffs:
        print(diff, file=sys.stderr)
    if diffs:
        print("chart-docs: README.md is stale: run `make chart-docs` and commit the result", file=sys.stderr)
    if problems or diffs:
        return 1
    print(f"charts: {len(charts())} charts, their library copies and READMEs are up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.charts", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("deps", "docs", "check", "helm-docs"))
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return check()
        if args.command == "deps":
            for target in write_copies():
                print(f"chart-deps: wrote {target.relative_to(ROOT)}")
        elif args.command == "docs":
            for readme in generate_docs():
                print(f"chart-docs: wrote {readme.relative_to(ROOT)}")
        else:
            print(ensure_helm_docs())
    except RuntimeError as exc:
        print(f"charts: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
