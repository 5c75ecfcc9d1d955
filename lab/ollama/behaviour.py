"""How an emulated model answers a chat request; shared by the emulated Ollama and the emulated vLLM.

A request is either a document classification (there is a system prompt, a format constraint, or the last user
message is a document) or a short chat ("say OK"). A classification answer is the JSON object
``{"title", "correspondent", "document_type", "tags"}``. Everything random is drawn from
``sha256(model, purpose, text)``: the same model and document always give the same answer and latency, and over
many documents the shares of valid JSON / correct types follow the model's :class:`BehaviourProfile`.
All durations here are real-lab seconds; the servers scale them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

from lab.ollama.catalog import BehaviourProfile

DOCUMENT_TYPES = ("invoice", "receipt", "letter")

# (regex, weight) per type; each regex must match whole words (German compounds are spelt out with \w*).
_KEYWORDS: dict[str, tuple[tuple[str, int], ...]] = {
    "invoice": (
        (r"invoices?", 3),
        (r"\w*rechnung\w*", 3),
        (r"kostennote", 3),
        (r"invoice (?:no|number|#)", 2),
        (r"amount due", 2),
        (r"balance due", 2),
        (r"bill(?:ed)? to", 2),
        (r"payment terms", 2),
        (r"due date", 2),
        (r"due by", 1),
        (r"please (?:pay|remit|transfer)", 2),
        (r"wir bitten um (?:ausgleich|(?:ü|ue)berweisung|zahlung)", 3),
        (r"berechnen wir", 2),
        (r"zahlbar", 2),
        (r"zahlungsziel", 2),
        (r"f(?:ä|ae)llig", 1),
        (r"gesamtbetrag", 1),
        (r"iban", 1),
        (r"bic", 1),
        (r"vat", 1),
        (r"umsatzsteuer", 1),
        (r"net \d+ days", 1),
    ),
    "receipt": (
        (r"receipts?", 3),
        (r"quittung", 3),
        (r"kassenbon", 3),
        (r"\w*beleg", 3),
        (r"bon-nr\.?", 2),
        (r"thank you for (?:your purchase|shopping|your visit|visiting)", 3),
        (r"vielen dank f(?:ü|ue)r ihren (?:einkauf|besuch)", 3),
        (r"cashier", 2),
        (r"kassierer\w*", 2),
        (r"kasse", 1),
        (r"cash", 1),
        (r"change", 1),
        (r"r(?:ü|ue)ckgeld", 2),
        (r"bar", 1),
        (r"trinkgeld", 2),
        (r"card (?:ending|no|number)", 2),
        (r"kartenzahlung", 2),
        (r"(?:visa|mastercard|amex|debit card|ec-karte|girocard|debitkarte|kreditkarte)", 1),
        (r"total paid", 2),
        (r"amount paid", 2),
        (r"paid", 1),
        (r"bezahlt", 1),
        (r"transaction", 1),
        (r"tse", 1),
        (r"terminal", 1),
        (r"qty", 1),
        (r"summe", 1),
        (r"store", 1),
    ),
    "letter": (
        (r"dear", 3),
        (r"sincerely", 3),
        (r"(?:kind |best |warm )?regards", 2),
        (r"yours (?:faithfully|truly)", 3),
        (r"sehr geehrte[rn]?", 3),
        (r"liebe[rs]?", 1),
        (r"mit freundlichen gr(?:ü|ue)(?:ß|ss)en", 3),
        (r"to whom it may concern", 3),
        (r"we are writing", 2),
        (r"(?:i|we) would like to inform", 2),
        (r"re:", 1),
        (r"subject:", 1),
        (r"betreff:?", 1),
        (r"enclosed", 1),
    ),
}
_COMPILED = {
    doc_type: tuple(
        (re.compile(r"(?<!\w)" + pattern + r"(?!\w)", re.IGNORECASE), weight) for pattern, weight in patterns
    )
    for doc_type, patterns in _KEYWORDS.items()
}
_TAGS = {
    "invoice": ["invoice", "finance"],
    "receipt": ["receipt", "purchase"],
    "letter": ["letter", "correspondence"],
}
_YEAR = re.compile(r"\b(19[89]\d|20[0-4]\d)\b")


def draw(model: str, purpose: str, text: str) -> float:
    """A deterministic number in [0, 1) from sha256(model, purpose, text)."""
    digest = hashlib.sha256(f"{model}\x00{purpose}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(span: tuple[float, float], u: float) -> float:
    """The value at fraction ``u`` (0..1) of the range ``span`` = (min, max)."""
    return span[0] + (span[1] - span[0]) * u


def classify_text(text: str) -> str:
    """Keyword heuristic: ``invoice`` | ``receipt`` | ``letter`` for a document text (never fails).

    Keywords in the first three non-empty lines count double (a heading like "INVOICE" or "Receipt").
    Ties go to invoice, then receipt; a text without any keyword is a letter.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    head = "\n".join(lines[:3])
    scores = dict.fromkeys(DOCUMENT_TYPES, 0)
    for doc_type, patterns in _COMPILED.items():
        for regex, weight in patterns:
            if regex.search(text):
                scores[doc_type] += weight
            if regex.search(head):
                scores[doc_type] += weight
    best = max(DOCUMENT_TYPES, key=lambda t: (scores[t], -DOCUMENT_TYPES.index(t)))
    return best if scores[best] > 0 else "letter"


