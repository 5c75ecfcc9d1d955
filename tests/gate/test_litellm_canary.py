"""litellm_canary against the REAL LiteLLM proxy (.venv-litellm) serving one alias from two weighted deployments.

The proxy's config is the canary's shape as roles/litellm renders it: two `ollama_chat/` entries under the alias
`ollama-qwen`, each with a `weight` and a `model_info.id` (`.champion`, `.challenger`), and the `prometheus`
callback on. The Ollama backend is the in-process fake of gate_fakes.py; its model "new" fails a configurable share
of the requests (HTTP 500, as a broken model does), while a thread sends live traffic through the proxy, as
Paperless-AI would.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time

import httpx
import pytest
import yaml
from ansible_collections.homelab.inference.plugins.modules import litellm_canary
from gate_fakes import FakeBackend, Reply, good
from test_litellm_route_check import LITELLM, _free_port

pytestmark = pytest.mark.skipif(
    not LITELLM.exists(), reason=f"the real LiteLLM proxy is not installed at {LITELLM} (see FIELD-NOTES.md)"
)

ALIAS = "ollama-qwen"


class Flaky:
    """Model behaviour failing exactly ``share`` of its requests (every request that crosses a whole failure)."""

    def __init__(self):
        self.share = 0.0
        self.count = 0

    def __call__(self, doc, body):
        self.count += 1
        if int(self.count * self.share) > int((self.count - 1) * self.share):
            return Reply("", status=500, error="llama runner process has terminated: signal: killed")
        return good()(doc, body)


class Traffic:
    """Live requests through the proxy for the alias from ``workers`` threads until :meth:`stop`; counts which
    deployment served each (``x-litellm-model-id``) and the failures."""

    def __init__(self, url: str, key: str, workers: int = 3):
        self.url, self.key, self.workers = url, key, workers
        self.served: dict[str, int] = {}
        self.failed = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(workers)]

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30) as client:
            while not self.stopping.is_set():
                body = {"model": ALIAS, "messages": [{"role": "user", "content": "Reply with OK."}], "max_tokens": 4}
                try:
                    response = client.post("/v1/chat/completions", json=body)
                    ok, served = response.status_code == 200, response.headers.get("x-litellm-model-id")
                except httpx.HTTPError:
                    ok, served = False, None
                with self.lock:
                    if ok:
                        self.served[served] = self.served.get(served, 0) + 1
                    else:
                        self.failed += 1

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)


@pytest.fixture(scope="module")
def proxy(servers, doc_index, tmp_path_factory):
    flaky = Flaky()
    ollama = FakeBackend("ollama", {"old": good(), "new": flaky}, doc_index)
    ollama_url = f"http://127.0.0.1:{servers.serve(ollama.app)}"
    entries = [
        {
            "model_name": ALIAS,
            "litellm_params": {"model": f"ollama_chat/{model}", "api_base": ollama_url, "timeout": 30, "weight": w},
            "model_info": {"id": f"{ALIAS}.{role}"},
        }
        for model, w, role in (("old", 50, "champion"), ("new", 50, "challenger"))
    ]
    config = {
        "model_list": entries,
        "router_settings": {"num_retries": 0},
        "litellm_settings": {"callbacks": ["prometheus"]},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    workdir = tmp_path_factory.mktemp("litellm-canary")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    key = "sk-master-" + secrets.token_hex(12)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "LITELLM"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MASTER_KEY=key, NO_PROXY="127.0.0.1,localhost")
    log = (workdir / "litellm.log").open("wb")
    proc = subprocess.Popen(
        [str(LITELLM), "--config", "config.yaml", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
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
            pytest.fail(f"litellm not ready in 120 s: {(workdir / 'litellm.log').read_text()[-3000:]}")
        time.sleep(0.3)
    yield {"url": url, "key": key, "flaky": flaky}
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log.close()


def args(proxy, **extra):
    base = {
        "api_url": proxy["url"],
        "api_key": proxy["key"],
        "alias": ALIAS,
        "champion_id": f"{ALIAS}.champion",
        "challenger_id": f"{ALIAS}.challenger",
        "min_requests": 20,
        "max_requests": 100,
        "duration": 120,
        "poll_interval": 0.5,
    }
    base.update(extra)
    return base


def test_a_healthy_canary_passes_on_live_traffic(module_runner, proxy):
    proxy["flaky"].share = 0.0
    with Traffic(proxy["url"], proxy["key"]) as traffic:
        result = module_runner(litellm_canary, args(proxy))
    assert not result.failed, result["msg"]
    assert result["passed"] is True and result["verdict"] == "passed" and result["decided_by"] == "verdict"
    assert result["changed"] is False
    mine, theirs = result["challenger"], result["champion"]
    # a perfect challenger clears 0.90 (Wilson) and the 0.05 drop (Newcombe) only with enough requests: about 36
    # for the minimum, about 74 for the drop
    assert 70 <= mine["requests"] <= 100 and mine["failures"] == 0 and mine["successes"] == mine["requests"]
    assert theirs["requests"] > 0 and theirs["failures"] == 0
    assert mine["rate"]["low"] >= 0.90 and {c["verdict"] for c in result["checks"]} == {"passed"}
    assert {c["kind"] for c in result["checks"]} == {"absolute", "relative"}
    # both deployments served the clients (the weights split the alias)
    assert traffic.served.get(f"{ALIAS}.challenger", 0) > 0 and traffic.served.get(f"{ALIAS}.champion", 0) > 0
    assert "passed" in result["msg"] and proxy["key"] not in str(result)


def test_a_canary_whose_new_model_fails_requests_fails_naming_the_rates(module_runner, proxy):
    proxy["flaky"].share = 0.4
    with Traffic(proxy["url"], proxy["key"]) as traffic:
        result = module_runner(litellm_canary, args(proxy))
    proxy["flaky"].share = 0.0
    assert result.failed and result["passed"] is False
    assert result["verdict"] == "failed" and result["decided_by"] == "verdict"
    mine = result["challenger"]
    assert mine["requests"] >= 20 and mine["failures"] > 0 and mine["successes"] + mine["failures"] == mine["requests"]
    assert traffic.failed > 0  # the clients saw it too (no retry, no fallback in this config)
    failed = [c for c in result["checks"] if c["verdict"] == "failed"]
    assert failed and all(c["metric"] == "success_rate" for c in failed)
    # the reason names the metric, the values and the threshold
    msg = result["msg"]
    assert "success_rate" in msg and ("minimum 0.90" in msg or "allowed drop of 0.05" in msg)
    assert f"{mine['successes']}/{mine['requests']}" in result["msg"]


def test_without_live_traffic_the_canary_is_inconclusive_and_fails_closed(module_runner, proxy):
    result = module_runner(litellm_canary, args(proxy, duration=3, poll_interval=0.5))
    assert result.failed and result["verdict"] == "inconclusive" and result["decided_by"] == "duration"
    assert result["challenger"]["requests"] == 0
    assert "fewer than the 20 a verdict needs" in result["msg"] and "on_inconclusive=fail" in result["msg"]
    passed = module_runner(litellm_canary, args(proxy, duration=2, poll_interval=0.5, on_inconclusive="pass"))
    assert not passed.failed and passed["passed"] is True and passed["verdict"] == "inconclusive"


def test_metrics_that_cannot_be_read_fail_the_canary(module_runner, proxy):
    wrong = module_runner(litellm_canary, args(proxy, api_key="sk-wrong", duration=2, poll_interval=0.5))
    assert wrong.failed and wrong["decided_by"] == "metrics" and wrong["verdict"] == "failed"
    assert "metrics could not be read" in wrong["msg"] and "sk-wrong" not in str(wrong)
    gone = module_runner(litellm_canary, args(proxy, api_url=f"http://127.0.0.1:{_free_port()}", duration=1))
    assert gone.failed and gone["decided_by"] == "metrics" and "ConnectError" in gone["msg"]


def test_bad_options_are_refused_naming_the_field(module_runner, proxy):
    result = module_runner(litellm_canary, args(proxy, min_requests=50, max_requests=10, min_success_rate=1.5))
    assert result.failed
    assert "max_requests must be at least min_requests (50)" in result["msg"]
    assert "min_success_rate must be a fraction from 0 to 1" in result["msg"]
    same = module_runner(litellm_canary, args(proxy, challenger_id=f"{ALIAS}.champion"))
    assert same.failed and "must name two deployments" in same["msg"]


def test_check_mode_watches_nothing(module_runner, proxy):
    result = module_runner(litellm_canary, args(proxy), check_mode=True)
    assert not result.failed and result["skipped"] is True and result["passed"] is None
