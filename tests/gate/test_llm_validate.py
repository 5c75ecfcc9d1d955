"""llm_validate against in-process fake Ollama and OpenAI-compatible (vLLM-like) servers."""

from __future__ import annotations

import hashlib
import json

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.llm_gate import select_sample
from ansible_collections.homelab.inference.plugins.modules import llm_validate
from gate_fakes import DOCUMENTS_DIR, FakeBackend, Reply, answer_json, good


@pytest.fixture
def ollama(servers, doc_index):
    """A fake Ollama with no models yet; tests add behaviours to ``.models``."""
    backend = FakeBackend("ollama", {}, doc_index)
    port = servers.serve(backend.app)
    backend.url = f"http://127.0.0.1:{port}"
    yield backend
    servers.stop(port)


@pytest.fixture
def vllm(servers, doc_index):
    backend = FakeBackend("openai", {}, doc_index)
    port = servers.serve(backend.app)
    backend.url = f"http://127.0.0.1:{port}/v1"
    yield backend
    servers.stop(port)


def args(backend, model, **extra):
    base = {
        "api": backend.kind,
        "api_url": backend.url,
        "model": model,
        "documents_dir": str(DOCUMENTS_DIR),
        "request_timeout": 5,
        "warmup_timeout": 5,
        "max_p95_latency": 2,
        # the shipped 22 documents cannot show 95 % valid JSON (22 of 22: lower bound 0.85), as the inventories say
        "on_inconclusive": "pass",
    }
    if "sample_size" in extra:  # these tests send exactly their sample: no further rounds
        base["max_documents"] = extra["sample_size"]
    base.update(extra)
    return base


# -- passing --------------------------------------------------------------------------------------------------------


def test_good_ollama_model_passes_with_all_metrics(module_runner, ollama, documents):
    def behaviour(doc, body):
        if doc is None:
            return Reply("OK", delay=0.25, load_seconds=0.2, eval_count=2, eval_seconds=0.01)
        return Reply(answer_json(doc), eval_count=50, eval_seconds=2.0)

    ollama.models["qwen2.5:14b"] = behaviour
    result = module_runner(llm_validate, args(ollama, "qwen2.5:14b"))
    assert not result.failed, result["msg"]
    assert result["changed"] is False and result["passed"] is True and result["failures"] == []
    m = result["metrics"]
    assert m["documents"] == len(documents) == m["valid_json"] == m["correct"]
    assert m["valid_json_rate"] == 1.0 and m["accuracy"] == 1.0 and m["correspondent_accuracy"] == 1.0
    assert m["tokens_per_second"] == 25.0  # eval_count / eval_duration, summed
    assert m["thinking_answers"] == 0 and m["thinking_sample"] is None
    # the warm-up is reported separately and not counted in the latency figures
    assert m["cold_start"] >= 0.25 and m["cold_start_load"] == 0.2
    assert m["latency_max"] < 0.25
    assert m["latency_p50"] <= m["latency_p95"] <= m["latency_max"]
    assert "quality gate passed for qwen2.5:14b" in result["msg"]
    assert len(result["per_document"]) == len(documents)
    entry = result["per_document"][0]
    assert set(entry) >= {"id", "expected", "got", "valid", "latency", "error"}
    assert entry["valid"] and entry["expected"] == entry["got"] and entry["error"] is None
    # what went over the wire: native /api/chat with format json and thinking off, document text verbatim
    sent = ollama.rec.classification_requests()
    assert len(sent) == len(documents)
    assert all(b["format"] == "json" and b["think"] is False and b["stream"] is False for b in sent)
    assert {b["messages"][1]["content"] for b in sent} == {d["text"] for d in documents}
    warmups = [b for b in ollama.rec.requests if b not in sent]
    assert len(warmups) == 1


