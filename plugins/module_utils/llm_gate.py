# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The document-classification quality gate: documents, prompt, answer parsing, scoring, thresholds.

Pure functions without I/O except :func:`load_documents`; the ``llm_validate`` module does the HTTP calls.

The gate measures what the consumer (Paperless-AI style document classification) needs:

* the answer is ONE JSON object, parsed strictly with :func:`json.loads` after thinking output is removed. An answer
  wrapped in a Markdown code fence or surrounded by prose is INVALID: Paperless-AI-like consumers parse strictly and
  fail with "Extracted content is not valid JSON" on such answers, so the gate must count them as failures;
* the object has the keys ``title`` (non-empty string), ``correspondent`` (string), ``document_type`` (string) and
  ``tags`` (list of strings);
* ``document_type`` (compared case-insensitively, surrounding whitespace ignored) equals the expected type.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - ansible-core depends on PyYAML
    yaml = None
    HAS_YAML = False

DOCUMENT_TYPES: tuple[str, ...] = ("invoice", "letter", "receipt")
"""The document types the classifier may answer, in prompt order."""

REQUIRED_FIELDS: tuple[str, ...] = ("title", "correspondent", "document_type", "tags")
"""Keys the answer object must have."""

DOCUMENT_KEYS: tuple[str, ...] = ("id", "document_type", "correspondent", "text")
"""Keys every gate document must have."""

