"""``python -m lab up|down|status|reset|serve|fault``: start, stop, inspect the homelab twin and inject faults."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from lab.config import LabConfig, choose_address, load_config
from lab.controlplane.build import ensure_built
from lab.controlplane.supervisor import log_tail

EXIT_NOT_RUNNING = 3


def _state(cfg: LabConfig, timeout: float = 3.0) -> dict | None:
    """The running twin's state from its control port, or None when nothing answers."""
    try:
        with urllib.request.urlopen(cfg.url("control") + "/state", timeout=timeout) as resp:  # noqa: S310
            return json.load(resp)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def _pid(cfg: LabConfig) -> int | None:
    try:
        pid = int(cfg.pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def _kill_group(pid: int, timeout: float = 20.0) -> None:
    """Stop ``lab serve`` (SIGTERM: it stops its children) and, if it lingers, its whole process group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def cmd_up(cfg: LabConfig, args) -> int:
    if _pid(cfg) and _state(cfg):
        print(f"twin already running (pid {_pid(cfg)}) on {cfg.address}; kubeconfig: {cfg.kubeconfig}")
        return 0
    try:
        bin_dir = ensure_built()
    except RuntimeError as exc:
        print(f"cannot build the control plane: {exc}", file=sys.stderr)
        return 1
    cfg.lab_dir.mkdir(parents=True, exist_ok=True)
    try:
        address = choose_address(cfg.lab_dir, cfg.port("kubernetes"))
    except (ValueError, RuntimeError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    (cfg.lab_dir / "address").write_text(address)
    cfg = load_config(cfg.lab_dir, address=address)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    log_file = (cfg.log_dir / "lab.log").open("ab")
    env = dict(os.environ, LAB_DIR=str(cfg.lab_dir), LAB_ADDRESS=address, LAB_CONTROLPLANE_BIN=str(bin_dir))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "serve"],
        cwd=str(cfg.models_path.parent.parent),
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"twin failed to start (exit {proc.returncode}); see {cfg.log_dir / 'lab.log'}", file=sys.stderr)
            print(log_tail(cfg.log_dir / "lab.log", 15), file=sys.stderr)
            _kill_group(proc.pid)
            return 1
        if _state(cfg, timeout=5):
            endpoints = json.loads((cfg.lab_dir / "endpoints.json").read_text())
            print(f"twin up (pid {proc.pid}) on {address}")
            for name in ("kubernetes", "proxmox", "registry", "control"):
                print(f"  {name:<11} {endpoints[name]}")
            for svc, url in endpoints["services"].items():
                print(f"  {svc:<11} {url}")
            print(f"  kubeconfig  {endpoints['kubeconfig']}")
            print(f"  kubectl     {bin_dir / 'kubectl'}")
            return 0
        time.sleep(0.5)
    print(f"twin did not answer within {args.timeout:.0f} s; see {cfg.log_dir / 'lab.log'}", file=sys.stderr)
    print(log_tail(cfg.log_dir / "lab.log", 15), file=sys.stderr)
    _kill_group(proc.pid)
    return 1


def cmd_down(cfg: LabConfig, args) -> int:
    pid = _pid(cfg)
    if pid is None:
        print("twin is not running")
        return 0
    _kill_group(pid, timeout=args.timeout)
    cfg.pid_file.unlink(missing_ok=True)
    print("twin stopped")
    return 0


def _summary(state: dict) -> str:
    lines = [f"twin running on {state.get('address')}, time scale {state['time_scale']}"]
    for name, comp in state.get("controlplane", {}).items():
        line = f"  {name:<24} pid {comp.get('pid')} running={comp.get('running')} {comp.get('state', '')}"
        if comp.get("restarts"):
            last = comp.get("last_exit") or {}
            exit_text = f"signal {last['signal']}" if last.get("signal") else f"code {last.get('code')}"
            line += f" restarts={comp['restarts']} (last exit {exit_text} at {last.get('at')})"
        lines.append(line)
    px = state.get("proxmox", {})
    for ct in px.get("containers", []):
        lines.append(
            f"  lxc {ct.get('vmid')} {ct.get('hostname', ''):<14} {ct.get('status', ''):<8} "
            f"memory {ct.get('memory')} MiB"
        )
    kube = state.get("kubernetes", {})
    for node in kube.get("Node", []):
        meta, status = node.get("metadata", {}), node.get("status", {})
        ready = next((c["status"] for c in status.get("conditions", []) if c.get("type") == "Ready"), "?")
        memory = status.get("capacity", {}).get("memory")
        lines.append(f"  node {meta.get('name', ''):<15} Ready={ready} memory={memory}")
    for key, wl in state.get("workloads", {}).items():
        lines.append(
            f"  workload {key:<16} {wl.get('kind'):<8} port {wl.get('port')} ready={wl.get('ready')}"
            + (f" error={wl['error']}" if wl.get("error") else "")
        )
    return "\n".join(lines)


def cmd_status(cfg: LabConfig, args) -> int:
    state = _state(cfg)
    if state is None:
        print("twin is not running", file=sys.stderr)
        return EXIT_NOT_RUNNING
    print(json.dumps(state, indent=2, sort_keys=True) if args.json else _summary(state))
    return 0


def cmd_reset(cfg: LabConfig, args) -> int:
    cmd_down(cfg, args)
    if cfg.lab_dir.exists():
        for child in cfg.lab_dir.iterdir():
            if child.name == "logs":
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    return cmd_up(cfg, args)


def _control(cfg: LabConfig, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - the twin's own control URL
        cfg.url("control") + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def cmd_fault(cfg: LabConfig, args) -> int:
    """``fault list | inject NAME [key=value ...] | clear [NAME]``."""
    if _state(cfg) is None:
        print("twin is not running", file=sys.stderr)
        return EXIT_NOT_RUNNING
    if args.action == "list":
        _, data = _control(cfg, "GET", "/faults")
        for name, spec in sorted(data["known"].items()):
            active = data["active"].get(name)
            params = " ".join(f"{k}={v}" for k, v in spec["params"].items())
            print(f"{'*' if active else ' '} {name:<21} {spec['help']}" + (f"  [{params}]" if params else ""))
            if active:
                print(f"    active: {active}")
        return 0
    if args.action == "inject":
        if not args.name:
            print("fault inject needs a fault name; see `python -m lab fault list`", file=sys.stderr)
            return 2
        params = {}
        for item in args.params:
            key, sep, value = item.partition("=")
            if not sep:
                print(f"parameter {item!r} is not key=value", file=sys.stderr)
                return 2
            params[key] = value
        status, data = _control(cfg, "POST", f"/faults/{args.name}", params)
        if status != 200:
            print(data.get("error", data), file=sys.stderr)
            return 2
        print(f"injected {args.name} {data['params']}")
        return 0
    status, data = _control(cfg, "DELETE", f"/faults/{args.name}" if args.name else "/faults")
    print("cleared " + (", ".join(data["cleared"]) or "nothing"))
    return 0


def cmd_traffic(cfg: LabConfig, args) -> int:
    """``traffic ALIAS [--seconds N] [--workers N] [--pause S]``: live requests through the twin's LiteLLM, as
    Paperless-AI sends them; prints what the clients saw as JSON."""
    from lab.traffic import Traffic

    if _state(cfg) is None:
        print("twin is not running", file=sys.stderr)
        return EXIT_NOT_RUNNING
    endpoints = json.loads((cfg.lab_dir / "endpoints.json").read_text())
    key = (cfg.secrets_dir / "litellm-master-key").read_text().strip()
    traffic = Traffic(endpoints["services"]["ml/litellm"], key, args.alias, workers=args.workers, pause=args.pause)
    with traffic:
        time.sleep(args.seconds)
    print(json.dumps(traffic.summary(), indent=2))
    return 0


def cmd_serve(cfg: LabConfig, args) -> int:
    from lab.runtime import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # urllib3 warns at every retry of a refused connection (the API server restarting); the twin's clients say it
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    asyncio.run(serve(cfg))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab", description="The homelab twin, on a loopback address of its own."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "start the twin in the background (idempotent)"),
        ("down", "stop the twin"),
        ("status", "show the twin's state"),
        ("reset", "stop, forget all state (cluster, LXC sizes, models, secrets), start again"),
        ("serve", "run the twin in the foreground"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait (up/down/reset)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the whole state as JSON")
    fault = sub.add_parser("fault", help="inject or clear a fault (list shows them all)")
    fault.add_argument("action", choices=["list", "inject", "clear"])
    fault.add_argument("name", nargs="?", help="the fault (inject, clear; clear without a name clears all)")
    fault.add_argument("params", nargs="*", help="key=value parameters of the fault")
    traffic = sub.add_parser("traffic", help="send live requests for an alias through LiteLLM (as Paperless-AI)")
    traffic.add_argument("alias", help="the model alias, e.g. ollama-qwen")
    traffic.add_argument("--seconds", type=float, default=60.0, help="how long to send (default 60)")
    traffic.add_argument("--workers", type=int, default=2, help="requests in flight at once (default 2)")
    traffic.add_argument("--pause", type=float, default=0.0, help="seconds each worker waits between requests")
    args = parser.parse_args(argv)
    cfg = load_config()
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "reset": cmd_reset, "serve": cmd_serve}
    commands["fault"] = cmd_fault
    commands["traffic"] = cmd_traffic
    return commands[args.command](cfg, args)