def test_good_openai_model_passes_and_sends_json_mode_and_no_thinking(module_runner, vllm):
    vllm.models["Qwen/Qwen3-8B-AWQ"] = good(delay=0.02)
    result = module_runner(llm_validate, args(vllm, "Qwen/Qwen3-8B-AWQ", sample_size=6, concurrency=2))
    assert not result.failed, result["msg"]
    assert result["metrics"]["documents"] == 6
    assert result["metrics"]["tokens_per_second"] > 0
    assert [d["expected"] for d in result["per_document"]] == ["invoice", "letter", "receipt"] * 2
    sent = vllm.rec.classification_requests()
    assert len(sent) == 6
    for body in sent:
        assert body["response_format"] == {"type": "json_object"}
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
        assert body["temperature"] == 0.0


def test_json_mode_and_disable_thinking_can_be_turned_off(module_runner, ollama):
    ollama.models["m"] = good()
    result = module_runner(llm_validate, args(ollama, "m", sample_size=3, json_mode=False, disable_thinking=False))
    assert not result.failed
    sent = ollama.rec.classification_requests()
    assert all("format" not in b and "think" not in b for b in sent)


# -- failing --------------------------------------------------------------------------------------------------------


def test_broken_json_fails_naming_the_valid_json_threshold(module_runner, ollama, documents):
    broken_ids = {d["id"] for d in documents[::5]}  # 5 of 22 documents

    def behaviour(doc, body):
        if doc is None:
            return Reply("OK")
        if doc["id"] in broken_ids:
            return Reply("```json\n" + answer_json(doc) + "\n```")
        return Reply(answer_json(doc))

    ollama.models["llama3.2:1b"] = behaviour
    result = module_runner(llm_validate, args(ollama, "llama3.2:1b"))
    assert result.failed
    rate = (len(documents) - len(broken_ids)) / len(documents)
    assert result["metrics"]["valid_json"] == len(documents) - len(broken_ids)
    assert rate > 0.70  # invalid answers count as wrong, but 17/22 still meets the accuracy threshold
    assert result["failures"] == [f"valid_json {rate:.2f} (95 % CI 0.57 to 0.90, n=22) lies below the minimum 0.95"], (
        "17 of 22 shows the rate is below 95 %"
    )
    assert result["verdict"] == "failed" and result["decided_by"] == "checks" and result["documents_sent"] == 22
    assert result["metrics"]["accuracy"] == round(rate, 4)
    assert result["msg"] == "quality gate failed for llama3.2:1b: " + "; ".join(result["failures"])
    assert result["passed"] is False and result["changed"] is False
    bad = [d for d in result["per_document"] if not d["valid"]]
    assert {d["id"] for d in bad} == broken_ids
    assert all("code fence" in d["error"] for d in bad)
    # thresholds are options: a lenient gate passes the same answers
    ollama.rec.requests.clear()
    lenient = module_runner(llm_validate, args(ollama, "llama3.2:1b", min_valid_json=0.7, min_accuracy=0.7))
    assert not lenient.failed, lenient["msg"]


def test_wrong_types_fail_accuracy_only(module_runner, vllm):
    def behaviour(doc, body):
        if doc is None:
            return Reply("OK")
        return Reply(answer_json(doc, document_type="letter"))

    vllm.models["m"] = behaviour
    result = module_runner(llm_validate, args(vllm, "m", sample_size=9))
    assert result.failed
    assert result["failures"] == ["accuracy 0.33 (95 % CI 0.12 to 0.65, n=9) lies below the minimum 0.70"]
    assert result["metrics"]["valid_json_rate"] == 1.0


def test_thinking_model_fails_naming_thinking(module_runner, ollama):
    def behaviour(doc, body):
        if doc is None:
            return Reply("OK", thinking="The user wants me to say OK.")
        return Reply(answer_json(doc), thinking=f"Okay, this looks like a {doc['document_type']}. Let me check.")

    ollama.models["qwen3:4b"] = behaviour
    result = module_runner(llm_validate, args(ollama, "qwen3:4b", sample_size=10))
    assert result.failed
    assert result["failures"] == ["thinking output in 10/10 answers"]
    assert result["metrics"]["thinking_sample"].startswith("Okay, this looks like a")
    assert all(d["thinking"] for d in result["per_document"])
    allowed = module_runner(llm_validate, args(ollama, "qwen3:4b", sample_size=10, allow_thinking=True))
    assert not allowed.failed


