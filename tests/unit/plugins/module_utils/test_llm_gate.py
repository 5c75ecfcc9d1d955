"""Unit tests of plugins/module_utils/llm_gate.py and the shipped gate documents."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from ansible_collections.homelab.inference.plugins.module_utils.llm_gate import (
    DOCUMENT_TYPES,
    REQUIRED_FIELDS,
    GateInputError,
    build_messages,
    correspondent_matches,
    documents_sha256,
    find_champion_record,
    find_gate_record,
    gate_record,
    gate_record_key,
    gate_records_patch,
    load_documents,
    model_identity_digest,
    options_sha256,
    parse_answer,
    percentile,
    prompt_sha256,
    select_sample,
    short_digest,
    strip_thinking,
    summarize,
    system_prompt,
)

# -- documents ------------------------------------------------------------------------------------------------------

# the gate documents the llm_gate role ships (tests/unit/plugins/module_utils/ -> the collection root)
DOCUMENTS_DIR = Path(__file__).resolve().parents[4] / "roles" / "llm_gate" / "files" / "documents"


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return load_documents(DOCUMENTS_DIR)


def test_shipped_documents_are_varied_and_follow_the_convention(documents):
    assert len(documents) >= 20
    counts = Counter(d["document_type"] for d in documents)
    assert counts["invoice"] >= 8 and counts["letter"] >= 6 and counts["receipt"] >= 6
    assert len({d["id"] for d in documents}) == len(documents)
    assert len({d["correspondent"] for d in documents}) == len(documents)
    for doc in documents:
        first_line = next(line for line in doc["text"].splitlines() if line.strip())
        assert first_line == doc["correspondent"], doc["id"]
        assert len(doc["text"].splitlines()) >= 10, f"{doc['id']} body too short to be realistic"


def test_shipped_document_files_have_exactly_the_documented_keys():
    for path in sorted(DOCUMENTS_DIR.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert set(data) == {"id", "document_type", "correspondent", "text"}, path.name
        assert path.stem == data["id"], path.name


def _write(tmp_path, name, data):
    (tmp_path / name).write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def test_load_documents_accepts_lists_and_normalises_type(tmp_path):
    _write(tmp_path, "a.yml", {"id": "b", "document_type": "Invoice", "correspondent": "X", "text": "X\nbody"})
    _write(
        tmp_path,
        "b.yaml",
        [
            {"id": "a", "document_type": "letter", "correspondent": "Y", "text": "Y\nbody"},
            {"id": "c", "document_type": "receipt", "correspondent": "Z", "text": "Z\nbody"},
        ],
    )
    (tmp_path / "notes.txt").write_text("ignored")
    docs = load_documents(tmp_path)
    assert [d["id"] for d in docs] == ["a", "b", "c"]
    assert docs[1]["document_type"] == "invoice"
    assert docs[0]["source"] == "b.yaml[0]"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"id": "a", "document_type": "invoice", "correspondent": "X"}, "missing or empty key(s) text"),
        ({"id": "a", "document_type": "memo", "correspondent": "X", "text": "X"}, "'memo' is not one of"),
        (["just a string"], "must be a mapping"),
    ],
)
def test_load_documents_rejects_bad_documents_naming_the_file(tmp_path, data, needle):
    _write(tmp_path, "bad.yml", data)
    with pytest.raises(GateInputError) as err:
        load_documents(tmp_path)
    assert needle in str(err.value)
    assert "bad.yml" in str(err.value)


def test_load_documents_rejects_duplicates_missing_dir_and_empty_dir(tmp_path):
    with pytest.raises(GateInputError, match="is not a directory"):
        load_documents(tmp_path / "nope")
    with pytest.raises(GateInputError, match="holds no"):
        load_documents(tmp_path)
    doc = {"id": "same", "document_type": "letter", "correspondent": "X", "text": "X\nbody"}
    _write(tmp_path, "one.yml", doc)
    _write(tmp_path, "two.yml", doc)
    with pytest.raises(GateInputError, match="duplicate document id 'same'"):
        load_documents(tmp_path)
    (tmp_path / "two.yml").write_text("id: [unclosed\n")
    with pytest.raises(GateInputError, match=r"two\.yml: not valid YAML"):
        load_documents(tmp_path)


def test_select_sample_spreads_types_and_is_deterministic(documents):
    sample = select_sample(documents, 6)
    assert [d["document_type"] for d in sample] == list(DOCUMENT_TYPES) * 2
    assert sample == select_sample(list(reversed(documents)), 6)
    assert len(select_sample(documents, None)) == len(documents)
    with pytest.raises(GateInputError, match="sample_size must be at least 1"):
        select_sample(documents, 0)
    with pytest.raises(GateInputError, match=f"larger than the {len(documents)} documents"):
        select_sample(documents, len(documents) + 1)


# -- prompt ---------------------------------------------------------------------------------------------------------


def test_messages_hold_instructions_types_keys_and_the_verbatim_text(documents):
    doc = documents[0]
    messages = build_messages(doc["text"])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == doc["text"]
    system = messages[0]["content"]
    for doc_type in DOCUMENT_TYPES:
        assert f'"{doc_type}"' in system
    for key in REQUIRED_FIELDS:
        assert f'"{key}"' in system
    assert "no code fences" in system
    assert system == system_prompt()
    assert '"memo"' in build_messages("x", ["memo"])[0]["content"]


# -- thinking -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "field", "answer", "thinking"),
    [
        ('{"a": 1}', None, '{"a": 1}', ""),
        ('<think>\nLet me see.\n</think>\n\n{"a": 1}', None, '{"a": 1}', "Let me see."),
        ('<THINK>one</THINK>{"a": 1}<think>two</think>', None, '{"a": 1}', "one\ntwo"),
        ('{"a": 1}', "reasoning in a field", '{"a": 1}', "reasoning in a field"),
        ("<think>I am still thinking when the tokens ran out", None, "", "I am still thinking when the tokens ran out"),
        ('Okay, the user wants JSON.\n</think>\n{"a": 1}', None, '{"a": 1}', "Okay, the user wants JSON."),
        ('{"a": 1}', "   ", '{"a": 1}', ""),
        (None, None, "", ""),
    ],
)
def test_strip_thinking(content, field, answer, thinking):
    assert strip_thinking(content, field) == (answer, thinking)


# -- parsing --------------------------------------------------------------------------------------------------------

VALID = {"title": "Stromrechnung", "correspondent": "Stadtwerke", "document_type": "invoice", "tags": ["strom"]}


def test_parse_answer_accepts_a_complete_object_with_whitespace():
    obj, error = parse_answer("\n  " + json.dumps(VALID) + "\n")
    assert error is None and obj == VALID


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        ("```json\n" + json.dumps(VALID) + "\n```", "Markdown code fence"),
        ("Here is the classification: " + json.dumps(VALID), "not valid JSON"),
        (json.dumps(VALID)[:-5], "not valid JSON"),
        ("", "empty answer"),
        ("[1, 2]", "JSON list, not an object"),
        (json.dumps({k: v for k, v in VALID.items() if k != "tags"}), "missing key(s): tags"),
        (json.dumps(dict(VALID, tags="strom")), "tags must be a list of strings"),
        (json.dumps(dict(VALID, title="")), "title must be a non-empty string"),
        (json.dumps(dict(VALID, document_type=None)), "document_type must be a non-empty string"),
        (json.dumps(dict(VALID, correspondent=7)), "correspondent must be a string"),
    ],
)
def test_parse_answer_is_strict(answer, needle):
    _obj, error = parse_answer(answer)
    assert error is not None and needle in error


def test_correspondent_matching():
    assert correspondent_matches("Stadtwerke Quellbrunn GmbH", "stadtwerke quellbrunn")
    assert correspondent_matches("Kanzlei Brennecke & Voss", "Kanzlei Brennecke  Voss")
    assert not correspondent_matches("Kanzlei Brennecke & Voss", "Elektro Hagedorn GmbH")
    assert not correspondent_matches("X", None)
    assert not correspondent_matches("X", "")


# -- statistics -----------------------------------------------------------------------------------------------------


def test_nearest_rank_percentile():
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert percentile(values, 50) == 5.0
    assert percentile(values, 95) == 10.0
    assert percentile(values, 90) == 9.0
    assert percentile([3.0], 95) == 3.0
    assert percentile(list(reversed(values)), 10) == 1.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 0)


def _r(**kw):
    base = {
        "valid": True,
        "correct": True,
        "correspondent_ok": True,
        "latency": 1.0,
        "timed_out": False,
        "answered": True,
        "thinking": "",
        "completion_tokens": 50,
        "generation_seconds": 2.0,
    }
    base.update(kw)
    return base


def test_summarize_counts_and_rates():
    results = [_r(latency=float(i)) for i in range(1, 9)]
    results.append(_r(valid=False, correct=False, thinking="hmm " * 200, latency=9.0))
    results.append(
        _r(
            valid=False,
            correct=False,
            answered=False,
            timed_out=True,
            latency=30.0,
            completion_tokens=None,
            generation_seconds=None,
        )
    )
    m = summarize(results)
    assert m["documents"] == 10 and m["answers"] == 9
    assert m["valid_json"] == 8 and m["valid_json_rate"] == 0.8
    assert m["accuracy"] == 0.8
    assert m["latency_p50"] == 5.0 and m["latency_p95"] == 30.0 and m["latency_max"] == 30.0
    assert m["timeouts"] == 1 and m["errors"] == 1
    assert m["completion_tokens"] == 450 and m["tokens_per_second"] == 25.0
    assert m["thinking_answers"] == 1 and len(m["thinking_sample"]) == 300


# -- gate records ---------------------------------------------------------------------------------------------------

THRESHOLDS = {"min_valid_json": 0.95, "max_p95_latency": 60.0, "min_accuracy": 0.7, "allow_thinking": False}
METRICS = {"valid_json_rate": 1.0, "accuracy": 0.9, "latency_p95": 12.0, "thinking_answers": 0, "answers": 10}


def _record(documents, correct=None, **metrics):
    options = {"api": "ollama", "json_mode": True, "disable_thinking": True, "temperature": 0.0}
    key = gate_record_key("sha256:" + "a" * 64, documents_sha256(documents), prompt_sha256(), options_sha256(options))
    correct = len(documents) if correct is None else correct
    per_document = [
        {
            "id": d["id"],
            "expected": d["document_type"],
            "got": d["document_type"] if i < correct else "letter",
            "valid": True,
            "correct": i < correct,
            "latency": 12.0,
            "thinking": False,
            "extra": 1,
        }
        for i, d in enumerate(documents)
    ]
    return gate_record(
        key,
        "qwen2.5:14b",
        "sha256:" + "a" * 64,
        documents_sha256(documents),
        prompt_sha256(),
        options,
        {**METRICS, **metrics},
        per_document,
        passed_at="2026-12-06T23:40:00Z",
        run_id="run-1",
    )


def test_record_keys_change_with_each_part_and_fit_a_configmap_key(documents):
    parts = ["sha256:" + "a" * 64, documents_sha256(documents), prompt_sha256(), options_sha256({"api": "ollama"})]
    key = gate_record_key(*parts)
    assert key == gate_record_key(*parts)  # deterministic
    assert re.fullmatch(r"gate-[0-9a-f]{40}", key)
    for i in range(4):
        other = list(parts)
        other[i] = other[i] + "x"
        assert gate_record_key(*other) != key
    # the documents' digest follows their content and order; the prompt's follows the document types
    assert documents_sha256(documents[:3]) != documents_sha256(documents[:4]) != documents_sha256(documents[::-1][:4])
    changed = [dict(documents[0], text=documents[0]["text"] + " "), *documents[1:3]]
    assert documents_sha256(changed) != documents_sha256(documents[:3])
    assert prompt_sha256(("invoice", "letter")) != prompt_sha256()
    assert options_sha256({"a": 1, "b": 2}) == options_sha256({"b": 2, "a": 1})


def test_identity_digest_and_short_digest():
    assert model_identity_digest("m", {"revision": "a"}) != model_identity_digest("m", {"revision": "b"})
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", model_identity_digest("m"))
    assert short_digest("sha256:6e4c38e1172f42fd") == "6e4c38e1172f" == short_digest("6e4c38e1172f42fd")
    assert short_digest(None) == "unknown"


def test_find_gate_record_reuses_only_a_passing_record_whose_answers_pass_todays_thresholds(documents):
    record = _record(documents[:12])
    key = record["key"]
    assert record["schema"] == 2 and record["verdict"] == "passed"
    assert record["per_document"][0] == {
        "id": documents[0]["id"],
        "expected": documents[0]["document_type"],
        "got": documents[0]["document_type"],
        "valid": True,
        "correct": True,
        "latency": 12.0,
        "thinking": False,
        "correspondent_ok": None,
    }
    found, why = find_gate_record({key: json.dumps(record)}, key, THRESHOLDS)
    assert why.startswith("the recorded gate is inconclusive"), "12 of 12 valid cannot show 95 %"
    assert "valid_json 1.00 (95 % CI 0.76 to 1.00, n=12) neither clears nor misses the minimum 0.95" in why
    lenient = dict(THRESHOLDS, min_valid_json=0.7)
    found, why = find_gate_record({key: json.dumps(record)}, key, lenient)
    assert found == record and why == ""
    assert find_gate_record({key: record}, key, THRESHOLDS, {"on_inconclusive": "pass"})[0] == record
    relative = dict(lenient, max_accuracy_drop=0.0)
    assert find_gate_record({key: record}, key, relative)[0] == record, "a reuse has no champion to compare with"
    cases = [
        ({}, "no passing gate recorded"),
        ({key: "{not json"}, "is not JSON"),
        ({key: json.dumps({**record, "schema": 1})}, "another layout"),
        ({key: json.dumps({**record, "key": "gate-other"})}, "another layout"),
        ({key: json.dumps({**record, "passed": False})}, "not a passing gate"),
        ({key: json.dumps({**record, "per_document": []})}, "no per-document answers"),
        (
            {key: json.dumps(_record(documents[:12], correct=3))},
            "the recorded gate is failed with today's thresholds: accuracy 0.25",
        ),
    ]
    for records, needle in cases:
        found, why = find_gate_record(records, key, lenient)
        assert found is None and needle in why, (records, why)


def test_find_champion_record_says_why_there_is_no_baseline(documents):
    record = _record(documents[:6])
    assert find_champion_record({record["key"]: json.dumps(record)}, record["key"]) == (record, "")
    found, why = find_champion_record({}, record["key"])
    assert found is None and why.startswith("no passing gate of the champion is recorded for these documents")


# -- gate_records_patch: the records ConfigMap keeps the newest records -----------------------------------------


def _stored(key, passed_at):
    return json.dumps({"key": key, "passed_at": passed_at})


def test_gate_records_patch_keeps_the_newest_and_deletes_the_rest():
    records = {
        "gate-old": _stored("gate-old", "2026-01-01T00:00:00Z"),
        "gate-mid": _stored("gate-mid", "2026-06-01T00:00:00Z"),
        "gate-new": _stored("gate-new", "2026-12-01T00:00:00Z"),
        "gate-bad": "not json",  # unreadable: counts as the oldest
        "other": "kept",  # not a gate record: never touched
    }
    patch = gate_records_patch(records, "gate-this", {"key": "gate-this"}, keep=3)
    assert json.loads(patch.pop("gate-this")) == {"key": "gate-this"}
    assert patch == {"gate-old": None, "gate-bad": None}  # the new one and the two newest stay


def test_gate_records_patch_rewrites_a_key_in_place_and_checks_keep():
    records = {"gate-a": _stored("gate-a", "2026-01-01T00:00:00Z")}
    assert list(gate_records_patch(records, "gate-a", {"key": "gate-a"}, keep=1)) == ["gate-a"]
    assert gate_records_patch(None, "gate-a", {}, keep=1) == {"gate-a": "{}"}
    with pytest.raises(ValueError, match="keep must be at least 1, got 0"):
        gate_records_patch(records, "gate-b", {}, keep=0)


def test_a_record_judged_with_todays_settings_is_reused_without_judging_again(documents, monkeypatch):
    import ansible_collections.homelab.inference.plugins.module_utils.gate_stats as gate_stats
    from ansible_collections.homelab.inference.plugins.module_utils.llm_gate import judged_with

    statistics = {"confidence": 0.95, "method": "wilson", "on_inconclusive": "pass"}
    record = dict(_record(documents[:12]), judged_with=judged_with(THRESHOLDS, statistics))
    stored = {record["key"]: json.dumps(record)}

    def no_statistics(*_args, **_kwargs):
        raise AssertionError("the statistics were computed again")

    monkeypatch.setattr(gate_stats, "evaluate", no_statistics)
    assert find_gate_record(stored, record["key"], THRESHOLDS, statistics) == (json.loads(stored[record["key"]]), "")
    relative = dict(THRESHOLDS, max_accuracy_drop=0.05)  # a reuse has no champion: relative thresholds do not matter
    assert find_gate_record(stored, record["key"], relative, statistics)[0] is not None
    with pytest.raises(AssertionError, match="computed again"):
        find_gate_record(stored, record["key"], dict(THRESHOLDS, min_accuracy=0.9), statistics)