def correspondent_of(text: str) -> str:
    """First non-empty line of the document (at most 80 characters), ``"Unknown"`` for an empty text."""
    for line in text.splitlines():
        line = line.strip().strip("#*").strip()
        if line:
            return line[:80]
    return "Unknown"


def classification(text: str, doc_type: str | None = None) -> dict:
    """The answer object for ``text``: ``title``, ``correspondent``, ``document_type``, ``tags``."""
    doc_type = doc_type or classify_text(text)
    correspondent = correspondent_of(text)
    tags = list(_TAGS.get(doc_type, [doc_type]))
    year = _YEAR.search(text)
    if year:
        tags.append(year.group(1))
    return {
        "title": f"{doc_type.capitalize()} from {correspondent}",
        "correspondent": correspondent,
        "document_type": doc_type,
        "tags": tags,
    }


def message_text(content: object) -> str:
    """Text of a chat message ``content``: a string, or OpenAI content parts ``[{"type":"text","text":..}]``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def split_messages(messages: list[dict]) -> tuple[str, str]:
    """(system instructions, last user message) of a chat request."""
    system = "\n".join(message_text(m.get("content")) for m in messages if m.get("role") == "system")
    user = ""
    for m in messages:
        if m.get("role") == "user":
            user = message_text(m.get("content"))
    return system, user


_FLAT_SECTION = re.compile(r"^### (System|User|Assistant):\n", re.MULTILINE)


def unflatten_prompt(prompt: str) -> list[dict]:
    """Chat messages from one ``/api/generate`` prompt.

    LiteLLM's ``ollama/`` provider flattens chat messages into ``### System:`` / ``### User:`` /
    ``### Assistant:`` sections (``ollama_pt``); those become messages again, so the document is still the last
    user section. Any other prompt is one user message.
    """
    marks = list(_FLAT_SECTION.finditer(prompt))
    if not marks or marks[0].start() != 0:
        return [{"role": "user", "content": prompt}]
    messages = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(prompt)
        messages.append({"role": mark.group(1).lower(), "content": prompt[mark.end() : end].strip("\n")})
    return messages


_PROMPT_TYPES = re.compile(r'"document_type"[^\n]*?one of:?\s*((?:"[^"\n]+"\s*(?:,|or)?\s*)+)', re.IGNORECASE)


def prompt_types(system: str) -> tuple[str, ...] | None:
    """The document types a prompt allows (``"document_type": string, exactly one of: "invoice", "letter"``), or
    None when it names none."""
    match = _PROMPT_TYPES.search(system or "")
    if not match:
        return None
    types = tuple(t.lower() for t in re.findall(r'"([^"\n]+)"', match.group(1)))
    return types or None


def schema_shape(schema: object) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """What a JSON schema (Ollama ``format``, OpenAI ``response_format.json_schema.schema``) asks of the answer
    object: its property names (None: any) and the ``document_type`` enum (None: any string)."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return None, None
    properties = schema["properties"]
    enum = (
        (properties.get("document_type") or {}).get("enum")
        if isinstance(properties.get("document_type"), dict)
        else None
    )
    types = tuple(str(t).lower() for t in enum) if isinstance(enum, list) and enum else None
    return tuple(properties), types