def test_inline_think_blocks_are_stripped_and_counted_for_openai(module_runner, vllm):
    def behaviour(doc, body):
        if doc is None:
            return Reply("OK")
        if doc["document_type"] == "receipt":  # unclosed: ran out of tokens while thinking
            return Reply("<think>\nA receipt? The total is paid, so")
        return Reply("<think>\nHmm.\n</think>\n\n" + answer_json(doc))

    vllm.models["qwen3"] = behaviour
    result = module_runner(llm_validate, args(vllm, "qwen3", sample_size=6))
    assert result.failed
    m = result["metrics"]
    assert m["thinking_answers"] == 6 and m["valid_json"] == 4
    assert "thinking output in 6/6 answers" in result["failures"]
    assert "valid_json 0.67 (95 % CI 0.30 to 0.90, n=6) lies below the minimum 0.95" in result["failures"]
    receipts = [d for d in result["per_document"] if d["expected"] == "receipt"]
    assert all(d["error"] == "empty answer" for d in receipts)


def test_reasoning_content_field_counts_as_thinking(module_runner, vllm):
    vllm.models["r1"] = lambda doc, body: Reply(answer_json(doc) if doc else "OK", thinking="chain of thought")
    result = module_runner(llm_validate, args(vllm, "r1", sample_size=3))
    assert result["failures"] == ["thinking output in 3/3 answers"]


def test_slow_model_fails_p95(module_runner, ollama):
    def behaviour(doc, body):
        if doc is None:
            return Reply("OK")
        return Reply(answer_json(doc), delay=0.35 if doc["document_type"] == "letter" else 0.01)

    ollama.models["slow"] = behaviour
    result = module_runner(llm_validate, args(ollama, "slow", sample_size=6, max_p95_latency=0.3))
    assert result.failed
    assert len(result["failures"]) == 1
    assert result["failures"][0].startswith("p95 latency 0.3")
    assert result["failures"][0].endswith(" s (n=6) not below the maximum 0.3 s")
    m = result["metrics"]
    assert m["latency_p95"] >= 0.35 and m["latency_p50"] < 0.3


def test_timeouts_count_as_invalid_with_latency_equal_to_the_timeout(module_runner, ollama):
    def behaviour(doc, body):
        if doc is None:
            return Reply("OK")
        return Reply(answer_json(doc), delay=3.0 if doc["document_type"] == "invoice" else 0.01)

    ollama.models["hangs"] = behaviour
    result = module_runner(
        llm_validate, args(ollama, "hangs", sample_size=6, request_timeout=0.4, max_p95_latency=0.5, concurrency=2)
    )
    assert result.failed
    m = result["metrics"]
    assert m["timeouts"] == 2 and m["errors"] == 2 and m["answers"] == 4
    assert m["latency_max"] == 0.4
    timed_out = [d for d in result["per_document"] if d["expected"] == "invoice"]
    assert all(d["latency"] == 0.4 and not d["valid"] and "timed out after 0.4 s" in d["error"] for d in timed_out)
    # valid JSON lies below 95 %; accuracy 4 of 6 (95 % CI 0.30 to 0.90) can be above or below 70 %: only listed
    assert result["failures"] == ["valid_json 0.67 (95 % CI 0.30 to 0.90, n=6) lies below the minimum 0.95"]
    accuracy = next(c for c in result["checks"] if c["metric"] == "accuracy")
    assert accuracy["verdict"] == "inconclusive" and accuracy["n"] == 6


def test_server_errors_count_as_invalid(module_runner, ollama):
    def behaviour(doc, body):
        if doc is None or doc["document_type"] != "letter":
            return Reply(answer_json(doc) if doc else "OK")
        return Reply("", status=503, error="server busy, please try again.  maximum pending requests exceeded")

    ollama.models["busy"] = behaviour
    result = module_runner(llm_validate, args(ollama, "busy", sample_size=6))
    assert result["metrics"]["errors"] == 2 and result["metrics"]["timeouts"] == 0
    letters = [d for d in result["per_document"] if d["expected"] == "letter"]
    assert all("server busy" in d["error"] for d in letters)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_bounded(module_runner, vllm, concurrency):
    vllm.models["m"] = good(delay=0.2)
    result = module_runner(llm_validate, args(vllm, "m", sample_size=6, concurrency=concurrency))
    assert not result.failed, result["msg"]
    assert vllm.rec.max_in_flight == concurrency  # used, and never exceeded


