"""Label selectors (string and ``LabelSelector`` form) and field selectors, as the API server evaluates them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict], bool]


class SelectorError(ValueError):
    """A selector the API server would reject with 400 BadRequest."""


_TOKEN = re.compile(r"\s*(!=|==|=|,|\(|\)|!|[^\s!=,()]+)")


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip() == "":
                break
            raise SelectorError(f"unable to parse requirement: {text!r}")
        out.append(match.group(1))
        pos = match.end()
    return out


def parse_label_selector(text: str | None) -> list[tuple[str, str, list[str]]]:
    """Parse ``a=b,c!=d,e in (x,y),f notin (z),g,!h`` into ``(key, op, values)`` requirements.

    ``op`` is one of ``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!exists``, ``gt``, ``lt``.
    Raises :class:`SelectorError` for malformed selectors.
    """
    if not text or not text.strip():
        return []
    tokens = _tokens(text)
    reqs: list[tuple[str, str, list[str]]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            if i + 1 >= len(tokens):
                raise SelectorError(f"unable to parse requirement: {text!r}")
            reqs.append((tokens[i + 1], "!exists", []))
            i += 2
        else:
            key = tok
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ","
            if nxt in ("=", "==", "!="):
                value = tokens[i + 2] if i + 2 < len(tokens) and tokens[i + 2] != "," else ""
                reqs.append((key, "!=" if nxt == "!=" else "=", [value]))
                i += 3 if value else 2
            elif nxt in ("in", "notin"):
                if i + 2 >= len(tokens) or tokens[i + 2] != "(":
                    raise SelectorError(f"unable to parse requirement: {text!r}")
                j, values = i + 3, []
                while j < len(tokens) and tokens[j] != ")":
                    if tokens[j] != ",":
                        values.append(tokens[j])
                    j += 1
                if j >= len(tokens):
                    raise SelectorError(f"unable to parse requirement: found ')' missing in {text!r}")
                reqs.append((key, nxt, values))
                i = j + 1
            elif nxt == ",":
                reqs.append((key, "exists", []))
                i += 1
            else:
                raise SelectorError(f"unable to parse requirement: {text!r}")
        if i < len(tokens):
            if tokens[i] != ",":
                raise SelectorError(f"unable to parse requirement: {text!r}")
            i += 1
    return reqs


def _match_requirements(labels: dict, reqs: list[tuple[str, str, list[str]]]) -> bool:
    for key, op, values in reqs:
        present = key in labels
        value = labels.get(key)
        if op == "=" and not (present and value == values[0]):
            return False
        if op == "!=" and present and value == values[0]:
            return False
        if op == "in" and not (present and value in values):
            return False
        if op == "notin" and present and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
        if op in ("gt", "lt"):
            try:
                number, bound = int(value or ""), int(values[0])
            except ValueError:
                return False
            if (op == "gt" and not number > bound) or (op == "lt" and not number < bound):
                return False
    return True


def label_matcher(text: str | None) -> Matcher:
    """Matcher for a label selector string (query parameter ``labelSelector``)."""
    reqs = parse_label_selector(text)
    return lambda obj: _match_requirements((obj.get("metadata") or {}).get("labels") or {}, reqs)


def selector_requirements(selector: dict | None) -> list[tuple[str, str, list[str]]] | None:
    """Requirements of a ``LabelSelector`` (``matchLabels``/``matchExpressions``); ``None`` means match nothing."""
    if selector is None:
        return None
    reqs: list[tuple[str, str, list[str]]] = [(k, "=", [v]) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid label selector operator")
        reqs.append((expr["key"], op, list(expr.get("values") or [])))
    return reqs


def labels_match_selector(labels: dict | None, selector: dict | None) -> bool:
    """Whether ``labels`` satisfy a ``LabelSelector``; an empty selector matches everything, ``None`` nothing."""
    reqs = selector_requirements(selector)
    if reqs is None:
        return False
    return _match_requirements(labels or {}, reqs)


def selector_string(selector: dict | None) -> str:
    """A ``LabelSelector`` as the string form (``status.selector`` of a Scale)."""
    parts = []
    for key, op, values in selector_requirements(selector) or []:
        if op == "=":
            parts.append(f"{key}={values[0]}")
        elif op in ("in", "notin"):
            parts.append(f"{key} {op} ({','.join(values)})")
        elif op == "exists":
            parts.append(key)
        elif op == "!exists":
            parts.append(f"!{key}")
    return ",".join(parts)


# -- field selectors -------------------------------------------------------------------------------------------

_COMMON_FIELDS = {"metadata.name", "metadata.namespace"}
FIELDS: dict[str, set[str]] = {
    "Pod": {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    },
    "Node": {"spec.unschedulable"},
    "Event": {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    "Secret": {"type"},
    "Namespace": {"status.phase"},
    "ReplicaSet": {"status.replicas"},
    "PersistentVolumeClaim": set(),
}


def _field_value(obj: dict, path: str) -> str:
    if path == "source":
        return ((obj.get("source") or {}).get("component")) or ""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def field_matcher(text: str | None, kind: str) -> Matcher:
    """Matcher for a field selector (``spec.nodeName=n1,status.phase!=Running``) on objects of ``kind``.

    Raises :class:`SelectorError` (``field label not supported: ...``) for fields the server does not index.
    """
    if not text or not text.strip():
        return lambda obj: True
    reqs: list[tuple[str, bool, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            key, value = part.split("!=", 1)
            negate = True
        elif "==" in part:
            key, value = part.split("==", 1)
            negate = False
        elif "=" in part:
            key, value = part.split("=", 1)
            negate = False
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        key = key.strip()
        if key not in _COMMON_FIELDS and key not in FIELDS.get(kind, set()):
            raise SelectorError(f"field label not supported: {key}")
        reqs.append((key, negate, value.strip()))

    def match(obj: dict) -> bool:
        for key, negate, value in reqs:
            if (_field_value(obj, key) == value) == negate:
                return False
        return True

    return match
