"""The ollama_model module against the emulated Ollama running in a background thread."""

from __future__ import annotations

import json
import threading
import time

from ansible_collections.homelab.inference.plugins.module_utils.ollama_client import OllamaClient
from ansible_collections.homelab.inference.plugins.modules import ollama_model


def args(server, **extra) -> dict:
    return {"api_url": server.url, "timeout": 10, **extra}


def test_present_pulls_then_is_idempotent(ollama_factory, module_runner, catalog):
    _, server = ollama_factory()
    result = module_runner(ollama_model, args(server, name="qwen2.5:14b"))
    assert not result.failed, result
    model = catalog.ollama["qwen2.5:14b"]
    assert result["changed"] is True
    assert result["name"] == "qwen2.5:14b"
    assert result["size"] == model.size_bytes + model.config.size
    assert result["bytes_pulled"] == result["size"]
    assert result["digest"] == model.manifest_digest.removeprefix("sha256:")
    assert result["duration"] > 0
    assert result["models"] == ["qwen2.5:14b"]

    again = module_runner(ollama_model, args(server, name="qwen2.5:14b"))
    assert again["changed"] is False
    assert again["bytes_pulled"] == 0 and again["size"] == result["size"]


def test_short_name_is_the_latest_tag(ollama_factory, module_runner):
    _, server = ollama_factory()
    first = module_runner(ollama_model, args(server, name="phi4-mini:latest"))
    second = module_runner(ollama_model, args(server, name="phi4-mini"))
    assert first["changed"] is True and second["changed"] is False
    assert second["name"] == "phi4-mini:latest" and second["models"] == ["phi4-mini:latest"]


def test_check_mode_changes_nothing_and_shows_diff(ollama_factory, module_runner):
    _, server = ollama_factory()
    OllamaClient(server.url).pull("llama3.2:1b")
    result = module_runner(ollama_model, args(server, name="qwen2.5:14b"), check_mode=True, diff=True)
    assert result["changed"] is True
    assert result["bytes_pulled"] == 0
    assert result["models"] == ["llama3.2:1b", "qwen2.5:14b"]
    assert result["diff"]["before"] == "llama3.2:1b\n"
    assert result["diff"]["after"] == "llama3.2:1b\nqwen2.5:14b\n"
    assert [m["name"] for m in OllamaClient(server.url).tags()] == ["llama3.2:1b"]  # nothing pulled

    removal = module_runner(ollama_model, args(server, name="llama3.2:1b", state="absent"), check_mode=True, diff=True)
    assert removal["changed"] is True and removal["diff"]["after"] == ""
    assert [m["name"] for m in OllamaClient(server.url).tags()] == ["llama3.2:1b"]  # nothing removed


def test_absent(ollama_factory, module_runner):
    _, server = ollama_factory()
    client = OllamaClient(server.url)
    client.pull("qwen2.5:3b")
    client.pull("phi4-mini")
    result = module_runner(ollama_model, args(server, name="qwen2.5:3b", state="absent"), diff=True)
    assert result["changed"] is True
    assert result["models"] == ["phi4-mini:latest"]
    assert result["diff"]["before"] == "phi4-mini:latest\nqwen2.5:3b\n"
    assert [m["name"] for m in client.tags()] == ["phi4-mini:latest"]
    again = module_runner(ollama_model, args(server, name="qwen2.5:3b", state="absent"))
    assert again["changed"] is False


def test_unknown_tag_fails_with_ollama_error(ollama_factory, module_runner, tmp_path):
    _, server = ollama_factory()
    progress = tmp_path / "progress.json"
    result = module_runner(ollama_model, args(server, name="phi4-mini:3.8b", progress_file=str(progress)))
    assert result.failed
    assert "phi4-mini:3.8b" in result["msg"]
    assert "pull model manifest: file does not exist" in result["msg"]
    assert result["error"] == "pull model manifest: file does not exist"
    written = json.loads(progress.read_text())
    assert written["done"] is True and written["status"] == "error"
    assert written["error"] == "pull model manifest: file does not exist"


def test_unreachable_server_fails(module_runner):
    result = module_runner(ollama_model, {"api_url": "http://127.0.0.1:9", "name": "phi4-mini", "timeout": 2})
    assert result.failed and "cannot list the models" in result["msg"]


def test_progress_file_is_updated_while_pulling(ollama_factory, module_runner, tmp_path):
    _, server = ollama_factory(scale=0.02)  # 2.5 GB: 50 real-lab seconds -> 1 s
    progress = tmp_path / "watch" / "progress.json"
    seen: list[dict] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                seen.append(json.loads(progress.read_text()))
            except (OSError, ValueError):
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = module_runner(ollama_model, args(server, name="phi4-mini", progress_file=str(progress)))
    finally:
        stop.set()
        watcher.join()
    assert result["changed"] is True
    running = {round(s["percent"], 1) for s in seen if not s["done"] and 0 < s["percent"] < 100}
    assert len(running) >= 2, seen[-3:]  # the watcher saw the pull move
    final = json.loads(progress.read_text())
    assert final["done"] is True and final["status"] == "success" and final["percent"] == 100.0
    assert final["completed"] == final["total"] == result["size"]

    # Nothing to pull: the file still ends as done, so a watcher loop terminates.
    progress.unlink()
    module_runner(ollama_model, args(server, name="phi4-mini", progress_file=str(progress)))
    assert json.loads(progress.read_text())["done"] is True


def test_an_async_pull_stops_when_the_run_that_started_it_is_gone(ollama_factory, tmp_path):
    # A pull run with `async` outlives a killed or Ctrl-C'd ansible-playbook unless it watches it: with
    # stop_with_pid the module ends as soon as that process is gone, and Ollama cancels the pull.
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    _, server = ollama_factory(scale=0.05)  # qwen2.5:14b takes about 9 s to pull here
    controller = subprocess.Popen(["sleep", "60"])
    progress = tmp_path / "progress.json"
    module_args = tmp_path / "args.json"
    module_args.write_text(
        json.dumps(
            {
                "ANSIBLE_MODULE_ARGS": args(
                    server, name="qwen2.5:14b", progress_file=str(progress), stop_with_pid=controller.pid
                )
            }
        )
    )
    runner = (
        "import sys, runpy, ansible.module_utils as m; "
        f"m.__path__.append({str(root / 'plugins' / 'module_utils')!r}); "
        f"runpy.run_path({str(root / 'plugins' / 'modules' / 'ollama_model.py')!r}, run_name='__main__')"
    )
    pull = subprocess.Popen([sys.executable, "-c", runner, str(module_args)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = json.loads(progress.read_text()) if progress.exists() else {}
            if state.get("percent", 0) > 5:
                break
            time.sleep(0.1)
        assert 5 < state["percent"] < 90, state
        controller.kill()
        controller.wait()
        assert pull.wait(timeout=5) == 3
        assert json.loads(progress.read_text())["status"] == "stopped"
        time.sleep(1)
        assert OllamaClient(server.url).tags() == [], "the pull was cancelled, not finished behind the run's back"
    finally:
        controller.kill()
        pull.kill()