# -- warm-up --------------------------------------------------------------------------------------------------------


def test_warmup_failure_fails_before_any_classification(module_runner, ollama):
    result = module_runner(llm_validate, args(ollama, "phi4-mini:3.8b"))  # a tag that does not exist
    assert result.failed
    assert result["msg"].startswith("warm-up request to phi4-mini:3.8b failed: model 'phi4-mini:3.8b' not found")
    assert result["per_document"] == [] and ollama.rec.classification_requests() == []


def test_warmup_timeout_is_its_own_option(module_runner, ollama):
    ollama.models["cold"] = lambda doc, body: Reply(answer_json(doc) if doc else "OK", delay=0 if doc else 1.0)
    result = module_runner(llm_validate, args(ollama, "cold", warmup_timeout=0.3, sample_size=3))
    assert result.failed and "did not finish within warmup_timeout 0.3 s" in result["msg"]
    ok = module_runner(llm_validate, args(ollama, "cold", warmup_timeout=3, request_timeout=0.5, sample_size=3))
    assert not ok.failed and ok["metrics"]["cold_start"] >= 1.0
    skipped = module_runner(llm_validate, args(ollama, "cold", warmup=False, sample_size=3))
    assert skipped["metrics"]["cold_start"] is None


# -- check mode and input -------------------------------------------------------------------------------------------


def test_check_mode_runs_the_gate_unless_told_to_skip(module_runner, ollama):
    ollama.models["m"] = good()
    result = module_runner(llm_validate, args(ollama, "m", sample_size=3), check_mode=True)
    assert not result.failed and result["passed"] is True and result["changed"] is False
    assert len(ollama.rec.classification_requests()) == 3
    ollama.rec.requests.clear()
    skipped = module_runner(llm_validate, args(ollama, "m", skip_in_check_mode=True), check_mode=True)
    assert skipped["skipped"] is True and skipped["changed"] is False
    assert ollama.rec.requests == []


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"documents_dir": "/nonexistent/documents"}, "documents_dir '/nonexistent/documents' is not a directory"),
        ({"sample_size": 0}, "sample_size must be at least 1"),
        ({"sample_size": 500}, "sample_size 500 is larger than the 22 documents"),
        ({"min_valid_json": 1.5}, "min_valid_json must be a share between 0 and 1 (got 1.5)"),
        ({"min_accuracy": -0.1}, "min_accuracy must be a share between 0 and 1"),
        ({"max_p95_latency": 0}, "max_p95_latency must be a positive number of seconds"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"request_timeout": -1}, "request_timeout must be a positive number of seconds"),
    ],
)
def test_bad_input_fails_before_any_request(module_runner, ollama, extra, needle):
    ollama.models["m"] = good()
    result = module_runner(llm_validate, args(ollama, "m", **extra))
    assert result.failed
    assert needle in result["msg"]
    assert ollama.rec.requests == []


def test_api_key_is_sent_but_never_returned(module_runner, vllm):
    vllm.api_key = "sk-gate-secret-123"
    vllm.models["m"] = good()
    result = module_runner(llm_validate, args(vllm, "m", sample_size=3, api_key="sk-gate-secret-123"))
    assert not result.failed
    assert "sk-gate-secret-123" not in json.dumps(result)
    denied = module_runner(llm_validate, args(vllm, "m", sample_size=3, api_key="sk-wrong"))
    assert denied.failed and "HTTP 401" in denied["msg"] and "sk-wrong" not in json.dumps(denied)


# -- gate records: a passing gate is recorded, and reused only for the same model, documents, prompt and options ------


