"""Build the twin's Kubernetes control plane from the published Go modules, once, into a cache.

``python3 -m lab.controlplane.build`` builds ``kubelab`` (``lab/controlplane/kubelab``: kube-apiserver,
kube-controller-manager, kube-scheduler and kubectl of ``k8s.io/kubernetes`` and etcd of
``go.etcd.io/etcd/server/v3``, in one multi-call binary) unless the cache already has it, and prints the
directory that holds the binary and its command symlinks. Standard library only: the Makefile runs it before
any virtualenv exists.

The cache key is the Kubernetes version plus a hash of ``go.mod``, ``go.sum``, ``main.go`` and the Go version,
so a change to any of them builds anew next to the old build. Builds go to a temporary directory and are
renamed into place, under a file lock: two builds at once wait for each other, a killed build leaves nothing
behind that looks finished.

Environment:
    LAB_CACHE_DIR   where builds are kept (default ``$XDG_CACHE_HOME/homelab-inference`` or
                    ``~/.cache/homelab-inference``)
    LAB_CONTROLPLANE_BIN  use this directory of prebuilt binaries instead (nothing is built)
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "kubelab"
COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd")
# measured on this project's 2-core machine, empty Go module and build caches (README "The twin")
COLD_BUILD_HINT = "about 12 minutes on 2 cores when nothing is cached"


def kubernetes_version() -> str:
    """The ``k8s.io/kubernetes`` version that ``kubelab/go.mod`` requires, e.g. ``v1.32.9``."""
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", (SOURCE / "go.mod").read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"{SOURCE / 'go.mod'} does not require k8s.io/kubernetes")
    return match.group(1)


def etcd_version() -> str:
    match = re.search(r"^\s*go\.etcd\.io/etcd/server/v3 (v\S+)", (SOURCE / "go.mod").read_text(), re.MULTILINE)
    return match.group(1) if match else "unknown"


def go_binary(purpose: str = "it builds the twin's control plane") -> str:
    """The ``go`` command on PATH; ``RuntimeError`` naming ``purpose`` when there is none."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(f"the Go toolchain (go 1.23 or newer) is not on PATH: {purpose}")
    return go


def source_digest(source: Path, names: tuple[str, ...]) -> str:
    """12 hex digits of SHA-256 over the named files of ``source`` and the Go version: a build's cache key."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (source / name).read_bytes() + b"\0")
    go_version = subprocess.run([go_binary(), "env", "GOVERSION"], capture_output=True, text=True, check=True)
    digest.update(go_version.stdout.strip().encode())
    return digest.hexdigest()[:12]


def build_once(final: Path, done, build) -> None:
    """Build into the cache directory ``final`` unless ``done()``: under a file lock in ``final``'s parent (two
    builds at once wait for each other), into a temporary directory that ``build(staging)`` fills and that is
    renamed to ``final`` only when it succeeded (a killed build leaves nothing that looks finished)."""
    if done():
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done():
            return
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
        try:
            build(staging)
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def cache_root() -> Path:
    if os.environ.get("LAB_CACHE_DIR"):
        return Path(os.environ["LAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "homelab-inference"


def build_key() -> str:
    return f"{kubernetes_version()}-{source_digest(SOURCE, ('go.mod', 'go.sum', 'main.go'))}"


def bin_dir() -> Path:
    """Directory with ``kubelab`` and a symlink per command; it may not be built yet (see :func:`ensure_built`)."""
    if os.environ.get("LAB_CONTROLPLANE_BIN"):
        return Path(os.environ["LAB_CONTROLPLANE_BIN"])
    return cache_root() / "controlplane" / build_key() / "bin"


def is_built(directory: Path | None = None) -> bool:
    directory = directory or bin_dir()
    return all((directory / name).exists() for name in ("kubelab", *COMMANDS))


def _ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def _build(target: Path, log=sys.stderr) -> None:
    version = kubernetes_version()
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-buildvcs=false -mod=readonly")
    cmd = [go_binary(), "build", "-v", "-trimpath", "-ldflags", _ldflags(version), "-o", str(target / "kubelab"), "."]
    print(
        f"controlplane: building Kubernetes {version} (kube-apiserver, kube-controller-manager, kube-scheduler, "
        f"kubectl) and etcd {etcd_version()} from Go modules into {target.parent.parent} ({COLD_BUILD_HINT}; "
        "later runs reuse it)",
        file=log,
        flush=True,
    )
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=SOURCE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    done = threading.Event()

    def progress() -> None:
        while not done.wait(30):
            print(
                f"controlplane: {time.monotonic() - started:4.0f} s, {len(lines)} packages compiled",
                file=log,
                flush=True,
            )

    ticker = threading.Thread(target=progress, daemon=True)
    ticker.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
    rc = proc.wait()
    done.set()
    if rc != 0:
        tail = "\n".join(lines[-40:])
        raise RuntimeError(f"go build of the control plane failed (exit {rc}):\n{tail}")
    for name in COMMANDS:
        (target / name).symlink_to("kubelab")
    print(f"controlplane: built in {time.monotonic() - started:.0f} s", file=log, flush=True)


def ensure_built(log=sys.stderr) -> Path:
    """Build the control plane unless the cache has this version; return :func:`bin_dir`.

    Raises ``RuntimeError`` when Go is missing or the build fails (the message has the build's last lines).
    """
    directory = bin_dir()
    if os.environ.get("LAB_CONTROLPLANE_BIN"):
        return directory

    def build(staging: Path) -> None:
        (staging / "bin").mkdir()
        _build(staging / "bin", log=log)

    build_once(directory.parent, lambda: is_built(directory), build)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m lab.controlplane.build", description=__doc__.splitlines()[0])
    parser.add_argument("--print-dir", action="store_true", help="print the bin directory without building")
    args = parser.parse_args(argv)
    if args.print_dir:
        print(bin_dir())
        return 0
    try:
        print(ensure_built())
    except RuntimeError as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
