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
  - "Decides like a statistician: each rate (valid JSON, accuracy) comes with its O(confidence) interval (Wilson
    score or Clopper-Pearson, statsmodels' C(proportion_confint)); a minimum is C(passed) when the interval lies
    above it, C(failed) when it lies below, C(inconclusive) otherwise. While the verdict is inconclusive, the gate
    classifies O(batch_size) more documents, up to O(max_documents); then O(on_inconclusive) decides, and the result
    says so (RV(decided_by))."
  - "Against the model it replaces (the champion, O(champion_model)): the champion's recorded gate for the same
    documents, prompt and request options (O(records)) is the baseline; a drop of a rate is judged on Newcombe's
    interval of the difference (statsmodels' C(confint_proportions_2indep)), McNemar's test on the documents both
    answered is reported beside it, the p95 latency as a ratio. Without a recorded baseline the relative checks are
    left out and RV(baseline) says why."
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
      - The C(llm_gate) role passes its C(files/documents) directory. With O(paperless), the fallback.
    type: path
    required: true
  paperless:
    description:
      - The operator's own documents from Paperless-ngx's REST API instead of O(documents_dir), which stays the
        fallback when the API cannot be read (RV(document_source) says why).
      - Documents that have a document type O(paperless.type_map) maps to a gate class are listed (ids and types
        only), sorted by id, and C(random.Random(seed).sample) draws O(paperless.max_documents) of them; only the
        drawn ones are fetched. Their C(content) is the text, their type's class the expected answer.
      - "Upstream API: https://docs.paperless-ngx.com/api/ (C(/api/documents/), C(/api/document_types/),
        C(/api/correspondents/), token authentication, Django REST Framework paging)."
    type: dict
    suboptions:
      url:
        description: The server's root URL, for example C(https://paperless.home.lab).
        type: str
        required: true
      token:
        description: An API token (Paperless-ngx, My Profile). Never logged.
        type: str
        required: true
      type_map:
        description:
          - Paperless-ngx document type name (case-insensitive) -> gate class (C(invoice), C(letter), C(receipt)).
          - Documents of other types are left out.
        type: dict
        required: true
      max_documents:
        description: The most documents drawn.
        type: int
        default: 100
      seed:
        description: The random seed of the draw (the same seed and Paperless data give the same documents).
        type: int
        default: 0
      query:
        description: 'More filter parameters of C(/api/documents/), for example C({"tags__id__all": "3"}).'
        type: dict
        default: {}
      timeout:
        description: Seconds for each request.
        type: float
        default: 30
      validate_certs:
        description: Verify the server's TLS certificate.
        type: bool
        default: true
      ca_path:
        description: A CA bundle (PEM) to trust for the server's certificate.
        type: path
  sample_size:
    description:
      - Number of documents to send first, picked deterministically and spread over the document types. Default
        all of O(max_documents).
    type: int
  max_documents:
    description:
      - The most documents the gate classifies while its verdict is inconclusive, the first in the same
        deterministic order. Default all documents.
    type: int
  batch_size:
    description:
      - Documents classified per round after the first O(sample_size) while the verdict is inconclusive.
    type: int
    default: 5
  on_inconclusive:
    description:
      - The verdict when it is still inconclusive after O(max_documents). V(fail) fails closed; V(pass) passes and
        says so in RV(decided_by) and in its message.
    type: str
    choices: [fail, pass]
    default: fail
  confidence:
    description:
      - Confidence level (0..1, exclusive) of every interval, two-sided.
    type: float
    default: 0.95
  interval_method:
    description:
      - The interval of a rate, statsmodels' C(proportion_confint) method. V(wilson) is the Wilson score interval,
        V(beta) the exact Clopper-Pearson one (wider).
    type: str
    choices: [wilson, beta]
    default: wilson
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
      - Minimum share (0..1) of documents answered with a valid JSON object with all required fields, judged on
        its interval (see the description).
    type: float
    default: 0.95
  max_p95_latency:
    description:
      - The nearest-rank 95th percentile of the per-request latency must stay below this many seconds (a point
        estimate, reported with its sample size).
    type: float
    default: 60
  min_accuracy:
    description:
      - Minimum share (0..1) of documents whose C(document_type) matches the expected type (invalid answers count
        as wrong), judged on its interval.
    type: float
    default: 0.70
  max_accuracy_drop:
    description:
      - The most the accuracy may fall below the champion's, a fraction (V(0.05) is five points), judged on the
        interval of the difference. Omit for no check.
    type: float
  max_valid_json_drop:
    description:
      - The most the valid JSON rate may fall below the champion's, a fraction. Omit for no check.
    type: float
  max_p95_latency_ratio:
    description:
      - The most the p95 latency may be, as a multiple of the champion's (V(1.5)). Omit for no check.
    type: float
  champion_model:
    description:
      - The model the candidate would replace, as the API names it (the tier's current model). Its gate record
        for the same documents, prompt and request options (in O(records)) is the baseline of the relative checks.
    type: str
  champion_digest:
    description:
      - The champion's digest; default as for the candidate (O(model_digest)), from C(/api/tags) or
        O(champion_identity).
    type: str
  champion_identity:
    description:
      - What pins the champion's weights for O(api=openai) (its catalog entry), as O(model_identity).
    type: raw
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
      - Read with O(record=true) and O(reuse_record=true), and for the champion's baseline (O(champion_model)).
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
  - Uses the C(httpx), C(statsmodels) and C(numpy) Python libraries on the host that runs the module.
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
  description: Whether the gate passed (RV(verdict) passed, or inconclusive with O(on_inconclusive=pass)).
  returned: always
  type: bool
verdict:
  description: The verdict of the checks, C(passed), C(failed) or C(inconclusive) (after RV(documents_sent)).
  returned: when documents were classified
  type: str
decided_by:
  description:
    - C(checks) when the checks decided; C(on_inconclusive=fail) or C(on_inconclusive=pass) when the verdict was
      still inconclusive after O(max_documents).
  returned: when documents were classified
  type: str
failures:
  description:
    - One message per check failed (or inconclusive, when that fails the gate), naming the metric, the value with
      its interval and sample size, and the threshold.
  returned: always
  type: list
  elements: str
  sample:
    - "accuracy 0.40 (95 % CI 0.17 to 0.69, n=10) lies below the minimum 0.70"
    - "p95 latency 412 s (n=10) not below the maximum 60 s"
checks:
  description:
    - One entry per check, C(metric), C(kind) (C(absolute) or C(relative) to the champion), C(threshold),
      C(verdict), C(reason) and the figures (C(value), C(low), C(high), C(n); C(challenger), C(champion),
      C(champion_n) for a relative check). Rates are fractions 0..1, latencies seconds.
  returned: when documents were classified
  type: list
  elements: dict
statistics:
  description:
    - "The statistics behind the checks: C(challenger) and C(champion) (C(n), C(valid_json) and C(accuracy) with
      their intervals, C(latency_p95) with its sample size), C(paired) (McNemar's test per rate on the documents
      both answered), C(confidence), C(method)."
  returned: when documents were classified
  type: dict