def test_a_passing_gate_returns_its_record_keyed_by_digest_documents_prompt_and_options(module_runner, ollama):
    ollama.models["qwen2.5:14b"] = good()
    result = module_runner(llm_validate, args(ollama, "qwen2.5:14b", sample_size=4, record=True, run_id="run-1"))
    assert not result.failed, result["msg"]
    record = result["record"]
    digest = "sha256:" + hashlib.sha256(b"qwen2.5:14b").hexdigest()
    assert result["digest"] == record["digest"] == digest
    assert result["record_key"] == record["key"] and record["key"].startswith("gate-") and len(record["key"]) == 45
    assert record["passed"] is True and record["run_id"] == "run-1" and record["model"] == "qwen2.5:14b"
    assert record["options"] == {"api": "ollama", "json_mode": True, "disable_thinking": True, "temperature": 0.0}
    assert record["metrics"] == result["metrics"]
    assert [d["id"] for d in record["per_document"]] == [d["id"] for d in result["per_document"]]
    assert record["passed_at"].endswith("Z")
    assert result["reused"] is False
    # other options (JSON mode off) give another key; how many documents a gate sends does not (a record of a gate
    # that sent fewer documents is the baseline of one that may send more, and the other way round)
    other = module_runner(llm_validate, args(ollama, "qwen2.5:14b", sample_size=4, record=True, json_mode=False))
    fewer = module_runner(llm_validate, args(ollama, "qwen2.5:14b", sample_size=3, max_documents=12, record=True))
    assert other["record_key"] != record["key"] == fewer["record_key"]


def test_a_recorded_pass_is_reused_without_a_request(module_runner, ollama):
    ollama.models["qwen2.5:14b"] = good()
    first = module_runner(llm_validate, args(ollama, "qwen2.5:14b", sample_size=4, record=True))
    records = {first["record_key"]: json.dumps(first["record"])}
    sent_before = len(ollama.rec.requests)
    again = module_runner(
        llm_validate, args(ollama, "qwen2.5:14b", sample_size=4, record=True, records=records, reuse_record=True)
    )
    assert not again.failed and again["passed"] is True and again["reused"] is True
    assert len(ollama.rec.requests) == sent_before  # not even a warm-up
    assert again["msg"] == f"gate skipped: passed for {first['digest'][7:19]} on {first['record']['passed_at']}"
    assert again["metrics"] == first["metrics"] and again["record"] == first["record"]


@pytest.mark.parametrize(
    ("change", "because"),
    [
        ("digest", "no passing gate recorded"),  # other weights under the same tag
        ("thresholds", "is failed with today's thresholds: accuracy 0.33"),  # stricter now than when it passed
        ("not asked", None),  # reuse_record false: the caller saw a change (release values, pull, resize)
    ],
)
def test_a_recorded_pass_is_not_reused_when_anything_differs(module_runner, ollama, change, because):
    ollama.models["m"] = good()
    first = module_runner(llm_validate, args(ollama, "m", sample_size=3, record=True, min_accuracy=0.5))
    for answer in first["record"]["per_document"][1:]:  # as if it had passed with 1 of 3 then
        answer["correct"] = False
    records = {first["record_key"]: json.dumps(first["record"])}
    extra = {"record": True, "records": records, "reuse_record": change != "not asked", "min_accuracy": 0.5}
    if change == "digest":
        ollama.digests["m"] = "0" * 64
    if change == "thresholds":
        extra["min_accuracy"] = 0.9
    sent_before = len(ollama.rec.requests)
    again = module_runner(llm_validate, args(ollama, "m", sample_size=3, **extra))
    assert not again.failed and again["reused"] is False
    assert len(ollama.rec.classification_requests()) > 0 and len(ollama.rec.requests) > sent_before
    if because:
        assert because in again["reuse_skipped_because"]
    else:
        assert "reuse_skipped_because" not in again


