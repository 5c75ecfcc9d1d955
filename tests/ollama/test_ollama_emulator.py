"""The emulated Ollama over real HTTP, driven by httpx and the project's OllamaClient."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from ansible_collections.homelab.inference.plugins.module_utils.model_names import normalize_name
from ansible_collections.homelab.inference.plugins.module_utils.ollama_client import OllamaClient, OllamaError

from lab.ollama import OllamaEmulator
from lab.ollama.server import parse_go_duration, parse_keep_alive
from tests.ollama.conftest import sample_documents

INVOICE = "ACME Corp\nINVOICE No 123\nAmount due: 100 EUR\nDue date 2024-05-01\nPlease pay within 14 days."
SYSTEM = "You classify documents. Answer only with JSON: title, correspondent, document_type, tags."


def classify(name: str, text: str = INVOICE) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def pull_lines(url: str, name: str) -> tuple[int, list[dict]]:
    with httpx.stream("POST", f"{url}/api/pull", json={"model": name}, timeout=30) as response:
        return response.status_code, [json.loads(line) for line in response.iter_lines() if line.strip()]


def test_basic_endpoints(ollama_factory):
    _, server = ollama_factory()
    assert httpx.get(server.url + "/").text == "Ollama is running"
    client = OllamaClient(server.url)
    assert client.version()
    assert client.tags() == []
    assert client.ps() == []


def test_pull_streams_progress_like_ollama(ollama_factory, catalog):
    _, server = ollama_factory()
    status, lines = pull_lines(server.url, "qwen2.5:14b")
    assert status == 200
    statuses = [line.get("status") for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model = catalog.ollama["qwen2.5:14b"]
    blob = model.model_layer
    progress = [line for line in lines if line.get("digest") == blob.digest]
    assert progress[0]["status"] == f"pulling {blob.digest[7:19]}"
    assert all(line["total"] == blob.size for line in progress)
    completed = [line.get("completed", 0) for line in progress]
    assert completed == sorted(completed) and completed[-1] == blob.size
    assert len(progress) > 5  # a 9 GB blob streams many progress lines
    layer_digests = {line["digest"] for line in lines if "digest" in line}
    assert layer_digests == {layer.digest for layer in (*model.layers, model.config)}

    entry = OllamaClient(server.url).has_model("qwen2.5:14b")
    assert entry["digest"] == model.manifest_digest.removeprefix("sha256:")
    assert entry["size"] == model.size_bytes + model.config.size
    assert entry["details"]["parameter_size"] == "14.8B"


def test_download_speed_follows_time_scale(ollama_factory):
    # 2.5 GB at 50 MB/s = 50 real-lab seconds; at time_scale 0.005 that is about 0.25 s.
    _, server = ollama_factory(scale=0.005)
    started = time.monotonic()
    result = OllamaClient(server.url).pull("phi4-mini")
    elapsed = time.monotonic() - started
    assert 0.2 < elapsed < 2.0
    assert result["bytes_pulled"] == result["total"] > 2_500_000_000


def test_unknown_tag_errors_mid_stream(ollama_factory):
    _, server = ollama_factory()
    status, lines = pull_lines(server.url, "phi4-mini:3.8b")
    assert status == 200  # the error comes after HTTP 200, as with the real server
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1] == {"error": "pull model manifest: file does not exist"}
    with pytest.raises(OllamaError, match="pull model manifest: file does not exist") as info:
        OllamaClient(server.url).pull("phi4-mini:3.8b")
    assert info.value.model == "phi4-mini:3.8b"
    assert OllamaClient(server.url).tags() == []


def test_unknown_tag_without_stream_is_500(ollama_factory):
    _, server = ollama_factory()
    response = httpx.post(server.url + "/api/pull", json={"model": "nope:1b", "stream": False})
    assert response.status_code == 500
    assert response.json() == {"error": "pull model manifest: file does not exist"}
    ok = httpx.post(server.url + "/api/pull", json={"model": "llama3.2:1b", "stream": False}, timeout=30)
    assert ok.json() == {"status": "success"}


def test_short_name_means_latest(ollama_factory):
    _, server = ollama_factory()
    client = OllamaClient(server.url)
    client.pull("phi4-mini")
    assert [m["name"] for m in client.tags()] == ["phi4-mini:latest"]
    assert normalize_name("phi4-mini") == "phi4-mini:latest"
    assert client.has_model("phi4-mini")["name"] == "phi4-mini:latest"
    assert client.chat("phi4-mini", classify("phi4-mini"))["done"] is True


def test_cancelled_pull_resumes(ollama_factory, catalog, tmp_path):
    emulator, server = ollama_factory(scale=0.02)  # 9 GB: 180 real s -> 3.6 s wall
    blob = catalog.ollama["qwen2.5:14b"].model_layer
    seen = 0
    with httpx.stream("POST", f"{server.url}/api/pull", json={"model": "qwen2.5:14b"}, timeout=30) as response:
        for raw in response.iter_lines():
            line = json.loads(raw)
            if line.get("digest") == blob.digest and line.get("completed"):
                seen = line["completed"]
                if seen > blob.size // 10:
                    break
    # The server notices the closed connection at its next write and keeps what it has.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not emulator.snapshot()["partial_blobs"]:
        time.sleep(0.05)
    time.sleep(0.2)
    partial = emulator.snapshot()["partial_blobs"][blob.digest]["completed"]
    assert seen <= partial < blob.size
    assert "qwen2.5:14b" not in emulator.snapshot()["models"]

    # A restarted server on the same volume resumes from the kept bytes.
    emulator2, server2 = ollama_factory(scale=0.001, store=emulator.store.path.parent)
    first: list[dict] = []
    result = OllamaClient(server2.url).pull(
        "qwen2.5:14b", on_progress=lambda p: first.append(p) if p.get("digest") == blob.digest else None
    )
    assert first[0]["completed"] >= partial
    assert result["bytes_pulled"] <= result["total"] - partial
    assert result["completed"] == result["total"]
    assert "qwen2.5:14b" in emulator2.snapshot()["models"]


def test_models_persist_in_store_dir(ollama_factory, tmp_path):
    emulator, server = ollama_factory()
    OllamaClient(server.url).pull("llama3.2:1b")
    _, again = ollama_factory(store=emulator.store.path.parent)
    assert [m["name"] for m in OllamaClient(again.url).tags()] == ["llama3.2:1b"]


def test_delete(ollama_factory):
    _, server = ollama_factory()
    response = httpx.request("DELETE", server.url + "/api/delete", json={"model": "qwen2.5:3b"})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'qwen2.5:3b' not found"}
    client = OllamaClient(server.url)
    client.pull("qwen2.5:3b")
    client.pull("qwen2.5:14b")
    client.delete("qwen2.5:3b")
    assert [m["name"] for m in client.tags()] == ["qwen2.5:14b"]
    with pytest.raises(OllamaError) as info:
        client.delete("qwen2.5:3b")
    assert info.value.status == 404


def test_chat_on_missing_model_is_404(ollama_factory):
    _, server = ollama_factory()
    response = httpx.post(server.url + "/api/chat", json={"model": "qwen2.5:14b", "messages": [], "stream": False})
    assert response.status_code == 404
    assert response.json() == {"error": 'model "qwen2.5:14b" not found, try pulling it first'}


@pytest.mark.parametrize(
    ("limit_gib", "lxc_gb", "model", "error"),
    [
        # story 12.8: qwen2.5:14b on the 8 GB LXC with an 8Gi limit fails ...
        (8, 8, "qwen2.5:14b", "model requires more system memory (11.0 GiB) than is available (7.5 GiB)"),
        (8, 20, "qwen2.5:14b", "model requires more system memory (11.0 GiB) than is available (8.0 GiB)"),
        (4, 20, "qwen2.5:14b", "model requires more system memory (11.0 GiB) than is available (4.0 GiB)"),
        (16, 8, "qwen2.5:14b", "model requires more system memory (11.0 GiB) than is available (7.5 GiB)"),
        # ... and works with the 16Gi limit on the 20 GB LXC.
        (16, 20, "qwen2.5:14b", None),
        # story 25.2: phi4-mini (3.5 GiB) fits the 4Gi limit on the 8 GB LXC.
        (4, 8, "phi4-mini", None),
    ],
)
def test_memory_check_when_loading(ollama_factory, limit_gib, lxc_gb, model, error):
    _, server = ollama_factory(limit_gib=limit_gib, lxc_gb=lxc_gb)
    client = OllamaClient(server.url)
    client.pull(model)
    if error is None:
        answer = client.chat(model, classify(model))
        assert answer["done"] is True and answer["load_duration"] > 0
        assert [m["name"] for m in client.ps()] == [normalize_name(model)]
    else:
        with pytest.raises(OllamaError) as info:
            client.chat(model, classify(model))
        assert info.value.status == 500
        assert info.value.message == error
        assert client.ps() == []


def test_available_memory_is_read_at_load_time(catalog, tmp_path, ollama_factory):
    from lab.ollama import make_ollama_app
    from tests.ollama.helpers import ServerThread

    lxc = {"bytes": 8 * 10**9}
    emulator = OllamaEmulator(catalog, tmp_path / "s", 16 * 2**30, lambda: lxc["bytes"], {}, 0.001)
    with ServerThread(lambda: make_ollama_app(emulator)) as server:
        client = OllamaClient(server.url)
        client.pull("qwen2.5:14b")
        with pytest.raises(OllamaError, match="more system memory"):
            client.chat("qwen2.5:14b", classify("q"))
        lxc["bytes"] = 20 * 10**9  # hot-applied LXC resize
        assert client.chat("qwen2.5:14b", classify("q"))["done"] is True


def test_load_timeout(ollama_factory):
    _, server = ollama_factory(env={"OLLAMA_LOAD_TIMEOUT": "2m"})  # qwen2.5:14b needs 164 s
    client = OllamaClient(server.url)
    client.pull("qwen2.5:14b")
    started = time.monotonic()
    with pytest.raises(OllamaError, match="timed out waiting for llama runner to start") as info:
        client.chat("qwen2.5:14b", classify("q"))
    assert info.value.status == 500
    assert time.monotonic() - started >= 0.12  # waited the (scaled) 2 minutes
    _, server2 = ollama_factory(env={"OLLAMA_LOAD_TIMEOUT": "10m"}, store=None)
    client2 = OllamaClient(server2.url)
    assert client2.chat("qwen2.5:14b", classify("q"))["done"] is True


def test_cold_load_once_and_keep_alive(ollama_factory):
    _, server = ollama_factory(env={"OLLAMA_KEEP_ALIVE": "-1"})
    client = OllamaClient(server.url)
    client.pull("phi4-mini")
    first = client.chat("phi4-mini", classify("a"))
    second = client.chat("phi4-mini", classify("b", "Other Corp\nReceipt\nCash 5.00\nThank you for your purchase"))
    assert first["load_duration"] >= 0.2e9  # 218 s cold load at time_scale 0.001
    assert second["load_duration"] < first["load_duration"] / 10
    (loaded,) = client.ps()
    assert loaded["name"] == "phi4-mini:latest"
    assert loaded["size_vram"] == 0 and loaded["size"] == int(3.5 * 2**30)
    assert loaded["expires_at"].startswith("2318")
    client.chat("phi4-mini", classify("c"), keep_alive=0)
    assert client.ps() == []


def test_default_keep_alive_expires(ollama_factory):
    _, server = ollama_factory(env={"OLLAMA_KEEP_ALIVE": "5m"}, scale=0.001)  # 5 min -> 0.3 s
    client = OllamaClient(server.url)
    client.pull("llama3.2:1b")
    client.chat("llama3.2:1b", classify("x"))
    assert len(client.ps()) == 1
    time.sleep(0.45)
    assert client.ps() == []


def test_thinking_qwen3_cannot_be_disabled(ollama_factory):
    _, server = ollama_factory()
    client = OllamaClient(server.url)
    client.pull("qwen3:4b")
    assert "thinking" in client.show("qwen3:4b")["capabilities"]
    off = client.chat("qwen3:4b", classify("t"), think=False)
    assert off["message"]["content"].startswith("<think>")  # leaks into the content
    assert "</think>" in off["message"]["content"]
    on = client.chat("qwen3:4b", classify("t"), think=True)
    assert on["message"]["thinking"]
    assert not on["message"]["content"].startswith("<think>")
    # Thinking makes it slow: 150-400 real-lab seconds per classification, beyond a 120 s gate timeout.
    assert off["eval_count"] > 500
    # With a JSON format the content must stay valid JSON, so the leaked thinking arrives in message.thinking.
    constrained = client.chat("qwen3:4b", classify("t"), think=False, format="json")
    assert constrained["message"]["thinking"]
    json.loads(constrained["message"]["content"])


def test_think_true_on_a_model_without_thinking_is_400(ollama_factory):
    _, server = ollama_factory()
    client = OllamaClient(server.url)
    client.pull("phi4-mini")
    assert "thinking" not in client.show("phi4-mini")["capabilities"]
    with pytest.raises(OllamaError) as info:
        client.chat("phi4-mini", classify("p"), think=True)
    assert info.value.status == 400
    plain = client.chat("phi4-mini", classify("p"), think=False)
    assert "thinking" not in plain["message"] and "<think>" not in plain["message"]["content"]


def test_show_and_404(ollama_factory):
    _, server = ollama_factory()
    client = OllamaClient(server.url)
    client.pull("qwen2.5:14b")
    shown = client.show("qwen2.5:14b")
    assert shown["details"]["family"] == "qwen2"
    assert shown["model_info"]["qwen2.context_length"] == 32768
    with pytest.raises(OllamaError) as info:
        client.show("llama3.1:8b")
    assert info.value.status == 404


def test_answer_is_deterministic_and_classifies(ollama_factory):
    _, server = ollama_factory()
    client = OllamaClient(server.url)
    client.pull("qwen2.5:14b")
    docs = sample_documents()[:6]
    first = [client.chat("qwen2.5:14b", classify("q", d["text"]), format="json")["message"]["content"] for d in docs]
    again = [client.chat("qwen2.5:14b", classify("q", d["text"]), format="json")["message"]["content"] for d in docs]
    assert first == again
    answers = [json.loads(c) for c in first]
    assert all(set(a) == {"title", "correspondent", "document_type", "tags"} for a in answers)
    assert answers[0]["correspondent"] == docs[0]["text"].splitlines()[0]
    right = sum(a["document_type"] == d["document_type"] for a, d in zip(answers, docs, strict=True))
    assert right >= 4


def test_stats_are_consistent(ollama_factory, catalog):
    _, server = ollama_factory(env={"OLLAMA_KEEP_ALIVE": "-1"})
    client = OllamaClient(server.url)
    client.pull("qwen2.5:14b")
    client.chat("qwen2.5:14b", classify("warm"))
    started = time.monotonic()
    answer = client.chat("qwen2.5:14b", classify("q"))
    wall = time.monotonic() - started
    # 33.6-41.5 real-lab seconds at time_scale 0.001
    assert 0.0336e9 <= answer["total_duration"] <= wall * 1e9
    assert answer["eval_count"] > 10 and answer["prompt_eval_count"] > 10
    assert answer["eval_duration"] + answer["prompt_eval_duration"] <= answer["total_duration"]
    tokens_per_real_second = answer["eval_count"] / (answer["eval_duration"] / 1e9) * 0.001
    assert tokens_per_real_second == pytest.approx(6, rel=0.05)


def test_streamed_chat_matches_unstreamed(ollama_factory):
    _, server = ollama_factory()
    client = OllamaClient(server.url)
    client.pull("llama3.2:1b")
    messages = classify("s")
    whole = client.chat("llama3.2:1b", messages)["message"]["content"]
    body = {"model": "llama3.2:1b", "messages": messages}  # no "stream": Ollama streams by default
    with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        chunks = [json.loads(line) for line in response.iter_lines() if line]
    assert len(chunks) > 2
    assert all(c["done"] is False for c in chunks[:-1]) and chunks[-1]["done"] is True
    assert "".join(c["message"]["content"] for c in chunks) == whole
    assert chunks[-1]["eval_count"] > 0


def test_num_predict_stops_the_answer_like_ollama(ollama_factory):
    # LiteLLM sends a client's max_tokens as options.num_predict; Ollama stops there with done_reason "length"
    _, server = ollama_factory()
    OllamaClient(server.url).pull("llama3.2:1b")
    body = {"model": "llama3.2:1b", "messages": classify("n"), "format": "json", "stream": False}
    whole = httpx.post(server.url + "/api/chat", json=body, timeout=30).json()
    short = httpx.post(server.url + "/api/chat", json={**body, "options": {"num_predict": 4}}, timeout=30).json()
    assert whole["done_reason"] == "stop" and whole["eval_count"] > 4
    assert short["done_reason"] == "length" and short["eval_count"] == 4
    assert whole["message"]["content"].startswith(short["message"]["content"])
    assert len(short["message"]["content"]) < len(whole["message"]["content"])
    assert short["eval_duration"] < whole["eval_duration"]
    bad = httpx.post(server.url + "/api/chat", json={**body, "options": {"num_predict": "x"}}, timeout=30)
    assert bad.status_code == 400 and "num_predict" in bad.json()["error"]


def test_generate_endpoint_and_preload(ollama_factory):
    _, server = ollama_factory()
    client = OllamaClient(server.url)
    client.pull("llama3.2:1b")
    loaded = client.generate("llama3.2:1b", "")
    assert loaded["done_reason"] == "load"
    assert [m["name"] for m in client.ps()] == ["llama3.2:1b"]
    answer = client.generate("llama3.2:1b", INVOICE, system=SYSTEM, format="json")
    assert json.loads(answer["response"])["correspondent"] == "ACME Corp"
    unloaded = client.generate("llama3.2:1b", "", keep_alive=0)
    assert unloaded["done_reason"] == "unload" and client.ps() == []


def test_requests_beyond_num_parallel_queue(ollama_factory):
    _, server = ollama_factory(env={"OLLAMA_NUM_PARALLEL": "1", "OLLAMA_KEEP_ALIVE": "-1"}, scale=0.004)
    client = OllamaClient(server.url)
    client.pull("phi4-mini")
    client.generate("phi4-mini", "")  # preload (218 s -> 0.87 s)
    results: list[tuple[int, float]] = []

    def one(i: int) -> None:
        started = time.monotonic()
        response = httpx.post(
            server.url + "/api/chat",
            json={"model": "phi4-mini", "messages": classify(str(i), f"Doc {i}\n" + INVOICE), "stream": False},
            timeout=30,
        )
        results.append((response.status_code, time.monotonic() - started))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.monotonic() - started
    assert [code for code, _ in results] == [200, 200, 200]  # queued, not 503
    # 3 x 25.1-27.5 real-lab seconds one after another at time_scale 0.004 (in parallel it would be ~0.11 s)
    assert total >= 3 * 25.1 * 0.004 * 0.95


def test_classification_shares_follow_the_profiles(catalog):
    """Over many documents the shares of valid JSON and right types approach the profile values."""
    from lab.ollama.behaviour import generate

    docs = []
    base = sample_documents()
    for i in range(400):
        doc = base[i % len(base)]
        docs.append({**doc, "text": doc["text"] + f"\nReference {i:05d}"})
    for name in ("qwen2.5:14b", "phi4-mini:latest", "llama3.2:1b", "qwen2.5:3b"):
        profile = catalog.ollama[name].behaviour
        free = [generate(profile, name, classify(name, d["text"]), False, False, False) for d in docs]
        valid = 0
        for answer in free:
            try:
                obj = json.loads(answer.content)
                valid += set(obj) == {"title", "correspondent", "document_type", "tags"}
            except ValueError:
                pass
        assert valid / len(docs) == pytest.approx(profile.json_valid_share, abs=0.06), name
        right = sum(
            json.loads(a.content)["document_type"] == d["document_type"]
            for a, d in zip(free, docs, strict=True)
            if a.valid
        )
        assert right / sum(a.valid for a in free) == pytest.approx(profile.doc_type_accuracy, abs=0.08), name
        forced = [generate(profile, name, classify(name, d["text"]), True, False, False) for d in docs]
        parsed = [json.loads(a.content) for a in forced]  # grammar-constrained: always parses
        complete = sum(set(p) == {"title", "correspondent", "document_type", "tags"} for p in parsed)
        assert complete / len(docs) == pytest.approx(profile.format_complete_share, abs=0.06), name


def test_keyword_heuristic_on_documents():
    from lab.ollama.behaviour import classify_text

    docs = sample_documents()
    right = sum(classify_text(d["text"]) == d["document_type"] for d in docs)
    assert right / len(docs) >= 0.9


def test_duration_parsing():
    assert parse_go_duration("5m") == 300
    assert parse_go_duration("1h30m") == 5400
    assert parse_go_duration("300ms") == pytest.approx(0.3)
    assert parse_keep_alive("-1") == float("inf")
    assert parse_keep_alive(-1) == float("inf")
    assert parse_keep_alive("10m") == 600
    assert parse_keep_alive(0) == 0
    with pytest.raises(ValueError):
        parse_go_duration("five minutes")


def test_generate_understands_litellm_flattened_prompts(ollama_factory):
    """LiteLLM's ``ollama/`` provider sends chat messages as one prompt with ``### System:``/``### User:``."""
    _, server = ollama_factory()
    client = OllamaClient(server.url)
    client.pull("phi4-mini")
    prompt = f"### System:\n{SYSTEM}\n\n### User:\n{INVOICE}\n\n"
    answer = client.generate("phi4-mini", prompt, format="json")
    assert json.loads(answer["response"])["correspondent"] == "ACME Corp"


