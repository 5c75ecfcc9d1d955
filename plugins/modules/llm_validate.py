#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, annotations, division, print_function

DOCUMENTATION = r"""
module: llm_validate
short_description: Quality gate for a document-classification LLM endpoint (valid JSON, accuracy, latency, thinking)
description:
  - Sends the shipped gate documents as classification prompts to a model and measures what a Paperless-AI style
    consumer needs, then fails when a threshold is missed.
  - The system message holds the instructions, the allowed document types (C(invoice), C(letter), C(receipt)) and
    the required JSON keys C(title), C(correspondent), C(document_type), C(tags); the user message is the document
    text verbatim.
  - Thinking output (Ollama C(message.thinking), vLLM C(reasoning_content)/C(reasoning), inline
    C(<think>...</think>) blocks, also an unclosed C(<think>)) is removed before parsing and counted.
  - Answers are parsed strictly with C(json.loads). An answer wrapped in a Markdown code fence or surrounded by prose
    counts as invalid, because the consumer parses strictly too ("Extracted content is not valid JSON").
  - Warms the model first with one small request (own O(warmup_timeout)) and reports the cold-start time separately;
    it is not counted in the latency figures.
  - A request that times out counts as invalid and as a latency of O(request_timeout) seconds.
  - The gate is read-only. It never changes anything, so C(changed) is always false and check mode runs the gate
    too (unless O(skip_in_check_mode=true)).
  - "Upstream APIs: Ollama C(POST /api/chat) (https://github.com/ollama/ollama/blob/main/docs/api.md) and the
    OpenAI chat completions API C(POST /v1/chat/completions) as served by vLLM and LiteLLM."
version_added: "0.1.0"
author: home-lab inference project (!UNKNOWN)
extends_documentation_fragment:
  - homelab.inference.attributes
  - homelab.inference.openai_api
options:
  api:
    description:
      - V(ollama) uses the native C(/api/chat) with C(format=json) and C(think=false); O(api_url) is the server root.
      - V(openai) uses C(/chat/completions) with C(response_format={"type":"json_object"}) and, to disable thinking,
        C(chat_template_kwargs={"enable_thinking":false}) (vLLM, LiteLLM); O(api_url) ends in C(/v1).
    type: str
    choices: [ollama, openai]
    default: ollama
  model:
    description:
      - Model to test, for example C(qwen2.5:14b) (Ollama), the vLLM C(--served-model-name), or a LiteLLM alias.
    type: str
    required: true
  documents_dir:
    description:
      - Directory with the gate documents (C(*.yml) files, each C({id, document_type, correspondent, text})).
      - The C(llm_gate) role passes its C(files/documents) directory.
    type: path
    required: true
  sample_size:
    description:
      - Number of documents to send, picked deterministically and spread over the document types. Default all.
    type: int
  concurrency:
    description:
      - Maximum number of classification requests in flight at once. Keep 1 for CPU Ollama
        (C(OLLAMA_NUM_PARALLEL=1) would only queue them and inflate latency).
    type: int
    default: 1
  request_timeout:
    description:
      - Seconds allowed for each classification request. A timed-out request counts as invalid with latency equal
        to this value.
    type: float
    default: 120
  warmup:
    description:
      - Send one small request first to load the model and report its duration as C(metrics.cold_start).
    type: bool
    default: true
  warmup_timeout:
    description:
      - Seconds allowed for the warm-up request (a cold load of a 14B model on CPU took about 164 s).
    type: float
    default: 600
  json_mode:
    description:
      - Ask for JSON output (Ollama C(format=json), OpenAI C(response_format={"type":"json_object"})).
    type: bool
    default: true
  disable_thinking:
    description:
      - Ask the model not to think (Ollama C(think=false); OpenAI C(chat_template_kwargs.enable_thinking=false),
        understood by vLLM chat templates such as Qwen3's). Set V(false) against the real OpenAI API, which
        rejects unknown fields.
    type: bool
    default: true
  temperature:
    description:
      - Sampling temperature for the classification requests (0 makes the gate repeatable).
    type: float
    default: 0.0
  min_valid_json:
    description:
      - Minimum share (0..1) of documents answered with a valid JSON object with all required fields.
    type: float
    default: 0.95
  max_p95_latency:
    description:
      - The nearest-rank 95th percentile of the per-request latency must stay below this many seconds.
    type: float
    default: 60
  min_accuracy:
    description:
      - Minimum share (0..1) of documents whose C(document_type) matches the expected type (invalid answers count
        as wrong).
    type: float
    default: 0.70
  allow_thinking:
    description:
      - Accept answers that contain thinking output. By default any thinking output fails the gate (thinking models
        such as qwen3:4b timed out on CPU).
    type: bool
    default: false
  skip_in_check_mode:
    description:
      - Do not send any request in check mode (the result then has C(skipped=true)).
    type: bool
    default: false
  record:
    description:
      - Work out the gate record of this run (RV(record_key)) and, when the gate passes, return the record to store
        (RV(record)). Needs the model's digest (O(model_digest), else Ollama's C(/api/tags), else for
        O(api=openai) a digest of O(model) and O(model_identity)).
    type: bool
    default: false
  records:
    description:
      - Recorded gate results, data key -> record as JSON text (the data of the records ConfigMap).
      - Read only with O(record=true) and O(reuse_record=true).
    type: dict
    default: {}
  reuse_record:
    description:
      - With O(record=true), when O(records) holds a passing gate for the same model digest, documents, prompt and
        request options whose metrics also meet today's thresholds, return it (RV(reused=true)) without sending a
        request. The caller decides when this is safe (nothing about the tier changed in this run).
    type: bool
    default: false
  reuse_only:
    description:
      - With O(reuse_record=true), only look for a record to reuse; when there is none, return at once without
        sending a request (RV(reused=false), C(skipped=true), RV(reuse_skipped_because) says why). The upgrade's
        no-op check uses it before deciding that a tier has nothing to do.
    type: bool
    default: false
  model_digest:
    description:
      - The digest of the model under test, for example C(sha256:<64 hex digits>); default see O(record).
    type: str
  model_identity:
    description:
      - What pins the weights of a model served by an API that lists names only (vLLM), for example the model's
        catalog entry; part of the digest with O(api=openai) when O(model_digest) is not given.
    type: raw
  run_id:
    description:
      - The run that records the result (kept in RV(record)).
    type: str
  probe_pause_file:
    description:
      - The pause file of a running M(homelab.inference.llm_probe)
        (its O(homelab.inference.llm_probe#module:pause_file)). While the gate sends requests (warm-up and
        documents), the file names O(probe_pause_aliases), so the probe's requests do not queue with the gate's on
        the runtime behind them and skew its latency; the file is removed when the requests end, also on failure.
        A reused record sends nothing and pauses nothing.
    type: path
  probe_pause_aliases:
    description:
      - The aliases the probe leaves alone while the gate sends requests (see O(probe_pause_file)).
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    details: The gate changes nothing, so it also runs in check mode unless O(skip_in_check_mode=true).
  diff_mode:
    support: none
notes:
  - Uses the C(httpx) Python library on the host that runs the module.
"""