def _shaped(obj: dict, keys: tuple[str, ...] | None) -> dict:
    """The answer with exactly the schema's properties (one the model has no value for gets an empty string)."""
    if keys is None:
        return obj
    return {key: obj.get(key, "") for key in keys}


def is_classification(system: str, user: str, constrained: bool) -> bool:
    """A request is a classification when it has instructions, a format constraint, or a document-sized text."""
    return bool(system.strip()) or constrained or len(user) >= 120 or user.count("\n") >= 2


def count_tokens(text: str) -> int:
    """Rough token count (4 characters per token, at least 1)."""
    return max(1, math.ceil(len(text) / 4))


_THOUGHTS = (
    "Okay, let me look at this document carefully.",
    "The first line looks like the sender, so that is probably the correspondent.",
    "I need to decide whether this is an invoice, a receipt or a letter.",
    "There are amounts and dates, but let me check the wording again.",
    "Wait, the instructions say to answer only with JSON, so I should be careful with the format.",
    "Let me reconsider the document type once more before answering.",
    "Hmm, the title should mention the correspondent.",
    "I think I have enough information now, but let me double-check the tags.",
)


def thinking_text(tokens: int) -> str:
    """Plausible reasoning text of about ``tokens`` tokens."""
    parts: list[str] = []
    size = 0
    i = 0
    while size < tokens * 4:
        sentence = _THOUGHTS[i % len(_THOUGHTS)]
        parts.append(sentence)
        size += len(sentence) + 1
        i += 1
    return " ".join(parts)


@dataclass
class Answer:
    """One generated answer. Durations in real-lab seconds.

    Attributes:
        content: the answer text (may start with ``<think>`` when thinking leaks inline).
        thinking: reasoning text for a separate ``thinking``/``reasoning`` field, or None.
        latency_s: total generation time on a warm model (prompt evaluation + generation), real-lab seconds.
        prompt_eval_s, eval_s: the two parts of ``latency_s``.
        prompt_tokens, completion_tokens: token counts (completion includes thinking tokens).
        kind: ``classification`` or ``simple``.
        valid: the content (without thinking) is valid JSON with every field (classification only).
        correct: the document_type is right (classification only).
    """

    content: str
    thinking: str | None
    latency_s: float
    prompt_eval_s: float
    eval_s: float
    prompt_tokens: int
    completion_tokens: int
    kind: str
    valid: bool
    correct: bool