SCHEMA = {
    "type": "object",
    "properties": {
        "document_type": {"type": "string", "enum": ["invoice", "contract"]},
        "correspondent": {"type": "string"},
    },
    "required": ["document_type", "correspondent"],
}


def test_a_json_schema_shapes_the_answer_and_its_enum_bounds_the_types(ollama_factory):
    """A schema in ``format`` is seen: the answer has exactly its properties, always (the grammar forces them, even
    from a model that leaves fields out under ``format: json``), and a type from its enum; a document whose type
    the enum lacks cannot be answered right."""
    _, server = ollama_factory()
    client = OllamaClient(server.url)
    client.pull("llama3.2:1b")  # format_complete_share 0.8: with "json" some answers lack a field
    docs = sample_documents()
    answers = [
        json.loads(client.chat("llama3.2:1b", classify("l", d["text"]), format=SCHEMA)["message"]["content"])
        for d in docs
    ]
    assert all(set(a) == {"document_type", "correspondent"} for a in answers)
    assert {a["document_type"] for a in answers} <= {"invoice", "contract"}
    letters = [a for a, d in zip(answers, docs, strict=True) if d["document_type"] == "letter"]
    assert letters and all(a["document_type"] != "letter" for a in letters)
    plain = [
        json.loads(client.chat("llama3.2:1b", classify("l", d["text"]), format="json")["message"]["content"])
        for d in docs
    ]
    assert any(set(a) != {"title", "correspondent", "document_type", "tags"} for a in plain), (
        "without a schema some lack a field"
    )


def test_the_prompts_document_types_bound_the_answer(catalog):
    from ansible_collections.homelab.inference.plugins.module_utils.llm_gate import build_messages

    from lab.ollama.behaviour import generate

    model = catalog.ollama_model("qwen2.5:14b")
    receipts = [d for d in sample_documents() if d["document_type"] == "receipt"]
    for doc in receipts:
        narrow = generate(
            model.behaviour, model.name, build_messages(doc["text"], ("invoice", "letter")), True, False, False
        )
        assert json.loads(narrow.content)["document_type"] in ("invoice", "letter") and not narrow.correct
    usual = [generate(model.behaviour, model.name, build_messages(d["text"]), True, False, False) for d in receipts]
    assert any(a.correct for a in usual)
