"""The client probe counts what a client sees: failed requests, the longest gap, answers by a fallback; and it
stops on its stop file or when its owner process is gone."""

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.llm_probe import (
    ClientProbe,
    ProbeEvent,
    pid_alive,
    summarize,
)
from ansible_collections.homelab.inference.plugins.module_utils.openai_client import OpenAIClient

from tests.twin import wait_for


def test_summary_counts_failures_and_the_longest_gap():
    t0 = 1_000_000.0
    events = [
        ProbeEvent("a", t0 + 0, 0.1, True, model_group="a"),
        ProbeEvent("a", t0 + 1, 0.1, False, error="HTTP 500"),
        ProbeEvent("a", t0 + 2, 0.1, False, error="refused"),
        ProbeEvent("a", t0 + 3, 0.5, True, model_group="a"),  # the gap: from 1.0 to 3.5
        ProbeEvent("a", t0 + 4, 0.1, False, error="HTTP 500"),
        ProbeEvent("a", t0 + 5, 0.2, True, model_group="b", fallback=True),  # 4.0 to 5.2
        ProbeEvent("b", t0 + 0, 0.3, True, model_group="b"),
    ]
    got = summarize(events, ["a", "b", "c"], t0, t0 + 6, 1.0, "stop file")
    a = got["aliases"]["a"]
    assert (a["requests"], a["failed"], a["fallbacks"]) == (6, 3, 1)
    assert a["longest_gap_s"] == pytest.approx(2.5)
    assert a["slowest_s"] == pytest.approx(0.5)
    assert a["errors"][0]["message"] == "HTTP 500" and a["errors"][0]["count"] == 2
    assert a["model_groups"] == {"a": 2, "b": 1}
    assert got["aliases"]["b"] == {
        "requests": 1,
        "failed": 0,
        "fallbacks": 0,
        "longest_gap_s": 0.0,
        "slowest_s": 0.3,
        "errors": [],
        "model_groups": {"b": 1},
        "paused_s": 0.0,
    }
    assert got["aliases"]["c"]["requests"] == 0
    assert (got["failed"], got["longest_gap_s"], got["stopped_by"]) == (3, 2.5, "stop file")
    assert got["summary"].startswith("3 of 7 requests failed in 6 s; a: 3 of 6 failed, longest gap 2.5 s")


def test_a_gap_still_open_at_the_end_lasts_until_the_end():
    t0 = 50.0
    events = [ProbeEvent("a", t0, 0.1, True), ProbeEvent("a", t0 + 2, 0.1, False, error="x")]
    assert summarize(events, ["a"], t0, t0 + 10, 1.0)["aliases"]["a"]["longest_gap_s"] == 8.0