def test_reuse_only_sends_nothing_and_says_why_when_no_record_can_be_reused(module_runner, ollama):
    """The upgrade's no-op check asks for a reusable record only: without one it sends nothing and is skipped."""
    ollama.models["m"] = good()
    first = module_runner(llm_validate, args(ollama, "m", sample_size=3, record=True))
    records = {first["record_key"]: json.dumps(first["record"])}
    only = {"record": True, "reuse_record": True, "reuse_only": True}
    sent_before = len(ollama.rec.requests)
    found = module_runner(llm_validate, args(ollama, "m", sample_size=3, records=records, **only))
    assert not found.failed and found["reused"] is True and found["passed"] is True
    none = module_runner(llm_validate, args(ollama, "m", sample_size=3, records={}, **only))
    assert not none.failed and none["reused"] is False and none["skipped"] is True and none["passed"] is None
    assert none["msg"] == "no recorded gate to reuse: " + none["reuse_skipped_because"]
    assert "no passing gate recorded" in none["reuse_skipped_because"]
    ollama.models.pop("m")  # no digest: nothing can be reused either
    gone = module_runner(llm_validate, args(ollama, "m", sample_size=3, records=records, **only))
    assert not gone.failed and gone["skipped"] is True and "digest" in gone["msg"]
    assert ollama.rec.requests[sent_before:] == []  # no warm-up, no document: only /api/tags for the digest


def test_an_openai_model_is_keyed_by_its_name_and_identity(module_runner, vllm):
    vllm.models["Qwen/Qwen3-8B-AWQ"] = good()
    one = module_runner(
        llm_validate, args(vllm, "Qwen/Qwen3-8B-AWQ", sample_size=2, record=True, model_identity={"revision": "a"})
    )
    two = module_runner(
        llm_validate, args(vllm, "Qwen/Qwen3-8B-AWQ", sample_size=2, record=True, model_identity={"revision": "b"})
    )
    assert one["digest"].startswith("sha256:") and one["digest"] != two["digest"]
    assert one["record_key"] != two["record_key"]


# -- the statistics: rounds while inconclusive, failing closed, the champion's recorded baseline ----------------------


def wrong_for(ids: set, delay: float = 0.0):
    """A model that answers every document correctly except those in ``ids`` (a valid answer of the wrong type)."""

    def behaviour(doc, body):
        if doc is None:
            return Reply("OK")
        wrong = "letter" if doc["document_type"] != "letter" else "invoice"
        return Reply(answer_json(doc, wrong if doc["id"] in ids else None), delay=delay)

    return behaviour


def first_ids(documents, count):
    """The ids of the first ``count`` documents in the gate's sending order."""
    return {d["id"] for d in select_sample(documents, None)[:count]}


LENIENT_JSON = {"min_valid_json": 0.5}  # every answer here is valid JSON: accuracy decides


def test_a_borderline_model_is_classified_further_until_the_interval_clears(module_runner, ollama, documents):
    ollama.models["borderline"] = wrong_for(first_ids(documents, 2))
    gate = args(ollama, "borderline", sample_size=10, max_documents=None, on_inconclusive="fail", **LENIENT_JSON)
    result = module_runner(llm_validate, gate)
    assert not result.failed, result["msg"]
    # 8 of 10 (95 % CI 0.49 to 0.94), 13 of 15 and 18 of 20 (lower bound 0.699) cannot tell 70 %; 20 of 22 can
    assert result["rounds"] == [
        {"documents": 10, "verdict": "inconclusive"},
        {"documents": 15, "verdict": "inconclusive"},
        {"documents": 20, "verdict": "inconclusive"},
        {"documents": 22, "verdict": "passed"},
    ]
    assert result["verdict"] == "passed" and result["decided_by"] == "checks" and result["documents_sent"] == 22
    accuracy = next(c for c in result["checks"] if c["metric"] == "accuracy")
    assert accuracy["reason"] == "accuracy 0.91 (95 % CI 0.72 to 0.97, n=22) clears the minimum 0.70"
    assert len(ollama.rec.classification_requests()) == 22
    assert "(passed, 22 documents)" in result["msg"]