EXAMPLES = r"""
- name: Gate qwen2.5:14b on the CPU Ollama
  llm_validate:
    api: ollama
    api_url: http://ollama.ml.svc.cluster.local:11434
    model: qwen2.5:14b
    documents_dir: "{{ role_path }}/files/documents"
    request_timeout: 120
    warmup_timeout: 600
  register: gate

- name: Gate the vLLM model through its OpenAI API, 2 requests at a time
  llm_validate:
    api: openai
    api_url: http://vllm-api.ml.svc.cluster.local:8000/v1
    model: Qwen/Qwen3-8B-AWQ
    documents_dir: "{{ role_path }}/files/documents"
    concurrency: 2
    max_p95_latency: 10
"""

RETURN = r"""
passed:
  description: Whether every threshold was met.
  returned: always
  type: bool
failures:
  description: One message per threshold missed, with the measured value and the threshold.
  returned: always
  type: list
  elements: str
  sample: ["valid JSON 0.80 < 0.95", "p95 latency 412.0 s >= 60 s", "thinking output in 10/10 answers"]
metrics:
  description: Measured values. Latencies and durations in seconds, rates 0..1.
  returned: always
  type: dict
  contains:
    documents: {description: Documents sent., type: int}
    answers: {description: Responses received (timeouts and errors excluded)., type: int}
    valid_json: {description: Answers that are a JSON object with all required fields., type: int}
    valid_json_rate: {description: valid_json / documents., type: float}
    correct: {description: Answers with the expected document_type., type: int}
    accuracy: {description: correct / documents., type: float}
    correspondent_accuracy:
      description: Share of documents whose answer names the expected correspondent (informative, no threshold).
      type: float
    latency_p50: {description: Nearest-rank median latency in seconds., type: float}
    latency_p95: {description: Nearest-rank 95th percentile latency in seconds., type: float}
    latency_max: {description: Largest latency in seconds., type: float}
    latency_mean: {description: Mean latency in seconds., type: float}
    timeouts: {description: Requests that timed out., type: int}
    errors: {description: Requests without an answer (timeouts included)., type: int}
    completion_tokens: {description: Generated tokens over all answers., type: int}
    tokens_per_second:
      description:
        - "Ollama: sum(eval_count) / sum(eval_duration)."
        - "OpenAI: sum(usage.completion_tokens) / sum(request wall time)."
      type: float
    thinking_answers: {description: Answers that contained thinking output., type: int}
    thinking_sample: {description: "Start of the first thinking text, or null.", type: str}
    cold_start: {description: Wall time of the warm-up request in seconds (null without warm-up)., type: float}
    cold_start_load:
      description: Ollama's C(load_duration) of the warm-up request in seconds (null for O(api=openai)).
      type: float
    model_groups:
      description: Answers per LiteLLM model group (C(x-litellm-model-group) header); empty when absent.
      type: dict
per_document:
  description: One entry per document sent, in sending order.
  returned: always
  type: list
  elements: dict
  sample:
    - {id: invoice-01, expected: invoice, got: invoice, valid: true, correct: true, latency: 37.2, error: null,
       thinking: false, correspondent: Stadtwerke Quellbrunn GmbH, correspondent_ok: true, completion_tokens: 61,
       model_group: null}
thresholds:
  description: The thresholds applied.
  returned: always
  type: dict
model:
  description: The model tested.
  returned: always
  type: str
api:
  description: The API used.
  returned: always
  type: str
reused:
  description: The result is a passing gate recorded earlier (O(reuse_record)); no request was sent.
  returned: always
  type: bool
digest:
  description: Digest of the model under test; null when it could not be read.
  returned: when O(record=true)
  type: str
  sample: sha256:6e4c38e1172f42fdbff13edf9a7a017679fb82b0fde415a3e8b3c31c6ed4a4e4
record_key:
  description: ConfigMap data key of the gate record for this model digest, documents, prompt and request options.
  returned: when O(record=true) and the digest is known
  type: str
  sample: gate-3f1c9a0d5e2b7c4a1f8e6d3b2a0c9e8f7d6c5b4a
reuse_skipped_because:
  description: Why O(reuse_record) found no record to reuse (none, other thresholds ...).
  returned: when O(reuse_record=true) and no record was reused
  type: str
record:
  description:
    - The record of a passing gate to store under RV(record_key) (schema, key, model, digest, documents_sha256,
      prompt_sha256, options, options_sha256, passed, passed_at (UTC), run_id, metrics, per_document); or the
      record reused.
  returned: when O(record=true) and the gate passed
  type: dict
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.homelab.inference.plugins.module_utils.llm_gate import (
    GateInputError,
    build_messages,
    check_thresholds,
    correspondent_matches,
    documents_sha256,
    find_gate_record,
    format_seconds,
    gate_record,
    gate_record_key,
    load_documents,
    model_identity_digest,
    normalize_type,
    options_sha256,
    parse_answer,
    prompt_sha256,
    select_sample,
    short_digest,
    strip_thinking,
    summarize,
)
from ansible_collections.homelab.inference.plugins.module_utils.llm_probe import probe_paused
from ansible_collections.homelab.inference.plugins.module_utils.ollama_client import (
    HAS_HTTPX,
    OllamaClient,
    OllamaError,
    OllamaTimeout,
)
from ansible_collections.homelab.inference.plugins.module_utils.openai_client import (
    OpenAIClient,
    OpenAIError,
    OpenAITimeout,
    openai_api_argument_spec,
    verify_from_params,
)

WARMUP_MESSAGES = [{"role": "user", "content": "Reply with the single word OK."}]
WARMUP_MAX_TOKENS = 16


class Backend:
    """One chat call against Ollama or an OpenAI-compatible API, with one HTTP client per thread."""

    def __init__(self, params: dict):
        self.api = params["api"]
        self.model = params["model"]
        self.url = params["api_url"]
        self.api_key = params.get("api_key")
        self.verify = verify_from_params(params)
        self.json_mode = params["json_mode"]
        self.disable_thinking = params["disable_thinking"]
        self.temperature = params.get("temperature")
        self._local = threading.local()
        self._clients = []
        self._lock = threading.Lock()

    def client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.api == "ollama":
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
                client = OllamaClient(self.url, verify=self.verify, headers=headers)
            else:
                client = OpenAIClient(self.url, api_key=self.api_key, verify=self.verify)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def call(self, messages: list, timeout: float, json_mode: bool, max_tokens: int | None = None) -> dict:
        """Send one chat request; return content, thinking, token figures and timings.

        Returns:
            dict: ``content`` (str), ``thinking`` (str|None), ``completion_tokens`` (int|None),
            ``generation_seconds`` (float|None), ``load_seconds`` (float|None), ``wall`` (s), ``model_group``.

        Raises:
            OllamaError, OpenAIError: from the clients (the Timeout subclasses on timeouts).
        """
        client = self.client()
        started = time.monotonic()
        if self.api == "ollama":
            options = {}
            if self.temperature is not None:
                options["temperature"] = self.temperature
            if max_tokens:
                options["num_predict"] = max_tokens
            data = client.chat(
                self.model,
                messages,
                format="json" if json_mode else None,
                think=False if self.disable_thinking else None,
                options=options or None,
                timeout=timeout,
            )
            wall = time.monotonic() - started
            message = data.get("message") if isinstance(data.get("message"), dict) else {}
            eval_ns = data.get("eval_duration")
            load_ns = data.get("load_duration")
            return {
                "content": message.get("content") or "",
                "thinking": message.get("thinking"),
                "completion_tokens": data.get("eval_count"),
                "generation_seconds": eval_ns / 1e9 if isinstance(eval_ns, (int, float)) and eval_ns > 0 else None,
                "load_seconds": load_ns / 1e9 if isinstance(load_ns, (int, float)) else None,
                "wall": wall,
                "model_group": None,
            }
        extra = {}
        if self.temperature is not None:
            extra["temperature"] = self.temperature
        if max_tokens:
            extra["max_tokens"] = max_tokens
        if self.disable_thinking:
            extra["chat_template_kwargs"] = {"enable_thinking": False}
        data, headers = client.chat(
            self.model,
            messages,
            response_format={"type": "json_object"} if json_mode else None,
            extra_body=extra,
            timeout=timeout,
        )
        wall = time.monotonic() - started
        choices = data.get("choices") or [{}]
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        message = message if isinstance(message, dict) else {}
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return {
            "content": message.get("content") or "",
            "thinking": message.get("reasoning_content") or message.get("reasoning"),
            "completion_tokens": usage.get("completion_tokens"),
            "generation_seconds": wall,
            "load_seconds": None,
            "wall": wall,
            "model_group": headers.get("x-litellm-model-group"),
        }


def classify(backend: Backend, doc: dict, request_timeout: float) -> dict:
    """Classify one document and score the answer; never raises for API failures."""
    result = {
        "id": doc["id"],
        "expected": doc["document_type"],
        "got": None,
        "valid": False,
        "correct": False,
        "latency": None,
        "error": None,
        "thinking": False,
        "correspondent": None,
        "correspondent_ok": False,
        "completion_tokens": None,
        "model_group": None,
        # internal, removed before returning
        "_thinking_text": "",
        "_answered": False,
        "_timed_out": False,
        "_generation_seconds": None,
    }
    started = time.monotonic()
    try:
        answer = backend.call(build_messages(doc["text"]), timeout=request_timeout, json_mode=backend.json_mode)
    except (OllamaTimeout, OpenAITimeout):
        result["latency"] = round(float(request_timeout), 3)
        result["_timed_out"] = True
        result["error"] = f"timed out after {request_timeout:g} s"
        return result
    except (OllamaError, OpenAIError) as exc:
        result["latency"] = round(time.monotonic() - started, 3)
        result["error"] = str(exc)
        return result
    result["latency"] = round(answer["wall"], 3)
    result["_answered"] = True
    result["model_group"] = answer["model_group"]
    result["completion_tokens"] = answer["completion_tokens"]
    result["_generation_seconds"] = answer["generation_seconds"]
    text, thinking = strip_thinking(answer["content"], answer["thinking"])
    result["thinking"] = bool(thinking)
    result["_thinking_text"] = thinking
    obj, error = parse_answer(text)
    if isinstance(obj, dict):
        result["got"] = normalize_type(obj.get("document_type"))
        corr = obj.get("correspondent")
        result["correspondent"] = corr if isinstance(corr, str) else None
        result["correspondent_ok"] = correspondent_matches(doc["correspondent"], corr)
    result["valid"] = error is None
    result["correct"] = error is None and result["got"] == doc["document_type"]
    if error:
        result["error"] = error
    return result


def validate_params(params: dict) -> list[str]:
    """Problems with the numeric options, each naming the field and the fix."""
    problems = []
    for name in ("min_valid_json", "min_accuracy"):
        value = params[name]
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name} must be a share between 0 and 1 (got {value:g}), e.g. 0.95")
    for name in ("max_p95_latency", "request_timeout", "warmup_timeout"):
        value = params[name]
        if value <= 0:
            problems.append(f"{name} must be a positive number of seconds (got {value:g})")
    if params["concurrency"] < 1:
        problems.append(f"concurrency must be at least 1 (got {params['concurrency']})")
    if params.get("sample_size") is not None and params["sample_size"] < 1:
        problems.append(f"sample_size must be at least 1 (got {params['sample_size']}); omit it to use all documents")
    if params.get("temperature") is not None and params["temperature"] < 0:
        problems.append(f"temperature must not be negative (got {params['temperature']:g})")
    return problems


def model_digest(params: dict, backend: Backend) -> tuple[str | None, str]:
    """The digest of the model under test and, when there is none, why.

    O(model_digest) when given; for Ollama the manifest digest C(/api/tags) lists for the model; for an
    OpenAI-compatible API (vLLM lists names only) a digest of the name and O(model_identity).
    """
    if params.get("model_digest"):
        return params["model_digest"], ""
    if params["api"] == "openai":
        return model_identity_digest(params["model"], params.get("model_identity")), ""
    try:
        entry = backend.client().has_model(params["model"])
    except OllamaError as exc:
        return None, f"cannot read the model's digest from /api/tags: {exc}"
    if not entry or not entry.get("digest"):
        return None, f"/api/tags lists no digest for {params['model']}"
    digest = str(entry["digest"])
    return (digest if ":" in digest else "sha256:" + digest), ""


def record_identity(params: dict, sample: list[dict], digest: str) -> dict:
    """What a gate record is keyed by: the model digest, the documents sent, the prompt, the request options."""
    options = {
        "api": params["api"],
        "json_mode": params["json_mode"],
        "disable_thinking": params["disable_thinking"],
        "temperature": params.get("temperature"),
    }
    documents = documents_sha256(sample)
    prompt = prompt_sha256()
    return {
        "key": gate_record_key(digest, documents, prompt, options_sha256(options)),
        "documents": documents,
        "prompt": prompt,
        "options": options,
    }


def module_args() -> dict:
    """The argument spec: the OpenAI API options (doc fragment openai_api) and the gate's own."""
    argument_spec = openai_api_argument_spec(timeout=None)
    argument_spec.update(
        api={"type": "str", "choices": ["ollama", "openai"], "default": "ollama"},
        model={"type": "str", "required": True},
        documents_dir={"type": "path", "required": True},
        sample_size={"type": "int"},
        concurrency={"type": "int", "default": 1},
        request_timeout={"type": "float", "default": 120.0},
        warmup={"type": "bool", "default": True},
        warmup_timeout={"type": "float", "default": 600.0},
        json_mode={"type": "bool", "default": True},
        disable_thinking={"type": "bool", "default": True},
        temperature={"type": "float", "default": 0.0},
        min_valid_json={"type": "float", "default": 0.95},
        max_p95_latency={"type": "float", "default": 60.0},
        min_accuracy={"type": "float", "default": 0.70},
        allow_thinking={"type": "bool", "default": False},
        skip_in_check_mode={"type": "bool", "default": False},
        record={"type": "bool", "default": False},
        records={"type": "dict", "default": {}},
        reuse_record={"type": "bool", "default": False},
        reuse_only={"type": "bool", "default": False},
        model_digest={"type": "str"},
        model_identity={"type": "raw"},
        run_id={"type": "str"},
        probe_pause_file={"type": "path"},
        probe_pause_aliases={"type": "list", "elements": "str", "default": []},
    )
    return argument_spec