document_source:
  description:
    - Where the documents came from, C(source) (C(paperless) or C(shipped)); for Paperless-ngx C(url),
      C(documents), C(candidates), C(types) (type name -> class), C(unmapped), C(seed); for a fallback C(reason).
  returned: always
  type: dict
baseline:
  description:
    - The champion's result the relative checks used, C(source) (C(recorded) or C(none)), C(model), C(digest),
      C(record_key), C(run_id), C(passed_at), C(documents); or C(source=none) and C(reason).
  returned: always
  type: dict
champion_per_document:
  description: The champion's recorded answers (RV(per_document) of its gate) the relative checks compared with.
  returned: when documents were classified
  type: list
  elements: dict
documents_sent:
  description: Documents classified, over all rounds.
  returned: when documents were classified
  type: int
rounds:
  description: One entry per round, C(documents) (classified so far) and C(verdict) after it.
  returned: when documents were classified
  type: list
  elements: dict
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
  description:
    - ConfigMap data key of the gate record for this model digest, documents (all of them, in sending order, whatever
      O(sample_size) and O(max_documents) send), prompt and request options.
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
from ansible_collections.homelab.inference.plugins.module_utils.gate_stats import (
    INCONCLUSIVE,
    PASSED,
    STATS_IMPORT_ERROR,
    evaluate,
)
from ansible_collections.homelab.inference.plugins.module_utils.llm_gate import (
    DOCUMENT_TYPES,
    GateInputError,
    build_messages,
    correspondent_matches,
    documents_sha256,
    find_champion_record,
    find_gate_record,
    format_seconds,
    gate_record,
    gate_record_key,
    judged_with,
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
from ansible_collections.homelab.inference.plugins.module_utils.paperless_client import (
    PaperlessClient,
    PaperlessError,
    sample_documents,
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


def _share_problems(params: dict) -> list[str]:
    problems = []
    for name in ("min_valid_json", "min_accuracy", "max_valid_json_drop", "max_accuracy_drop"):
        value = params.get(name)
        if value is not None and not 0.0 <= value <= 1.0:
            problems.append(f"{name} must be a share between 0 and 1 (got {value:g}), e.g. 0.95 (0.05: five points)")
    if not 0.0 < params["confidence"] < 1.0:
        problems.append(f"confidence must be between 0 and 1, exclusive (got {params['confidence']:g}), e.g. 0.95")
    if params.get("max_p95_latency_ratio") is not None and params["max_p95_latency_ratio"] <= 0:
        problems.append(f"max_p95_latency_ratio must be a positive multiple (got {params['max_p95_latency_ratio']:g})")
    if params.get("temperature") is not None and params["temperature"] < 0:
        problems.append(f"temperature must not be negative (got {params['temperature']:g})")
    return problems


def _count_problems(params: dict) -> list[str]:
    problems = [f"concurrency must be at least 1 (got {params['concurrency']})"] if params["concurrency"] < 1 else []
    if params["batch_size"] < 1:
        problems.append(f"batch_size must be at least 1 (got {params['batch_size']})")
    sample, most = params.get("sample_size"), params.get("max_documents")
    if sample is not None and sample < 1:
        problems.append(f"sample_size must be at least 1 (got {sample}); omit it to use all documents")
    if most is not None and most < 1:
        problems.append(f"max_documents must be at least 1 (got {most}); omit it to allow all documents")
    if sample is not None and most is not None and sample > most >= 1:
        problems.append(
            f"sample_size {sample} is larger than max_documents {most}; raise max_documents or lower sample_size"
        )
    return problems


def validate_params(params: dict) -> list[str]:
    """Problems with the numeric options, each naming the field and the fix."""
    problems = _share_problems(params)
    for name in ("max_p95_latency", "request_timeout", "warmup_timeout"):
        value = params[name]
        if value <= 0:
            problems.append(f"{name} must be a positive number of seconds (got {value:g})")
    return problems + _count_problems(params)


def model_digest(params: dict, backend: Backend, role: str = "model") -> tuple[str | None, str]:
    """The digest of the model under test (``role="model"``) or of the champion (``role="champion"``) and, when
    there is none, why.

    O(model_digest) (O(champion_digest)) when given; for Ollama the manifest digest C(/api/tags) lists for the
    model; for an OpenAI-compatible API (vLLM lists names only) a digest of the name and O(model_identity)
    (O(champion_identity)).
    """
    model = params["model"] if role == "model" else params["champion_model"]
    given = params.get("model_digest" if role == "model" else "champion_digest")
    if given:
        return given, ""
    if params["api"] == "openai":
        identity = params.get("model_identity" if role == "model" else "champion_identity")
        return model_identity_digest(model, identity), ""
    try:
        entry = backend.client().has_model(model)
    except OllamaError as exc:
        return None, f"cannot read the digest of {model} from /api/tags: {exc}"
    if not entry or not entry.get("digest"):
        return None, f"/api/tags lists no digest for {model}"
    digest = str(entry["digest"])
    return (digest if ":" in digest else "sha256:" + digest), ""


def record_identity(params: dict, sample: list[dict], digest: str) -> dict:
    """What a gate record is keyed by: the model digest, the documents (all of them, in sending order: a record of a
    gate that sent fewer still serves a gate that may send more, and the other way round), the prompt, the request
    options."""
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
        paperless={
            "type": "dict",
            "options": {
                "url": {"type": "str", "required": True},
                "token": {"type": "str", "required": True, "no_log": True},
                "type_map": {"type": "dict", "required": True},
                "max_documents": {"type": "int", "default": 100},
                "seed": {"type": "int", "default": 0},
                "query": {"type": "dict", "default": {}},
                "timeout": {"type": "float", "default": 30.0},
                "validate_certs": {"type": "bool", "default": True},
                "ca_path": {"type": "path"},
            },
        },
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
        max_accuracy_drop={"type": "float"},
        max_valid_json_drop={"type": "float"},
        max_p95_latency_ratio={"type": "float"},
        max_documents={"type": "int"},
        batch_size={"type": "int", "default": 5},
        on_inconclusive={"type": "str", "choices": ["fail", "pass"], "default": "fail"},
        confidence={"type": "float", "default": 0.95},
        interval_method={"type": "str", "choices": ["wilson", "beta"], "default": "wilson"},
        champion_model={"type": "str"},
        champion_digest={"type": "str"},
        champion_identity={"type": "raw"},
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


THRESHOLD_PARAMS = (
    "min_valid_json",
    "min_accuracy",
    "max_p95_latency",
    "allow_thinking",
    "max_valid_json_drop",
    "max_accuracy_drop",
    "max_p95_latency_ratio",
)
"""The module options that are thresholds of :func:`gate_stats.evaluate` (the same names)."""


def scored(results: list[dict]) -> list[dict]:
    """The per-document outcomes :func:`gate_stats.evaluate` reads: id, valid, correct, latency (s), thinking."""
    return [{k: r[k] for k in ("id", "valid", "correct", "latency", "thinking")} for r in results]


class QualityGate:
    """One gate run: check the inputs, reuse a recorded pass or warm up and classify in rounds until the checks
    decide, judge, return the result.

    Every exit goes through the module (``exit_json``/``fail_json``), as community.proxmox's module classes do.
    """

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params
        self.thresholds = {name: self.params[name] for name in THRESHOLD_PARAMS}
        self.statistics = {
            "confidence": self.params["confidence"],
            "method": self.params["interval_method"],
            "on_inconclusive": self.params["on_inconclusive"],
        }
        self.base = {
            "changed": False,
            "model": self.params["model"],
            "api": self.params["api"],
            "reused": False,
            "thresholds": self.thresholds,
            "baseline": {"source": "none", "reason": "no champion given (champion_model)"},
        }
        self.ordered: list[dict] = []  # every document, in sending order: what a gate record is keyed by
        self.pool: list[dict] = []  # the first max_documents of them: what this gate may send
        self.first = 0
        self.identity: dict | None = None
        self.backend: Backend | None = None
        self.champion_docs: list[dict] | None = None

    def run(self) -> None:
        self.check_inputs()
        self.backend = Backend(self.params)
        try:
            self.reuse_record()
            self.find_baseline()
            if self.module.check_mode and self.params["skip_in_check_mode"]:
                self.exit_skipped(f"quality gate skipped in check mode ({self.first} documents would be sent)")
            if self.params["request_timeout"] < self.params["max_p95_latency"]:
                self.module.warn(
                    f"request_timeout {self.params['request_timeout']:g} s is below max_p95_latency "
                    f"{self.params['max_p95_latency']:g} s: timed-out requests count as latency = request_timeout, "
                    "so the p95 check cannot catch them"
                )
            with probe_paused(self.params["probe_pause_file"], self.params["probe_pause_aliases"]):
                cold_start, cold_start_load = self.warm_up()
                results, evaluation, rounds = self.classify_until_decided()
        finally:
            self.backend.close()
        self.judge(metrics_of(results, cold_start, cold_start_load), results, evaluation, rounds)

    def check_inputs(self) -> None:
        """httpx, statsmodels, the numeric options and the documents, before any request."""
        if not HAS_HTTPX:
            self.module.fail_json(msg=missing_required_lib("httpx"), **self.base)
        if STATS_IMPORT_ERROR is not None:
            self.module.fail_json(
                msg=missing_required_lib("statsmodels"), exception=str(STATS_IMPORT_ERROR), **self.base
            )
        problems = validate_params(self.params)
        if problems:
            self.module.fail_json(msg="invalid options: " + "; ".join(problems), **self.base)
        try:
            documents = self.paperless_documents() or load_documents(self.params["documents_dir"])
            self.ordered = select_sample(documents, None)
            self.pool = self.ordered[: self.params.get("max_documents") or len(self.ordered)]
            self.first = len(select_sample(self.pool, self.params.get("sample_size")))
        except GateInputError as exc:
            self.module.fail_json(msg=f"invalid gate documents: {exc}", **self.base)

    def paperless_documents(self) -> list[dict]:
        """The documents drawn from Paperless-ngx (O(paperless)); [] (and RV(document_source) says why) when there is
        no such source or it cannot be read: the shipped documents stand in."""
        source = self.params.get("paperless")
        if not source:
            self.base["document_source"] = {"source": "shipped", "reason": "no Paperless-ngx source configured"}
            return []
        verify = source["ca_path"] if source["validate_certs"] and source["ca_path"] else source["validate_certs"]
        try:
            with PaperlessClient(source["url"], source["token"], source["timeout"], verify) as client:
                documents, drawn = sample_documents(
                    client, source["type_map"], DOCUMENT_TYPES, source["max_documents"], source["seed"], source["query"]
                )
        except PaperlessError as exc:
            reason = f"Paperless-ngx at {source['url']} could not be used: {exc}"
            self.module.warn(reason + "; the shipped documents stand in")
            self.base["document_source"] = {"source": "shipped", "reason": reason}
            return []
        self.base["document_source"] = dict(drawn, source="paperless", url=source["url"], documents=len(documents))
        return documents

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
        self.identity = record_identity(self.params, self.ordered, digest)
        self.base["record_key"] = self.identity["key"]
        if not self.params["reuse_record"]:
            return
        recorded, why = find_gate_record(self.params["records"], self.identity["key"], self.thresholds, self.statistics)
        if recorded is None:
            self.base["reuse_skipped_because"] = why
            self.nothing_to_reuse(why)
            return
        self.base["reused"] = True
        self.module.exit_json(
            msg=f"gate skipped: passed for {short_digest(digest)} on {recorded.get('passed_at')}",
            passed=True,
            verdict=recorded.get("verdict", PASSED),
            failures=[],
            metrics=recorded["metrics"],
            per_document=recorded.get("per_document") or [],
            record=recorded,
            **self.base,
        )

    def find_baseline(self) -> None:
        """The champion's recorded gate for the same documents, prompt and options: the relative checks' baseline."""
        champion = self.params.get("champion_model")
        if not champion:
            return
        if champion == self.params["model"]:
            self.base["baseline"] = {"source": "none", "model": champion, "reason": "the champion is the candidate"}
            return
        digest, why = model_digest(self.params, self.backend, role="champion")
        if digest is None:
            self.base["baseline"] = {"source": "none", "model": champion, "reason": why}
            return
        identity = record_identity(self.params, self.ordered, digest)
        record, why = find_champion_record(self.params["records"], identity["key"])
        if record is None:
            self.base["baseline"] = {"source": "none", "model": champion, "digest": digest, "reason": why}
            return
        self.champion_docs = record["per_document"]
        self.base["baseline"] = {
            "source": "recorded",
            "model": champion,
            "digest": digest,
            "record_key": identity["key"],
            "run_id": record.get("run_id"),
            "passed_at": record.get("passed_at"),
            "documents": len(self.champion_docs),
        }

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

    def classify(self, documents: list[dict]) -> list[dict]:
        with ThreadPoolExecutor(max_workers=self.params["concurrency"], thread_name_prefix="llm-gate") as pool:
            return list(pool.map(lambda d: classify(self.backend, d, self.params["request_timeout"]), documents))

    def evaluate(self, results: list[dict]) -> dict:
        return evaluate(
            scored(results),
            self.thresholds,
            champion_docs=self.champion_docs,
            confidence=self.statistics["confidence"],
            method=self.statistics["method"],
        )

    def classify_until_decided(self) -> tuple[list[dict], dict, list[dict]]:
        """The first O(sample_size) documents, then O(batch_size) more per round while the verdict is inconclusive
        and O(max_documents) allows; the results, the last evaluation and one entry per round."""
        results = self.classify(self.pool[: self.first])
        evaluation = self.evaluate(results)
        rounds = [{"documents": len(results), "verdict": evaluation["verdict"]}]
        while evaluation["verdict"] == INCONCLUSIVE and len(results) < len(self.pool):
            results += self.classify(self.pool[len(results) : len(results) + self.params["batch_size"]])
            evaluation = self.evaluate(results)
            rounds.append({"documents": len(results), "verdict": evaluation["verdict"]})
        return results, evaluation, rounds

    def judge(self, metrics: dict, results: list[dict], evaluation: dict, rounds: list[dict]) -> None:
        """Fail naming each check failed (or inconclusive, failing closed), else pass (with the record to store)."""
        model = self.params["model"]
        per_document = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
        verdict = evaluation["verdict"]
        failures = [c["reason"] for c in evaluation["checks"] if c["verdict"] == "failed"]
        decided_by = "checks"
        if verdict == INCONCLUSIVE:
            decided_by = f"on_inconclusive={self.params['on_inconclusive']}"
            undecided = [c["reason"] for c in evaluation["checks"] if c["verdict"] == INCONCLUSIVE]
            if self.params["on_inconclusive"] == "fail":
                failures = [f"inconclusive after {len(results)} documents (max_documents): {r}" for r in undecided]
            else:
                self.module.warn(
                    f"the gate of {model} is inconclusive after {len(results)} documents and passes because "
                    f"on_inconclusive=pass: " + "; ".join(undecided)
                )
        passed = not failures
        statistics = {k: v for k, v in evaluation.items() if k not in ("verdict", "checks")}
        result = dict(
            self.base,
            passed=passed,
            verdict=verdict,
            decided_by=decided_by,
            failures=failures,
            checks=evaluation["checks"],
            statistics=dict(statistics, on_inconclusive=self.params["on_inconclusive"]),
            documents_sent=len(results),
            rounds=rounds,
            champion_per_document=self.champion_docs or [],
            metrics=metrics,
            per_document=per_document,
        )
        if not passed:
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
                verdict=verdict,
                judged_with=judged_with(self.thresholds, self.statistics),
            )
        tps, cold_start = metrics["tokens_per_second"], metrics["cold_start"]
        self.module.exit_json(
            msg=(
                f"quality gate passed for {model} ({verdict}"
                + ("" if decided_by == "checks" else f", passed by {decided_by}")
                + f", {len(results)} documents): valid JSON {metrics['valid_json_rate']:.2f}, "
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