def _broken(obj: dict, u: float) -> str:
    """Realistic broken output for a model that missed the JSON format."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    style = int(u * 3)
    if style == 0:  # ran out of tokens / stopped mid-object
        return text[: max(10, int(len(text) * 0.6))]
    if style == 1:  # chatty preamble
        return "Here is the extracted metadata for the document:\n\n" + text + "\n\nLet me know if you need more."
    partial = {k: v for k, v in obj.items() if k in ("title", "document_type")}
    return json.dumps(partial, indent=2, ensure_ascii=False)


def generate(
    profile: BehaviourProfile,
    model: str,
    messages: list[dict],
    constrained: bool,
    thinks: bool,
    thinking_inline: bool,
    schema: dict | None = None,
) -> Answer:
    """Answer a chat request deterministically.

    Args:
        profile: the model's behaviour profile.
        model: the model key used for the deterministic draws (normalized Ollama tag or HF repo id).
        messages: chat messages (``role``/``content``).
        constrained: the output is grammar-constrained JSON (Ollama ``format``, OpenAI ``response_format``).
        schema: the JSON schema of that constraint, when it is one: the answer has exactly its properties, every
            one of them (the grammar forces them), and a ``document_type`` from its enum.
        thinks: the model produces reasoning for this request.
        thinking_inline: put the reasoning into ``content`` as ``<think>...</think>`` (else into ``thinking``).

    Returns:
        Answer: content, thinking and timings in real-lab seconds.
    """
    system, user = split_messages(messages)
    kind = "classification" if is_classification(system, user, constrained) else "simple"
    key = user if user else system
    tok_s = pick(profile.tokens_per_s, draw(model, "speed", key))
    valid = correct = True
    if kind == "classification":
        truth = classify_text(user)
        keys, schema_types = schema_shape(schema)
        # the types the request allows: the schema's enum, else those the prompt names, else the usual three; a
        # document whose type is not among them cannot be answered right
        allowed = schema_types or prompt_types(system) or DOCUMENT_TYPES
        # Difficulty is a property of the document, not of the model: a hard document is hard for every model,
        # and a model with accuracy a gets the documents with difficulty < a right (as weak models fail first
        # on the ambiguous ones). Over a sample this keeps each model's share close to its profile.
        correct = draw("", "difficulty", key) < profile.doc_type_accuracy and truth in allowed
        doc_type = truth
        if not correct:
            # in the usual order first, so the usual three give the wrong answers they always gave
            ordered = [t for t in DOCUMENT_TYPES if t in allowed] + [t for t in allowed if t not in DOCUMENT_TYPES]
            others = [t for t in ordered if t != truth] or ordered
            doc_type = others[int(draw(model, "wrong-type", key) * len(others))]
        obj = classification(user, doc_type)
        u_valid = draw(model, "validity", key)
        if keys is not None:  # a schema's grammar forces every property
            content = json.dumps(_shaped(obj, keys), ensure_ascii=False)
        elif constrained:
            valid = u_valid < profile.format_complete_share
            if valid:
                content = json.dumps(obj, ensure_ascii=False)
            else:
                missing = "correspondent" if draw(model, "missing", key) < 0.5 else "tags"
                content = json.dumps({k: v for k, v in obj.items() if k != missing}, ensure_ascii=False)
        else:
            valid = u_valid < profile.json_valid_share
            content = (
                json.dumps(obj, indent=2, ensure_ascii=False) if valid else _broken(obj, draw(model, "broken", key))
            )
        latency = pick(profile.latency_s, draw(model, "latency", key))
        think_tokens = int(pick(profile.thinking_tokens, draw(model, "thinking", key)))
    else:
        content = "OK"
        latency = pick(profile.simple_latency_s, draw(model, "latency", key))
        think_tokens = int(pick(profile.thinking_tokens, draw(model, "thinking", key)) / 5)
    thinking = None
    if thinks and think_tokens > 0:
        thinking = thinking_text(think_tokens)
        if profile.thinking == "optional":  # the latency range is measured without thinking
            latency += think_tokens / tok_s
    else:
        think_tokens = 0
    completion_tokens = count_tokens(content) + think_tokens
    if thinking is not None and thinking_inline:
        # think=false ignored (qwen3 on Ollama, story 25.2): the thinking leaks. A grammar-constrained answer
        # cannot carry the <think> block in its content, so there it comes back in message.thinking.
        if not constrained:
            content = f"<think>\n{thinking}\n</think>\n\n{content}"
            thinking = None
    prompt_tokens = sum(count_tokens(message_text(m.get("content"))) + 4 for m in messages)
    eval_s = min(completion_tokens / tok_s, 0.95 * latency)
    return Answer(
        content=content,
        thinking=thinking,
        latency_s=latency,
        prompt_eval_s=latency - eval_s,
        eval_s=eval_s,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        kind=kind,
        valid=valid,
        correct=correct,
    )