def test_still_inconclusive_at_the_maximum_fails_closed_unless_configured_to_pass(module_runner, ollama, documents):
    ollama.models["borderline"] = wrong_for(first_ids(documents, 2))
    gate = args(ollama, "borderline", sample_size=10, max_documents=15, on_inconclusive="fail", **LENIENT_JSON)
    closed = module_runner(llm_validate, gate)
    assert closed.failed and closed["verdict"] == "inconclusive" and closed["decided_by"] == "on_inconclusive=fail"
    assert closed["documents_sent"] == 15 and closed["passed"] is False
    assert closed["failures"] == [
        "inconclusive after 15 documents (max_documents): accuracy 0.87 (95 % CI 0.62 to 0.96, n=15) neither clears "
        "nor misses the minimum 0.70"
    ]
    opened = module_runner(llm_validate, dict(gate, on_inconclusive="pass"))
    assert not opened.failed and opened["passed"] is True and opened["verdict"] == "inconclusive"
    assert opened["decided_by"] == "on_inconclusive=pass" and "passed by on_inconclusive=pass" in opened["msg"]


def champion_records(module_runner, backend, model, behaviour, **extra):
    """Run and record a passing gate of the champion ``model``; its records as the ConfigMap's data."""
    backend.models[model] = behaviour
    recorded = module_runner(llm_validate, args(backend, model, record=True, run_id="run-champion", **extra))
    assert not recorded.failed, recorded["msg"]
    return {recorded["record_key"]: json.dumps(recorded["record"])}


# latency ratios of these millisecond answers are noise: the unit tests of gate_stats check max_p95_latency_ratio
RELATIVE = dict(LENIENT_JSON, min_accuracy=0.3, max_accuracy_drop=0.05)


def test_a_challenger_better_than_its_recorded_champion_passes(module_runner, ollama, documents):
    records = champion_records(module_runner, ollama, "champion", wrong_for(first_ids(documents, 8)), **RELATIVE)
    ollama.models["challenger"] = good()
    result = module_runner(
        llm_validate, args(ollama, "challenger", champion_model="champion", records=records, **RELATIVE)
    )
    assert not result.failed, result["msg"]
    assert result["baseline"]["source"] == "recorded" and result["baseline"]["run_id"] == "run-champion"
    assert result["baseline"]["documents"] == 22 and result["baseline"]["model"] == "champion"
    relative = next(c for c in result["checks"] if c["kind"] == "relative" and c["metric"] == "accuracy")
    assert relative["verdict"] == "passed" and relative["challenger"] == 1.0 and relative["champion"] == 14 / 22
    paired = result["statistics"]["paired"]["accuracy"]
    assert paired["table"] == [[14, 0], [8, 0]] and paired["n"] == 22
    assert result["statistics"]["champion"]["n"] == 22


def test_a_challenger_clearly_worse_than_its_champion_fails_on_the_relative_threshold(module_runner, ollama, documents):
    records = champion_records(module_runner, ollama, "champion", good(), **RELATIVE)
    ollama.models["worse"] = wrong_for(first_ids(documents, 10))
    result = module_runner(llm_validate, args(ollama, "worse", champion_model="champion", records=records, **RELATIVE))
    assert result.failed and result["verdict"] == "failed"
    absolute = next(c for c in result["checks"] if c["kind"] == "absolute" and c["metric"] == "accuracy")
    assert absolute["verdict"] == "passed", "12 of 22 clears the minimum 0.30 on its own"
    assert result["failures"] == [
        "accuracy 0.55 (n=22) against the champion's 1.00 (n=22): change -0.45 (95 % CI -0.65 to -0.22) is worse "
        "than the allowed drop of 0.05"
    ]
    assert result["msg"] == "quality gate failed for worse: " + result["failures"][0]


def test_without_a_recorded_champion_the_relative_checks_are_left_out_and_the_result_says_why(module_runner, ollama):
    ollama.models["champion"] = good()
    ollama.models["challenger"] = good()
    result = module_runner(llm_validate, args(ollama, "challenger", champion_model="champion", records={}, **RELATIVE))
    assert not result.failed, result["msg"]
    assert result["baseline"]["source"] == "none" and result["baseline"]["model"] == "champion"
    assert result["baseline"]["reason"].startswith("no passing gate of the champion is recorded")
    assert not [c for c in result["checks"] if c["kind"] == "relative"] and result["statistics"]["champion"] is None
    slower = module_runner(
        llm_validate,
        args(ollama, "challenger", champion_model="challenger", records={}, **RELATIVE),
    )
    assert slower["baseline"] == {"source": "none", "model": "challenger", "reason": "the champion is the candidate"}