def metrics_of(results: list[dict], cold_start: float | None, cold_start_load: float | None) -> dict:
    """The gate's metrics (:func:`summarize`) of the classified documents, with the warm-up and model groups."""
    metrics = summarize(
        [
            {
                "valid": r["valid"],
                "correct": r["correct"],
                "correspondent_ok": r["correspondent_ok"],
                "latency": r["latency"],
                "timed_out": r["_timed_out"],
                "answered": r["_answered"],
                "thinking": r["_thinking_text"],
                "completion_tokens": r["completion_tokens"],
                "generation_seconds": r["_generation_seconds"],
            }
            for r in results
        ]
    )
    metrics["cold_start"] = cold_start
    metrics["cold_start_load"] = cold_start_load
    groups = {}
    for r in results:
        if r["model_group"]:
            groups[r["model_group"]] = groups.get(r["model_group"], 0) + 1
    metrics["model_groups"] = groups
    return metrics


class QualityGate:
    """One gate run: check the inputs, reuse a recorded pass or warm up and classify, judge, return the result.

    Every exit goes through the module (``exit_json``/``fail_json``), as community.proxmox's module classes do.
    """

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        self.thresholds = {
            "min_valid_json": self.params["min_valid_json"],
            "max_p95_latency": self.params["max_p95_latency"],
            "min_accuracy": self.params["min_accuracy"],
            "allow_thinking": self.params["allow_thinking"],
        }
        self.base = {
            "changed": False,
            "model": self.params["model"],
            "api": self.params["api"],
            "reused": False,
            "thresholds": self.thresholds,
        }
        self.sample: list[dict] = []
        self.identity: dict | None = None
        self.backend: Backend | None = None

    def run(self) -> None:
        self.check_inputs()
        self.backend = Backend(self.params)
        try:
            self.reuse_record()
            if self.module.check_mode and self.params["skip_in_check_mode"]:
                self.exit_skipped(f"quality gate skipped in check mode ({len(self.sample)} documents would be sent)")
            if self.params["request_timeout"] < self.params["max_p95_latency"]:
                self.module.warn(
                    f"request_timeout {self.params['request_timeout']:g} s is below max_p95_latency "
                    f"{self.params['max_p95_latency']:g} s: timed-out requests count as latency = request_timeout, "
                    "so the p95 check cannot catch them"
                )
            with probe_paused(self.params["probe_pause_file"], self.params["probe_pause_aliases"]):
                cold_start, cold_start_load = self.warm_up()
                with ThreadPoolExecutor(max_workers=self.params["concurrency"], thread_name_prefix="llm-gate") as pool:
                    results = list(
                        pool.map(lambda d: classify(self.backend, d, self.params["request_timeout"]), self.sample)
                    )
        finally:
            self.backend.close()
        self.judge(metrics_of(results, cold_start, cold_start_load), results)

    def check_inputs(self) -> None:
        """httpx, the numeric options and the documents, before any request."""
        if not HAS_HTTPX:
            self.module.fail_json(msg=missing_required_lib("httpx"), **self.base)
        problems = validate_params(self.params)
        if problems:
            self.module.fail_json(msg="invalid options: " + "; ".join(problems), **self.base)
        try:
            documents = load_documents(self.params["documents_dir"])
            self.sample = select_sample(documents, self.params.get("sample_size"))
        except GateInputError as exc:
            self.module.fail_json(msg=f"invalid gate documents: {exc}", **self.base)

    def reuse_record(self) -> None:
        """With O(record): key this run; with O(reuse_record), exit with a recorded pass that still holds."""
        if not self.params["record"]:
            return
        digest, why = model_digest(self.params, self.backend)
        self.base["digest"] = digest
        if digest is None:
            self.module.warn(f"the gate result cannot be recorded or reused: {why}")
            self.nothing_to_reuse(why)
            return
        self.identity = record_identity(self.params, self.sample, digest)
        self.base["record_key"] = self.identity["key"]
        if not self.params["reuse_record"]:
            return
        recorded, why = find_gate_record(self.params["records"], self.identity["key"], self.thresholds)
        if recorded is None:
            self.base["reuse_skipped_because"] = why
            self.nothing_to_reuse(why)
            return
        self.base["reused"] = True
        self.module.exit_json(
            msg=f"gate skipped: passed for {short_digest(digest)} on {recorded.get('passed_at')}",
            passed=True,
            failures=[],
            metrics=recorded["metrics"],
            per_document=recorded.get("per_document") or [],
            record=recorded,
            **self.base,
        )

    def nothing_to_reuse(self, why: str) -> None:
        """With O(reuse_only), exit without sending a request: no record can be reused, for the reason given."""
        if self.params["reuse_record"] and self.params["reuse_only"]:
            self.base["reuse_skipped_because"] = why
            self.exit_skipped(f"no recorded gate to reuse: {why}")

    def exit_skipped(self, msg: str) -> None:
        """Exit without a verdict (``passed`` null, ``skipped`` true): nothing was sent."""
        self.module.exit_json(skipped=True, passed=None, failures=[], metrics={}, per_document=[], msg=msg, **self.base)

    def warm_up(self) -> tuple[float | None, float | None]:
        """One short request that loads the model; its wall time and Ollama's load time (s), apart from the gate."""
        if not self.params["warmup"]:
            return None, None
        model, timeout = self.params["model"], self.params["warmup_timeout"]
        started = time.monotonic()
        try:
            warm = self.backend.call(WARMUP_MESSAGES, timeout=timeout, json_mode=False, max_tokens=WARMUP_MAX_TOKENS)
        except (OllamaTimeout, OpenAITimeout):
            self.module.fail_json(
                msg=f"warm-up of {model} did not finish within warmup_timeout {timeout:g} s; raise warmup_timeout "
                "or check the server (model load)",
                passed=False,
                failures=[f"warm-up timed out after {timeout:g} s"],
                metrics={"cold_start": None},
                per_document=[],
                **self.base,
            )
        except (OllamaError, OpenAIError) as exc:
            self.module.fail_json(
                msg=f"warm-up request to {model} failed: {exc}",
                passed=False,
                failures=[f"warm-up failed: {exc}"],
                metrics={"cold_start": round(time.monotonic() - started, 3)},
                per_document=[],
                status=getattr(exc, "status", None),
                **self.base,
            )
        load = warm["load_seconds"]
        return round(warm["wall"], 3), (round(load, 3) if load is not None else None)

    def judge(self, metrics: dict, results: list[dict]) -> None:
        """Fail naming each threshold missed, else pass (with the record to store, when keyed)."""
        model = self.params["model"]
        per_document = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
        failures = check_thresholds(metrics, **self.thresholds)
        result = dict(self.base, passed=not failures, failures=failures, metrics=metrics, per_document=per_document)
        if failures:
            self.module.fail_json(msg=f"quality gate failed for {model}: " + "; ".join(failures), **result)
        if self.identity is not None:
            result["record"] = gate_record(
                self.identity["key"],
                model,
                self.base["digest"],
                self.identity["documents"],
                self.identity["prompt"],
                self.identity["options"],
                metrics,
                per_document,
                passed_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                run_id=self.params.get("run_id"),
            )
        tps, cold_start = metrics["tokens_per_second"], metrics["cold_start"]
        self.module.exit_json(
            msg=(
                f"quality gate passed for {model}: valid JSON {metrics['valid_json_rate']:.2f}, "
                f"accuracy {metrics['accuracy']:.2f}, p95 latency {format_seconds(metrics['latency_p95'])} s"
                + (f", {tps:g} tokens/s" if tps is not None else "")
                + (f", cold start {format_seconds(cold_start)} s" if cold_start is not None else "")
            ),
            **result,
        )


def main():
    module = AnsibleModule(argument_spec=module_args(), supports_check_mode=True)
    QualityGate(module).run()


if __name__ == "__main__":
    main()
