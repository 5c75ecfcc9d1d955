"""litellm_route_check (and llm_validate through LiteLLM) against the REAL LiteLLM proxy (.venv-litellm).

The proxy runs as a subprocess on 127.0.0.1 with a config of the shape the chart templates: `openai/<served-name>`
for vLLM, `ollama_chat/<model>` for Ollama, an `openai/gpt-4o` last resort, `fallbacks` under `router_settings`, the
master key from the environment. The backends are the in-process fakes of gate_fakes.py; "vLLM down" stops the fake
vLLM server so connections are refused, as when the Deployment is scaled to 0.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time

import httpx
import pytest
import yaml
from ansible_collections.homelab.inference.plugins.modules import litellm_route_check, llm_validate
from gate_fakes import DOCUMENTS_DIR, ROOT, FakeBackend, Reply, good

LITELLM = ROOT / ".venv-litellm" / "bin" / "litellm"
VLLM_SERVED = "Qwen/Qwen3-8B-AWQ"
OLLAMA_MODEL = "phi4-mini"

pytestmark = pytest.mark.skipif(
    not LITELLM.exists(), reason=f"the real LiteLLM proxy is not installed at {LITELLM} (see FIELD-NOTES.md)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def litellm_config(vllm_url: str, ollama_url: str, openai_url: str) -> dict:
    """The proxy config, in the shape verified with LiteLLM 1.106.2."""
    return {
        "model_list": [
            {
                "model_name": "vllm-qwen",
                "litellm_params": {
                    "model": f"openai/{VLLM_SERVED}",
                    "api_base": vllm_url,
                    # openai/ needs SOME key even when vLLM runs without --api-key, else every request fails
                    # locally with "Missing credentials" and LiteLLM silently falls back.
                    "api_key": "os.environ/VLLM_API_KEY",
                    "timeout": 30,
                },
            },
            {
                "model_name": "vllm-stale",  # a route still naming the previous vLLM model: vLLM answers 404
                "litellm_params": {
                    "model": "openai/Qwen/Qwen2.5-7B-Instruct-AWQ",
                    "api_base": vllm_url,
                    "api_key": "os.environ/VLLM_API_KEY",
                    "timeout": 30,
                },
            },
            {
                "model_name": "ollama-qwen",
                "litellm_params": {"model": f"ollama_chat/{OLLAMA_MODEL}", "api_base": ollama_url, "timeout": 30},
            },
            {
                "model_name": "openai-gpt4o",
                "litellm_params": {
                    "model": "openai/gpt-4o",
                    "api_base": openai_url,
                    "api_key": "os.environ/OPENAI_API_KEY",
                },
            },
        ],
        "router_settings": {
            "fallbacks": [{"vllm-qwen": ["ollama-qwen", "openai-gpt4o"]}, {"vllm-stale": ["ollama-qwen"]}],
            "num_retries": 0,
        },
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }


class Lab:
    """The proxy URL and key, the fake backends and their ports (``down``/``up`` stop and restart a backend)."""

    def __init__(self, servers, backends: dict, ports: dict, url: str, master_key: str):
        self.servers = servers
        self.vllm, self.ollama, self.openai = backends["vllm"], backends["ollama"], backends["openai"]
        self.ports = ports
        self.url = url
        self.master_key = master_key

    def down(self, name: str) -> None:
        self.servers.stop(self.ports[name])

    def up(self, name: str) -> None:
        self.servers.start_again(self.ports[name])

    def vllm_down(self) -> None:
        self.down("vllm")

    def vllm_up(self) -> None:
        self.up("vllm")


@pytest.fixture(scope="module")
def lab(servers, doc_index, tmp_path_factory):
    vllm = FakeBackend("openai", {VLLM_SERVED: good()}, doc_index)
    ollama = FakeBackend("ollama", {OLLAMA_MODEL: good()}, doc_index)
    openai_key = "sk-upstream-" + secrets.token_hex(8)
    openai = FakeBackend("openai", {"gpt-4o": good()}, doc_index, api_key=openai_key)
    vllm_port = servers.serve(vllm.app)
    ollama_port = servers.serve(ollama.app)
    openai_port = servers.serve(openai.app)
    vllm.url = f"http://127.0.0.1:{vllm_port}/v1"
    ollama.url = f"http://127.0.0.1:{ollama_port}"
    openai.url = f"http://127.0.0.1:{openai_port}/v1"

    workdir = tmp_path_factory.mktemp("litellm")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(litellm_config(vllm.url, ollama.url, openai.url), sort_keys=False))
    master_key = "sk-master-" + secrets.token_hex(12)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "LITELLM", "VLLM"))}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_MASTER_KEY=master_key,
        OPENAI_API_KEY=openai_key,
        VLLM_API_KEY="none",
        NO_PROXY="127.0.0.1,localhost",
    )
    log = (workdir / "litellm.log").open("wb")
    proc = subprocess.Popen(
        [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"litellm exited with {proc.returncode}: {(workdir / 'litellm.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health/readiness", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            pytest.fail(f"litellm not ready in 90 s: {(workdir / 'litellm.log').read_text()[-3000:]}")
        time.sleep(0.3)
    backends = {"vllm": vllm, "ollama": ollama, "openai": openai}
    ports = {"vllm": vllm_port, "ollama": ollama_port, "openai": openai_port}
    yield Lab(servers, backends, ports, url, master_key)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log.close()
    for backend_port in (ollama_port, openai_port, vllm_port):
        servers.stop(backend_port)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def vllm_running(lab):
    for name in lab.ports:
        lab.up(name)
    yield lab
    for name in lab.ports:
        lab.up(name)


def check(lab, **extra):
    args = {"api_url": lab.url, "api_key": lab.master_key, "alias": "vllm-qwen", "timeout": 30}
    args.update(extra)
    return args


def test_primary_serves(module_runner, vllm_running):
    lab = vllm_running
    result = module_runner(
        litellm_route_check,
        check(lab, expect_model_group="vllm-qwen", expect_api_base=lab.vllm.url + "/"),
        check_mode=True,  # read-only: it runs in check mode too
    )
    assert not result.failed, result["msg"]
    assert result["changed"] is False and result["status"] == 200
    assert result["model_group"] == "vllm-qwen"
    assert result["attempted_fallbacks"] == 0 and result["fallback"] is False
    assert result["api_base"] == lab.vllm.url
    assert result["model_name"] == f"openai/{VLLM_SERVED}"
    assert result["model"] == "vllm-qwen"  # LiteLLM rewrites the body's model to the alias when the primary served
    assert result["attempts"] == 1 and 0 < result["latency"] < 30
    assert set(result["headers"]) >= {"x-litellm-model-group", "x-litellm-attempted-fallbacks"}
    assert all(name.startswith("x-litellm-") for name in result["headers"])
    assert lab.master_key not in json.dumps(result)
    # the request reached vLLM with the served name, short
    body = lab.vllm.rec.requests[-1]
    assert body["model"] == VLLM_SERVED and body["max_tokens"] == 16


def test_primary_down_reports_the_fallback_group(module_runner, vllm_running):
    lab = vllm_running
    lab.vllm_down()
    result = module_runner(litellm_route_check, check(lab, expect_model_group="ollama-qwen"))
    assert not result.failed, result["msg"]
    assert result["model_group"] == "ollama-qwen"
    assert result["fallback"] is True and result["attempted_fallbacks"] >= 1
    assert result["api_base"] == lab.ollama.url
    assert result["model_name"] == f"ollama_chat/{OLLAMA_MODEL}"
    assert result["model"] == f"ollama_chat/{OLLAMA_MODEL}"
    assert lab.ollama.rec.requests[-1]["model"] == OLLAMA_MODEL
    assert lab.master_key not in json.dumps(result)


def test_expect_model_group_mismatch_fails_after_retries(module_runner, vllm_running):
    lab = vllm_running
    lab.vllm_down()
    result = module_runner(litellm_route_check, check(lab, expect_model_group="vllm-qwen", retries=1, delay=0.1))
    assert result.failed
    assert result["attempts"] == 2
    assert "served by model group 'ollama-qwen'" in result["msg"]
    assert "expected 'vllm-qwen'" in result["msg"]
    assert result["model_group"] == "ollama-qwen" and result["fallback"] is True
    assert lab.master_key not in json.dumps(result)


def test_route_settles_back_to_the_primary(module_runner, vllm_running):
    lab = vllm_running
    lab.vllm_down()
    timer = threading.Timer(1.0, lab.vllm_up)  # vLLM comes back while the module is retrying
    timer.start()
    try:
        result = module_runner(litellm_route_check, check(lab, expect_model_group="vllm-qwen", retries=30, delay=0.25))
    finally:
        timer.join()
    assert not result.failed, result["msg"]
    assert result["attempts"] > 1 and result["model_group"] == "vllm-qwen" and result["attempted_fallbacks"] == 0


def test_all_groups_down_is_an_error_with_status(module_runner, vllm_running):
    lab = vllm_running
    # Connection failures, not 404s: a 404 (or 401/408/429) from a backend puts its deployment into LiteLLM's
    # cooldown (5 s by default, even for a group with one deployment), which would leak into the next tests.
    for name in lab.ports:
        lab.down(name)
    result = module_runner(litellm_route_check, check(lab))
    assert result.failed
    assert result["status"] is not None and result["status"] >= 400
    assert "request for 'vllm-qwen' failed" in result["msg"]
    assert lab.master_key not in json.dumps(result)


def test_a_stale_vllm_model_name_is_masked_by_fallback_but_caught(module_runner, vllm_running):
    lab = vllm_running
    result = module_runner(litellm_route_check, check(lab, alias="vllm-stale", expect_model_group="vllm-stale"))
    assert result.failed
    assert result["model_group"] == "ollama-qwen" and result["fallback"] is True
    # vLLM saw the stale name and answered 404; only the headers show the silent fallback
    assert lab.vllm.rec.requests[-1]["model"] == "Qwen/Qwen2.5-7B-Instruct-AWQ"


def test_wrong_key_and_unknown_alias_fail_without_leaking(module_runner, vllm_running):
    lab = vllm_running
    wrong = module_runner(litellm_route_check, check(lab, api_key="sk-not-the-master-key"))
    assert wrong.failed and wrong["status"] in (400, 401)
    assert "sk-not-the-master-key" not in json.dumps(wrong)
    unknown = module_runner(litellm_route_check, check(lab, alias="no-such-alias"))
    assert unknown.failed and unknown["status"] == 400 and "Invalid model name" in unknown["msg"]
    assert lab.master_key not in json.dumps(unknown)


def test_bad_options_fail_before_any_request(module_runner, lab):
    before = len(lab.vllm.rec.requests)
    result = module_runner(litellm_route_check, check(lab, retries=-1, delay=-2))
    assert result.failed
    assert "retries must be 0 or more" in result["msg"] and "delay must be 0 or more seconds" in result["msg"]
    assert len(lab.vllm.rec.requests) == before


def test_gate_through_litellm_counts_model_groups(module_runner, vllm_running):
    lab = vllm_running
    result = module_runner(
        llm_validate,
        {
            "api": "openai",
            "api_url": lab.url + "/v1",
            "api_key": lab.master_key,
            "model": "vllm-qwen",
            "documents_dir": str(DOCUMENTS_DIR),
            "sample_size": 6,
            # as the role's check through LiteLLM: its sample only; it catches a route that clearly breaks the model
            "max_documents": 6,
            "on_inconclusive": "pass",
            "concurrency": 2,
            "request_timeout": 30,
            "max_p95_latency": 20,
        },
    )
    assert not result.failed, result["msg"]
    assert result["metrics"]["model_groups"] == {"vllm-qwen": 6}
    assert result["metrics"]["valid_json_rate"] == 1.0
    assert lab.master_key not in json.dumps(result)
    # json mode and thinking-off reach vLLM through the proxy
    sent = [b for b in lab.vllm.rec.requests if b.get("response_format")]
    assert sent and all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in sent[-6:])


def test_thinking_through_litellm_is_still_detected(module_runner, vllm_running):
    lab = vllm_running
    lab.vllm.models[VLLM_SERVED] = lambda doc, body: Reply(
        "<think>\nclassifying\n</think>\n" + (json.dumps({"x": 1}) if doc else "OK")
    )
    try:
        result = module_runner(
            llm_validate,
            {
                "api": "openai",
                "api_url": lab.url,  # without /v1: LiteLLM also serves /chat/completions
                "api_key": lab.master_key,
                "model": "vllm-qwen",
                "documents_dir": str(DOCUMENTS_DIR),
                "sample_size": 3,
                "request_timeout": 30,
                "max_p95_latency": 20,
            },
        )
    finally:
        lab.vllm.models[VLLM_SERVED] = good()
    assert result.failed
    assert "thinking output in 3/3 answers" in result["failures"]
    assert "valid_json 0.00 (95 % CI 0.00 to 0.56, n=3) lies below the minimum 0.95" in result["failures"]


def test_a_key_echoed_by_the_server_is_masked(module_runner):
    """api_key is no_log: a server that echoes it in an error (some proxies do) does not leak it into the result."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    key = "sk-echoed-" + secrets.token_hex(8)

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps({"error": {"message": f"invalid key {self.headers['authorization']}"}}).encode()
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = module_runner(
            litellm_route_check,
            {"api_url": f"http://127.0.0.1:{server.server_port}", "api_key": key, "alias": "x", "timeout": 5},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.failed and result["status"] == 401
    assert "invalid key" in result["msg"] and "********" in result["msg"], result["msg"]
    assert key not in json.dumps(result)
