"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes strategic merge patch.

Strategic merge patch follows ``k8s.io/apimachinery/pkg/util/strategicpatch``: lists whose schema has
``x-kubernetes-patch-strategy: merge`` are merged by their ``x-kubernetes-patch-merge-key`` (containers by
``name``, ports by ``containerPort``, volumes by ``name``...), primitive lists with strategy ``merge`` are unions,
every other list is replaced. The directives that ``kubectl apply`` and helm's three-way merge emit are honoured:
``$patch: replace|delete|merge``, ``$retainKeys``, ``$setElementOrder/<field>`` and
``$deleteFromPrimitiveList/<field>``. The list metadata comes from the upstream 1.32 schema (:mod:`.schema`).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

from lab.kube import schema as k8s_schema


class PatchError(ValueError):
    """A patch that cannot be applied (bad document, failed ``test`` op, bad directive)."""


def json_merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch and return the result (inputs are not modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch with the ``jsonpatch`` library. Raises :class:`PatchError`."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, operations, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError, TypeError) as exc:
        raise PatchError(str(exc)) from exc


_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def strategic_merge_patch(original: dict, patch: dict, schema: dict | None) -> dict:
    """Apply a strategic merge patch to ``original`` with ``schema`` (the kind's definition) for list semantics.

    Returns a new object. Raises :class:`PatchError` on malformed directives.
    """
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    return _merge_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch, schema)


def _strip(value: Any, schema: dict | None) -> Any:
    """A patch value for a field absent from the original: apply it to an empty value (drops directives)."""
    if isinstance(value, dict):
        return _merge_map({}, value, schema)
    if isinstance(value, list):
        return _merge_list([], value, schema)
    return copy.deepcopy(value)


def _merge_map(original: dict, patch: dict, schema: dict | None) -> dict:
    directive = patch.get(_DIRECTIVE)
    if directive == "replace":
        return {k: _strip(v, k8s_schema.property_schema(schema, k)) for k, v in patch.items() if k != _DIRECTIVE}
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive!r} in map")
    retain = patch.get(_RETAIN)
    orders: dict[str, list] = {}
    deletes: dict[str, list] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN):
            continue
        if key.startswith(_ORDER):
            orders[key[len(_ORDER) :]] = value or []
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            deletes[key[len(_DELETE_PRIMITIVE) :]] = value or []
            continue
        prop = k8s_schema.property_schema(schema, key)
        if value is None:
            original.pop(key, None)
        elif isinstance(value, dict) and isinstance(original.get(key), dict):
            merged = _merge_map(original[key], value, prop)
            if value.get(_DIRECTIVE) == "delete":
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, dict) and value.get(_DIRECTIVE) == "delete":
            original.pop(key, None)
        elif isinstance(value, list) and isinstance(original.get(key), list):
            original[key] = _merge_list(original[key], value, prop)
        else:
            original[key] = _strip(value, prop)
    for key, values in deletes.items():
        if isinstance(original.get(key), list):
            original[key] = [item for item in original[key] if item not in values]
    for key, order in orders.items():
        if isinstance(original.get(key), list):
            original[key] = _apply_order(original[key], order, k8s_schema.property_schema(schema, key))
    if isinstance(retain, list):
        for key in list(original):
            if key not in retain:
                original.pop(key)
    return original


def _merge_list(original: list, patch: list, prop: dict | None) -> list:
    strategies, merge_key = k8s_schema.patch_meta(prop)
    item_schema = k8s_schema.items_schema(prop)
    if any(isinstance(item, dict) and item.get(_DIRECTIVE) == "replace" for item in patch):
        return [_strip(item, item_schema) for item in patch if not (isinstance(item, dict) and _DIRECTIVE in item)]
    if "merge" not in strategies:
        return [_strip(item, item_schema) for item in patch]
    if merge_key is None:
        # primitive list with merge strategy: union, keeping the original order
        result = list(original)
        for item in patch:
            if item not in result:
                result.append(copy.deepcopy(item))
        return result
    result = [copy.deepcopy(item) for item in original]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"list items merged by {merge_key!r} must be objects")
        key_value = item.get(merge_key)
        index = next(
            (i for i, cur in enumerate(result) if isinstance(cur, dict) and cur.get(merge_key) == key_value), None
        )
        if item.get(_DIRECTIVE) == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append(_strip(item, item_schema))
        else:
            result[index] = _merge_map(result[index], item, item_schema)
    return result


def _apply_order(items: list, order: list, prop: dict | None) -> list:
    _strategies, merge_key = k8s_schema.patch_meta(prop)

    def ident(item: Any) -> Any:
        if merge_key is not None and isinstance(item, dict):
            item = item.get(merge_key)
        return json.dumps(item, sort_keys=True) if isinstance(item, dict | list) else item

    positions = {ident(value): index for index, value in enumerate(order)}
    ordered = sorted((item for item in items if ident(item) in positions), key=lambda item: positions[ident(item)])
    rest = [item for item in items if ident(item) not in positions]
    return ordered + rest