THINKING_SAMPLE_CHARS = 300
"""Characters of thinking text kept as a sample in the results."""

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```")

SYSTEM_PROMPT_TEMPLATE = """\
You classify scanned documents for a document management system (Paperless-ngx).
The user message is the full text of ONE document. Read it and answer with exactly one JSON object and nothing else:
no Markdown, no code fences, no explanation before or after the object.

The JSON object has exactly these keys:
- "title": string, a short descriptive title in the language of the document, at most 80 characters.
- "correspondent": string, the person or organisation that sent or issued the document (usually the letterhead
  or the name at the very top), without street address.
- "document_type": string, exactly one of: {types}.
- "tags": array of 1 to 5 short lower-case strings describing the topic (for example "strom", "insurance", "tax").

Document types:
{definitions}

Answer format example:
{{"title": "Stromrechnung Januar 2026", "correspondent": "Stadtwerke Example", "document_type": "invoice", \
"tags": ["strom", "energie"]}}"""

TYPE_DEFINITIONS: dict[str, str] = {
    "invoice": "a bill that asks for payment of an amount not yet paid (Rechnung, Invoice, Honorarnote).",
    "letter": "correspondence or a notice that does not itself ask for payment of a bill "
    "(Brief, Schreiben, Bescheid, Mitteilung, Kündigungsbestätigung, Vertragsänderung).",
    "receipt": "proof that a payment was already made (Kassenbon, Quittung, Beleg, Zahlungsbestätigung).",
}


class GateInputError(ValueError):
    """A gate document or gate parameter is unusable; the message names the file or field and the fix."""


# -- documents ------------------------------------------------------------------------------------------------------


def _check_document(doc: Any, source: str) -> dict:
    if not isinstance(doc, dict):
        raise GateInputError(f"{source}: a document must be a mapping with keys {', '.join(DOCUMENT_KEYS)}")
    missing = [key for key in DOCUMENT_KEYS if doc.get(key) in (None, "")]
    if missing:
        raise GateInputError(
            f"{source}: missing or empty key(s) {', '.join(missing)}; every document needs {', '.join(DOCUMENT_KEYS)}"
        )
    doc_type = str(doc["document_type"]).strip().lower()
    if doc_type not in DOCUMENT_TYPES:
        raise GateInputError(
            f"{source}: document_type {doc['document_type']!r} is not one of {', '.join(DOCUMENT_TYPES)}"
        )
    if not isinstance(doc["text"], str) or not doc["text"].strip():
        raise GateInputError(f"{source}: text must be a non-empty string")
    return {
        "id": str(doc["id"]),
        "document_type": doc_type,
        "correspondent": str(doc["correspondent"]),
        "text": doc["text"],
        "source": source,
    }


def load_documents(directory: str | Path) -> list[dict]:
    """Load the gate documents from the ``*.yml``/``*.yaml`` files of a directory (not recursive).

    A file holds one document (a mapping) or a list of documents, each ``{id, document_type, correspondent,
    text}``; ``document_type`` is one of :data:`DOCUMENT_TYPES`. By convention the first non-empty line of
    ``text`` is the correspondent (the lab twin's emulated models rely on it).

    Args:
        directory (str | Path): directory with the document files.

    Returns:
        list[dict]: documents sorted by ``id``, each with ``id`` (str), ``document_type`` (lower-case str),
        ``correspondent`` (str), ``text`` (str, verbatim) and ``source`` (file name).

    Raises:
        GateInputError: the directory does not exist or holds no document, a file is not valid YAML, a document
            misses a key or has an unknown type, or two documents share an id.
    """
    if not HAS_YAML:  # pragma: no cover
        raise GateInputError("PyYAML is required to load the gate documents")
    path = Path(directory)
    if not path.is_dir():
        raise GateInputError(
            f"documents_dir {str(path)!r} is not a directory; point it at the gate documents "
            "(roles/llm_gate/files/documents)"
        )
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".yml", ".yaml"))
    documents: list[dict] = []
    seen: dict[str, str] = {}
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise GateInputError(f"{file.name}: not valid YAML: {exc}") from exc
        if data is None:
            continue
        items = data if isinstance(data, list) else [data]
        for index, item in enumerate(items):
            source = file.name if len(items) == 1 else f"{file.name}[{index}]"
            doc = _check_document(item, source)
            if doc["id"] in seen:
                raise GateInputError(f"{source}: duplicate document id {doc['id']!r} (also in {seen[doc['id']]})")
            seen[doc["id"]] = source
            documents.append(doc)
    if not documents:
        raise GateInputError(f"documents_dir {str(path)!r} holds no *.yml/*.yaml gate documents")
    documents.sort(key=lambda d: d["id"])
    return documents


def select_sample(documents: list[dict], sample_size: int | None) -> list[dict]:
    """Pick ``sample_size`` documents deterministically, spread over the document types.

    The documents (sorted by id) are interleaved round-robin by type in :data:`DOCUMENT_TYPES` order
    (invoice, letter, receipt, invoice, ...) and the first ``sample_size`` are taken, so a small sample still
    covers every type. The same inputs always give the same sample.

    Args:
        documents (list[dict]): as returned by :func:`load_documents`.
        sample_size (int | None): number of documents; None means all.

    Returns:
        list[dict]: the selected documents, in interleaved order.

    Raises:
        GateInputError: ``sample_size`` < 1 or larger than the number of documents.
    """
    if sample_size is None:
        sample_size = len(documents)
    if sample_size < 1:
        raise GateInputError(f"sample_size must be at least 1 (got {sample_size}); omit it to use all documents")
    if sample_size > len(documents):
        raise GateInputError(
            f"sample_size {sample_size} is larger than the {len(documents)} documents available; "
            "lower it or omit it to use all documents"
        )
    by_type: dict[str, list[dict]] = {t: [] for t in DOCUMENT_TYPES}
    for doc in sorted(documents, key=lambda d: d["id"]):
        by_type[doc["document_type"]].append(doc)
    interleaved: list[dict] = []
    for index in range(max((len(v) for v in by_type.values()), default=0)):
        for doc_type in DOCUMENT_TYPES:
            if index < len(by_type[doc_type]):
                interleaved.append(by_type[doc_type][index])
    return interleaved[:sample_size]


# -- prompt ---------------------------------------------------------------------------------------------------------


def system_prompt(document_types: tuple[str, ...] | list[str] = DOCUMENT_TYPES) -> str:
    """The system message: instructions, allowed types with definitions, required JSON keys, an example."""
    types = ", ".join(f'"{t}"' for t in document_types)
    definitions = "\n".join(f"- {t}: {TYPE_DEFINITIONS.get(t, t)}" for t in document_types)
    return SYSTEM_PROMPT_TEMPLATE.format(types=types, definitions=definitions)


def build_messages(text: str, document_types: tuple[str, ...] | list[str] = DOCUMENT_TYPES) -> list[dict]:
    """The chat messages for one classification: the system instructions and the document text verbatim.

    Args:
        text (str): the document text; sent unchanged as the user message.
        document_types (tuple[str, ...] | list[str]): allowed ``document_type`` values.

    Returns:
        list[dict]: ``[{"role": "system", "content": ...}, {"role": "user", "content": text}]``.
    """
    return [
        {"role": "system", "content": system_prompt(document_types)},
        {"role": "user", "content": text},
    ]


# -- answers --------------------------------------------------------------------------------------------------------


def strip_thinking(content: str | None, thinking: str | None = None) -> tuple[str, str]:
    """Separate thinking output from the answer.

    Thinking comes as a separate field (Ollama ``message.thinking``, vLLM ``reasoning_content``/``reasoning``,
    passed as ``thinking``) or inline in the content: ``<think>...</think>`` blocks (any number, any case), an
    unclosed ``<think>`` (everything after it is thinking: the model ran out of tokens or time while thinking),
    or a ``</think>`` without an opening tag (Qwen3 templates put ``<think>`` into the prompt, so the output starts
    inside the thinking block: everything before it is thinking).

    Args:
        content (str | None): the message content.
        thinking (str | None): the separate thinking field, if any.

    Returns:
        tuple[str, str]: (answer without thinking, stripped of surrounding whitespace; all thinking text joined
        by newlines, empty when there was none).
    """
    parts: list[str] = []
    if thinking and thinking.strip():
        parts.append(thinking.strip())
    text = content or ""

    def _collect(match: re.Match) -> str:
        parts.append(match.group(1).strip())
        return ""

    text = _THINK_BLOCK.sub(_collect, text)
    close = _THINK_CLOSE.search(text)
    if close and not _THINK_OPEN.search(text[: close.start()]):
        parts.append(text[: close.start()].strip() or "(empty thinking block)")
        text = text[close.end() :]
    opening = _THINK_OPEN.search(text)
    if opening:
        parts.append(text[opening.end() :].strip() or "(unclosed thinking block)")
        text = text[: opening.start()]
    return text.strip(), "\n".join(p for p in parts if p)


def parse_answer(answer: str) -> tuple[dict | None, str | None]:
    """Parse and check one answer (thinking already stripped) strictly.

    Args:
        answer (str): the answer text.

    Returns:
        tuple[dict | None, str | None]: (the object, None) when it is a JSON object with all
        :data:`REQUIRED_FIELDS` of the right types; else (the object or None, a reason such as
        ``"answer is wrapped in a Markdown code fence"`` or ``"missing key(s): tags"``).
    """
    if not answer or not answer.strip():
        return None, "empty answer"
    try:
        obj = json.loads(answer)
    except ValueError as exc:
        if _FENCE.match(answer):
            return None, "answer is wrapped in a Markdown code fence (strict consumers reject it)"
        return None, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if not isinstance(obj, dict):
        return None, f"answer is a JSON {type(obj).__name__}, not an object"
    missing = [key for key in REQUIRED_FIELDS if key not in obj]
    if missing:
        return obj, f"missing key(s): {', '.join(missing)}"
    problems = [problem for key, (ok, problem) in _FIELD_CHECKS.items() if not ok(obj[key])]
    return obj, "; ".join(problems) if problems else None


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


# field -> (check of its value, what a failing value is told)
_FIELD_CHECKS = {
    "title": (_text, "title must be a non-empty string"),
    "correspondent": (lambda v: isinstance(v, str), "correspondent must be a string"),
    "document_type": (_text, "document_type must be a non-empty string"),
    "tags": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "tags must be a list of strings"),
}


def normalize_type(value: Any) -> str | None:
    """``document_type`` as compared: stripped, lower-case; None for a non-string."""
    return value.strip().lower() if isinstance(value, str) else None


def _norm_name(value: str) -> str:
    return re.sub(r"[\W_]+", " ", value.casefold()).strip()


def correspondent_matches(expected: str, got: Any) -> bool:
    """True when the answered correspondent names the expected one: equal after case folding and collapsing
    punctuation/whitespace, or one contains the other (``"Stadtwerke Quellbrunn"`` matches
    ``"Stadtwerke Quellbrunn GmbH"``)."""
    if not isinstance(got, str) or not got.strip():
        return False
    a, b = _norm_name(expected), _norm_name(got)
    return bool(a and b) and (a == b or a in b or b in a)


# -- statistics -----------------------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``p`` percent of the values at or below it.

    Args:
        values (list[float]): samples (e.g. latencies in seconds); need not be sorted.
        p (float): percentile in (0, 100].

    Returns:
        float | None: the value at rank ``ceil(p / 100 * n)`` of the sorted values; None for no values.

    Raises:
        ValueError: ``p`` outside (0, 100].
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarize(results: list[dict]) -> dict:
    """Aggregate per-document results into the gate metrics.

    Args:
        results (list[dict]): one per document with ``valid`` (bool), ``correct`` (bool), ``correspondent_ok``
            (bool), ``latency`` (seconds; a timed-out request counts as the timeout), ``timed_out`` (bool),
            ``error`` (str | None), ``answered`` (bool: a response arrived), ``thinking`` (str: thinking text or
            empty), ``completion_tokens`` (int | None) and ``generation_seconds`` (float | None: Ollama
            ``eval_duration`` or the OpenAI request's wall time, seconds).

    Returns:
        dict: ``documents``, ``answers`` (responses received), ``valid_json`` (count), ``valid_json_rate``
        (0..1 of all documents), ``correct`` (count), ``accuracy`` (0..1 of all documents; an invalid answer counts
        as wrong), ``correspondent_accuracy`` (0..1, informative), ``latency_p50``/``latency_p95``/``latency_max``/
        ``latency_mean`` (seconds, nearest rank, over all requests), ``timeouts``, ``errors`` (requests without an
        answer, timeouts included), ``completion_tokens`` (sum), ``tokens_per_second`` (sum of tokens / sum of
        generation seconds, None when unknown), ``thinking_answers`` (answers with thinking output),
        ``thinking_sample`` (first :data:`THINKING_SAMPLE_CHARS` characters of the first thinking text, or None).
    """
    n = len(results)
    latencies = [float(r["latency"]) for r in results if r.get("latency") is not None]
    valid = sum(1 for r in results if r.get("valid"))
    correct = sum(1 for r in results if r.get("correct"))
    corr_ok = sum(1 for r in results if r.get("correspondent_ok"))
    tokens = [r for r in results if r.get("completion_tokens") is not None and r.get("generation_seconds")]
    token_sum = sum(int(r["completion_tokens"]) for r in tokens)
    seconds = sum(float(r["generation_seconds"]) for r in tokens)
    thinking = [r["thinking"] for r in results if r.get("thinking")]
    return {
        "documents": n,
        "answers": sum(1 for r in results if r.get("answered")),
        "valid_json": valid,
        "valid_json_rate": round(valid / n, 4) if n else 0.0,
        "correct": correct,
        "accuracy": round(correct / n, 4) if n else 0.0,
        "correspondent_accuracy": round(corr_ok / n, 4) if n else 0.0,
        "latency_p50": _round(percentile(latencies, 50)),
        "latency_p95": _round(percentile(latencies, 95)),
        "latency_max": _round(max(latencies) if latencies else None),
        "latency_mean": _round(sum(latencies) / len(latencies) if latencies else None),
        "timeouts": sum(1 for r in results if r.get("timed_out")),
        "errors": sum(1 for r in results if not r.get("answered")),
        "completion_tokens": token_sum,
        "tokens_per_second": round(token_sum / seconds, 2) if seconds > 0 else None,
        "thinking_answers": len(thinking),
        "thinking_sample": thinking[0][:THINKING_SAMPLE_CHARS] if thinking else None,
    }


def format_seconds(value: float) -> str:
    """Seconds for messages: one decimal from 10 s (``412.0``), two from 1 s (``4.25``), three below (``0.412``)."""
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


# -- gate records ---------------------------------------------------------------------------------------------------
# A passing gate is recorded in the cluster (a ConfigMap of the tier's namespace, one data key per record) so that an
# upgrade to the model a tier already serves can skip the gate, and so that a later gate has the model it replaces as
# a baseline. A record answers "this exact model passed this exact test": it is keyed by the model's digest, the
# documents sent, the prompt and the request options, and holds the metrics, so a reuse can apply today's
# thresholds to them.

GATE_RECORD_SCHEMA = 2
"""Version of the record layout; a record of another version is never reused. 2: keyed by all the documents (not
only those sent), with the verdict; reuse judges the per-document answers with today's thresholds."""

GATE_RECORD_KEY_PREFIX = "gate-"
"""ConfigMap data keys of gate records: ``gate-`` and 40 hex digits (a ConfigMap key allows ``[-._a-zA-Z0-9]``)."""


def _sha256_json(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON: sorted keys, no whitespace, UTF-8."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def documents_sha256(documents: list[dict]) -> str:
    """Digest of documents in sending order (the gate's: all of them): id, expected type, correspondent and text."""
    return _sha256_json([[d["id"], d["document_type"], d["correspondent"], d["text"]] for d in documents])


def prompt_sha256(document_types: tuple[str, ...] | list[str] = DOCUMENT_TYPES) -> str:
    """Digest of the prompt: the system message and the shape of the messages around a document's text."""
    return _sha256_json(build_messages("\x00document\x00", document_types))


def options_sha256(options: dict) -> str:
    """Digest of the request options that change the answers (API, JSON mode, thinking switch, temperature)."""
    return _sha256_json(options)


def model_identity_digest(model: str, identity: Any = None) -> str:
    """A digest for a model whose API names no digest (vLLM's ``/v1/models`` lists names only).

    Args:
        model (str): the served model name.
        identity (Any): what pins the weights, e.g. the catalog entry (repository, revision, quantization).

    Returns:
        str: ``sha256:`` and 64 hex digits of the name and the identity as canonical JSON.
    """
    return "sha256:" + _sha256_json({"model": model, "identity": identity})


def short_digest(digest: str | None) -> str:
    """The first 12 hex digits of a digest (``sha256:`` prefix dropped), as ``docker images`` shows them."""
    if not digest:
        return "unknown"
    return digest.split(":", 1)[-1][:12]


def gate_record_key(model_digest: str, documents_hash: str, prompt_hash: str, options_hash: str) -> str:
    """The ConfigMap data key of a gate record: ``gate-`` and 40 hex digits of the four digests."""
    joined = "\x00".join([model_digest, documents_hash, prompt_hash, options_hash])
    return GATE_RECORD_KEY_PREFIX + hashlib.sha256(joined.encode("utf-8")).hexdigest()[:40]


def gate_record(
    key: str,
    model: str,
    model_digest: str,
    documents_hash: str,
    prompt_hash: str,
    options: dict,
    metrics: dict,
    per_document: list[dict],
    passed_at: str,
    run_id: str | None = None,
    verdict: str = "passed",
    judged_with: dict | None = None,
) -> dict:
    """A gate record as stored (JSON) under ``key``: what was tested, how, when, and what it measured.

    ``per_document`` keeps each answer's id, expected and given type, validity and latency (seconds), so a later
    gate can compare a candidate with this model document by document.
    """
    keep = ("id", "expected", "got", "valid", "correct", "latency", "thinking", "correspondent_ok")
    return {
        "schema": GATE_RECORD_SCHEMA,
        "key": key,
        "model": model,
        "digest": model_digest,
        "documents_sha256": documents_hash,
        "prompt_sha256": prompt_hash,
        "options": options,
        "options_sha256": options_sha256(options),
        "passed": True,
        "verdict": verdict,
        "judged_with": judged_with,
        "passed_at": passed_at,
        "run_id": run_id,
        "metrics": metrics,
        "per_document": [{k: doc.get(k) for k in keep} for doc in per_document],
    }


def gate_records_patch(records: dict | None, key: str, record: dict, keep: int = 50) -> dict:
    """ConfigMap data that stores one gate record and drops the oldest records beyond ``keep``.

    A ConfigMap holds at most 1 MiB and a record with its per-document answers a few KiB, so the records of models
    long gone are dropped, oldest ``passed_at`` first (an unreadable record counts as oldest). The result is for a
    merge patch: a key whose value is None is deleted.

    Args:
        records (dict | None): the ConfigMap's data now, data key -> record as JSON text.
        key (str): the data key of the new record; record (dict): the record to store.
        keep (int): how many records stay, the new one included (at least 1).

    Returns:
        dict: data key -> JSON text for the new record, None for each record dropped.

    Raises:
        ValueError: ``keep`` is below 1.
    """
    if int(keep) < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")

    def passed_at(raw: Any) -> str:
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else raw
            return str(parsed.get("passed_at") or "")
        except (ValueError, AttributeError):
            return ""

    others = sorted(
        (k for k in (records or {}) if k != key and k.startswith(GATE_RECORD_KEY_PREFIX)),
        key=lambda k: (passed_at(records[k]), k),
        reverse=True,
    )
    patch: dict = {key: json.dumps(record, sort_keys=True)}
    patch.update({k: None for k in others[int(keep) - 1 :]})
    return patch


def _parse_record(records: dict | None, key: str) -> tuple[dict | None, str]:
    """The passing gate record under ``key`` in a recent layout, and why not."""
    raw = (records or {}).get(key)
    if raw is None:
        return None, "no passing gate recorded for this model digest, documents, prompt and request options"
    try:
        record = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return None, f"gate record {key} is not JSON"
    if not isinstance(record, dict) or record.get("schema") != GATE_RECORD_SCHEMA or record.get("key") != key:
        return None, f"gate record {key} has another layout (schema {GATE_RECORD_SCHEMA} expected)"
    if record.get("passed") is not True or not isinstance(record.get("metrics"), dict):
        return None, f"gate record {key} is not a passing gate"
    per_document = record.get("per_document")
    if not isinstance(per_document, list) or not per_document or not all(isinstance(d, dict) for d in per_document):
        return None, f"gate record {key} has no per-document answers"
    return record, ""


def find_champion_record(records: dict | None, key: str) -> tuple[dict | None, str]:
    """The champion's recorded passing gate under ``key`` (its digest with the candidate's documents, prompt and
    request options): the baseline of the relative checks; or None and why there is none."""
    record, why = _parse_record(records, key)
    if record is None and why.startswith("no passing gate recorded"):
        why = (
            "no passing gate of the champion is recorded for these documents, prompt and request options (the run "
            "that installed it predates them)"
        )
    return record, why


def judged_with(thresholds: dict, statistics: dict) -> dict:
    """What a gate's verdict depends on besides its answers: the absolute thresholds and ``confidence``, ``method``
    and ``on_inconclusive``; a record keeps it, so a reuse under the same settings needs no statistics."""
    absolute = {k: v for k, v in sorted(thresholds.items()) if not k.endswith(("_drop", "_ratio"))}
    return {
        "thresholds": absolute,
        **{k: statistics.get(k) for k in ("confidence", "method", "on_inconclusive")},
    }


def find_gate_record(
    records: dict | None, key: str, thresholds: dict, statistics: dict | None = None
) -> tuple[dict | None, str]:
    """The recorded passing gate under ``key`` whose answers also pass today's absolute thresholds, and why one is
    not reused.

    Args:
        records (dict | None): ConfigMap data, data key -> record as JSON text (or already parsed).
        key (str): :func:`gate_record_key` of the model, documents, prompt and options under test.
        thresholds (dict): ``gate_stats.evaluate`` thresholds as configured now (the relative ones are not applied:
            a reuse has no other model to compare with).
        statistics (dict | None): ``confidence``, ``method`` and ``on_inconclusive`` (``fail`` or ``pass``) as
            configured now; default 0.95, Wilson, fail.

    Returns:
        tuple[dict | None, str]: the record and ``""``; or None and the reason (no record, unreadable, another
        schema, not passed, or the checks its answers fail today).
    """
    # imported here: statsmodels takes a while to import, and the filters that import this file never need it
    from ansible_collections.homelab.inference.plugins.module_utils.gate_stats import (
        INCONCLUSIVE,
        PASSED,
        evaluate,
    )

    record, why = _parse_record(records, key)
    if record is None:
        return None, why
    statistics = dict({"confidence": 0.95, "method": "wilson", "on_inconclusive": "fail"}, **(statistics or {}))
    absolute = {k: v for k, v in thresholds.items() if not k.endswith(("_drop", "_ratio"))}
    if record.get("judged_with") == judged_with(absolute, statistics):
        # judged with today's absolute thresholds and statistics when it passed: it still passes, and no
        # statistics need importing (statsmodels costs seconds of CPU)
        return record, ""
    try:
        evaluation = evaluate(
            record["per_document"], absolute, confidence=statistics["confidence"], method=statistics["method"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"gate record {key} cannot be judged again: {exc}"
    verdict = evaluation["verdict"]
    if verdict == PASSED or (verdict == INCONCLUSIVE and statistics["on_inconclusive"] == "pass"):
        return record, ""
    reasons = [c["reason"] for c in evaluation["checks"] if c["verdict"] == verdict]
    return None, f"the recorded gate is {verdict} with today's thresholds: " + "; ".join(reasons)