class _Proxy(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint: alias ``up`` answers; ``flaky`` fails while ``server.down`` is set;
    ``rescued`` answers as its fallback would."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        alias = body["model"]
        if alias == "flaky" and self.server.down.is_set():
            self._send(500, {"error": {"message": "all deployments failed"}}, {})
            return
        headers = {"x-litellm-model-group": alias, "x-litellm-attempted-fallbacks": "0"}
        if alias == "rescued":
            headers = {"x-litellm-model-group": "up", "x-litellm-attempted-fallbacks": "1"}
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": "OK"}}]}, headers)

    def _send(self, status, data, headers):
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    server.bodies, server.down = [], threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_probe_sees_an_outage_and_its_end(proxy, tmp_path):
    base = f"http://127.0.0.1:{proxy.server_address[1]}/v1"
    stop = tmp_path / "stop"
    events = tmp_path / "probe.jsonl"
    probe = ClientProbe(
        lambda: OpenAIClient(base, api_key="k", timeout=5),
        ["up", "flaky", "rescued"],
        interval=0.05,
        timeout=5,
        max_tokens=4,
        should_stop=lambda: "stop file" if stop.exists() else None,
        events_file=str(events),
    )
    runner = threading.Thread(target=lambda: setattr(probe, "result", probe.run()))
    runner.start()
    # the outage lasts until the probe saw 5 failures and ends when it saw an answer again: waits on what the probe
    # recorded, not on sleeps, so a busy machine only makes the test slower
    wait_for(lambda: sum(e.ok for e in probe.events if e.alias == "flaky") >= 2, timeout=30, interval=0.02)
    proxy.down.set()
    failed = wait_for(lambda: [e for e in probe.events if e.alias == "flaky" and not e.ok][4:], 30, 0.02, "failures")
    proxy.down.clear()
    answered = wait_for(
        lambda: [e for e in probe.events if e.alias == "flaky" and e.ok and e.start > failed[-1].start], 30, 0.02
    )
    wait_for(lambda: sum(e.ok for e in probe.events if e.alias == "up") >= 10, timeout=30, interval=0.02)
    stop.touch()
    runner.join(timeout=10)
    assert not runner.is_alive()
    got = probe.result
    assert got["stopped_by"] == "stop file"
    assert got["aliases"]["up"]["failed"] == 0 and got["aliases"]["up"]["requests"] >= 10
    flaky = got["aliases"]["flaky"]
    assert flaky["failed"] >= 5
    # the gap: from the start of the first failed request to the end of the first answer after the failures
    first_failed = min(e.start for e in probe.events if e.alias == "flaky" and not e.ok)
    gap = answered[0].start + answered[0].duration - first_failed
    assert flaky["longest_gap_s"] == pytest.approx(gap, abs=0.05) and gap > failed[-1].start - first_failed
    assert "all deployments failed" in flaky["errors"][0]["message"]
    rescued = got["aliases"]["rescued"]
    assert rescued["failed"] == 0 and rescued["fallbacks"] == rescued["requests"] > 0
    assert rescued["model_groups"] == {"up": rescued["requests"]}
    # what a client sends: the alias, a short prompt, a small max_tokens, nothing else of ours
    assert {tuple(sorted(b)) for b in proxy.bodies} == {("max_tokens", "messages", "model", "stream")}
    assert len(events.read_text().splitlines()) == sum(a["requests"] for a in got["aliases"].values())


def test_a_paused_alias_is_not_requested_and_the_pause_is_reported(proxy, tmp_path):
    base = f"http://127.0.0.1:{proxy.server_address[1]}/v1"
    pause, seen_paused = threading.Event(), threading.Event()

    def paused(alias):
        if alias == "flaky" and pause.is_set():
            seen_paused.set()  # the alias's thread is waiting now: it sends nothing until the pause ends
            return True
        return False

    probe = ClientProbe(
        lambda: OpenAIClient(base, timeout=5),
        ["up", "flaky"],
        interval=0.05,
        timeout=5,
        max_tokens=4,
        should_stop=lambda: "done" if getattr(probe, "finish", False) else None,
        paused=paused,
    )
    runner = threading.Thread(target=lambda: setattr(probe, "result", probe.run()))
    runner.start()
    wait_for(lambda: sum(e.ok for e in probe.events if e.alias == "flaky") >= 2, timeout=30, interval=0.02)
    paused_at = time.monotonic()
    pause.set()
    # a request already sent may finish; then nothing more may reach "flaky" (a gate would be measuring now)
    wait_for(seen_paused.is_set, 30, 0.02, "the probe to see the pause")
    wait_for(
        lambda: sum(1 for b in proxy.bodies if b["model"] == "flaky") == sum(e.alias == "flaky" for e in probe.events),
        30,
        0.02,
        "the request in flight",
    )
    sent = sum(1 for b in proxy.bodies if b["model"] == "flaky")
    proxy.down.set()
    up_before = sum(1 for e in probe.events if e.alias == "up")
    wait_for(lambda: sum(1 for e in probe.events if e.alias == "up") >= up_before + 5, 30, 0.02, "up requests")
    assert sum(1 for b in proxy.bodies if b["model"] == "flaky") == sent
    pause.clear()
    paused_for = time.monotonic() - paused_at
    proxy.down.clear()
    wait_for(lambda: sum(1 for b in proxy.bodies if b["model"] == "flaky") > sent, 30, 0.02, "flaky resumed")
    probe.finish = True
    runner.join(timeout=10)
    got = probe.result["aliases"]
    # the probe counts the pause from when its thread saw it to when it saw the end: within the time the test
    # held it, and more than nothing
    assert got["flaky"]["failed"] == 0 and 0 < got["flaky"]["paused_s"] <= paused_for + 0.1
    assert got["up"]["paused_s"] == 0.0
    assert "flaky: 0 of" in probe.result["summary"] and "paused" in probe.result["summary"]


def test_a_refused_connection_is_a_failure(tmp_path):
    probe = ClientProbe(
        lambda: OpenAIClient("http://127.0.0.1:9/v1", timeout=2),
        ["x"],
        interval=0.05,
        timeout=2,
        max_tokens=4,
        should_stop=lambda: "enough" if len(probe.events) >= 3 else None,
    )
    got = probe.run()
    assert got["aliases"]["x"]["failed"] == got["aliases"]["x"]["requests"] >= 3
    assert got["stopped_by"] == "enough"


def test_pid_alive_tells_a_finished_process():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    assert pid_alive(threading.get_native_id())
