# -*- coding: utf-8 -*-
# Copyright: contributors to this repository
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the inference tier: model tags and the memory a model needs.

The memory formula (used for models that the catalog does not size, and documented in README.md):

* ``run_gib      = size_gb * 1.2 + 1``            weights plus KV cache and runtime overhead
* ``memory_limit = next power of two GiB >= run_gib`` (at least 2Gi)
* ``memory_request = max(2Gi, memory_limit / 4)``
* ``lxc_memory_mib = (memory_limit_gib + 4) * 1024`` headroom for the OS, k3s-agent and page cache

It reproduces the operator's numbers: phi4-mini (2.5 GB) -> 4Gi limit, 2Gi request, 8 GB LXC (story 25.2);
qwen2.5:14b (9 GB) -> 16Gi limit, 4Gi request, 20 GB LXC (story 12.8).
"""

from __future__ import annotations

import json
import math
import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.homelab.inference.plugins.module_utils.llm_gate import gate_records_patch
from ansible_collections.homelab.inference.plugins.module_utils.model_names import normalize_name

DOCUMENTATION = r"""
name: inference
short_description: Model tag and sizing filters for the inference tier
description:
  - C(ollama_tag) normalises an Ollama model name (C(phi4-mini) -> C(phi4-mini:latest)).
  - C(model_requirements) returns the memory a model needs from its catalog entry or its size on disk.
  - C(model_name_problem) says why a name is not a valid Ollama model name or Hugging Face model id (or "").
  - C(litellm_routes) maps each alias of a LiteLLM config to the model it routes to.
  - C(registry_manifest_path) gives the Ollama registry v2 manifest path of a model tag.
  - C(quantity_mib) converts a Kubernetes quantity (C(20709376Ki), C(16Gi)) to MiB.
  - C(upgrade_input_problem) says why the C(tier) and C(model) of an upgrade are bad input (or "").
  - C(canary_problem) says why the inventory's C(inference_canary) cannot serve an upgrade (or "").
  - C(canary_memory_problem) says why a canary would thrash the runtime (both models do not fit at once), or "".
  - C(lxc_plan) works out the LXC size of a tier (grow, same, shrink, kept larger).
  - C(tier_plan) plans one tier from what preflight read (checks, notes and the plan entry).
  - C(shown) quotes a value for a message, at most 80 characters.
  - C(node_states) keeps what a restore needs of the tiers' Nodes (cordoned, Ready).
  - C(release_differs) says whether a Helm release is not what a record says it was.
  - C(runtime_problem) names why a tier's runtime does not answer (cordoned node, Pending Pod, ...).
  - C(node_problems) names the nodes that are cordoned, not Ready or missing.
  - C(state_drift) lists how the state now differs from what the last finished run left.
  - C(consumer_data) gives the keys a consumer's ConfigMap gets (model, and the tier's URL when asked).
  - C(consumer_objects) gives the k8s_objects_info reads of the consumers' ConfigMaps.
  - C(consumer_changes) lists what the consumers role would change, from C(consumer_reads)' output.
  - C(consumer_reads) pairs each consumer's ConfigMap read with the data and labels it would get.
  - C(gate_records_patch) stores a gate record and drops the oldest records beyond a count (a merge patch).
  - C(upgrade_changes) lists what an upgrade would still change (empty when the tier is as requested).
"""

GIB = 2**30


def ollama_tag(name):
    """``"phi4-mini"`` -> ``"phi4-mini:latest"``; names with a tag are returned unchanged.

    Raises AnsibleFilterError for an empty name.
    """
    try:
        return normalize_name(str(name or ""))
    except ValueError:
        raise AnsibleFilterError("ollama_tag: empty model name; pass e.g. model=qwen2.5:14b") from None


# Ollama's model name grammar (ollama/ollama types/model/name.go): [host/][namespace/]model[:tag], each part
# starting with a letter, digit or underscore, then letters, digits, "_", "-" or "." (no "." in a namespace; ":"
# only in the host), at most 80 characters (350 for the host).
_OLLAMA_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_OLLAMA_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_OLLAMA_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")
# Hugging Face repository ids (what vLLM's --model takes): [owner/]name, letters, digits, "-", "_", ".", at most
# 96 characters each, no "--" or ".." (huggingface_hub validate_repo_id)
_HF_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


SHOWN_MAX = 80


def shown(value, limit=SHOWN_MAX):
    """``value`` as a message quotes it: its ``repr`` for strings, at most ``limit`` (80) characters, the cut
    marked with ``...``. Bad input can be long; a message repeats only its start."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value):
    """The YAML/JSON word for a value's type, as an operator typed it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "null"
    return type(value).__name__


def model_name_problem(name, runtime="ollama"):
    """Why ``name`` is not a valid model name for ``runtime`` (``ollama`` or ``vllm``), or ``""`` when it is.

    Checked before any request is made with the name, so a malformed name never reaches a URL or a shell.
    Messages quote at most 80 characters of the name or of a part of it.
    """
    if name is not None and not isinstance(name, str):
        return f"the model name must be a string such as qwen2.5:14b, not {_kind(name)} ({shown(name)})"
    name = str(name if name is not None else "")
    if not name.strip():
        return "the model name is empty"
    return _vllm_name_problem(name) if runtime == "vllm" else _ollama_name_problem(name)


def _vllm_name_problem(name):
    parts = name.split("/")
    if len(parts) > 2 or not all(_HF_PART.fullmatch(p) for p in parts) or "--" in name or ".." in name:
        return (
            f"{shown(name)} is not a Hugging Face model id: use owner/name with letters, digits, '-', '_' and '.' "
            "(e.g. Qwen/Qwen3-8B-AWQ)"
        )
    return ""


def _ollama_name_problem(name):
    base, _colon, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    parts = base.split("/")
    if len(parts) > 3:
        return f"{shown(name)} is not an Ollama model name: at most host/namespace/model:tag"
    checks = [(parts[-1], _OLLAMA_PART, "model")]
    if len(parts) >= 2:
        checks.append((parts[-2], _OLLAMA_NAMESPACE, "namespace"))
    if len(parts) == 3:
        checks.append((parts[0], _OLLAMA_HOST, "host"))
    if tag or name.endswith(":"):
        checks.append((tag, _OLLAMA_PART, "tag"))
    for value, pattern, what in checks:
        if not pattern.fullmatch(value):
            return (
                f"{shown(name)} is not an Ollama model name: the {what} {shown(value, 40)} must start with a letter, "
                "digit or "
                "'_' and hold only letters, digits, '_', '-' and '.' (at most 80 characters), e.g. qwen2.5:14b"
            )
    return ""


def upgrade_input_problem(tier, model, tiers):
    """Why ``-e tier=... -e model=...`` of an upgrade is bad input, or ``""``; checked before anything is read.

    Args:
        tier: the ``tier`` extra var (must be a string naming a key of ``tiers``).
        model: the ``model`` extra var (a string: an Ollama tag or a Hugging Face id, by the tier's runtime).
        tiers (dict): ``inference_tiers``.

    Returns:
        str: a message naming the field, what is wrong and the fix (quoting at most 80 characters of a bad
        value), without "Nothing was changed" (the caller adds it); ``""`` when both are good. A value that is not
        a string (a number, a list, a Jinja expression that rendered to one) is bad input, never a crash.
    """
    tiers = tiers or {}
    names = "|".join(sorted(tiers))
    usage = f"Pass -e tier=<{names}> -e model=<name>, e.g. -e tier=ollama -e model=qwen2.5:14b"
    for field, value in (("tier", tier), ("model", model)):
        if value is None or value == "":
            return f"Bad input: {field} is not set. {usage}"
        if not isinstance(value, str):
            return (
                f"Bad input: {field} must be a string, not {_kind(value)} ({shown(value)}); a Jinja expression or a "
                f"JSON value is not a {field} name. {usage}"
            )
    if tier not in tiers:
        return f"Bad input: tier={shown(tier)} is not a tier of inference_tiers ({', '.join(sorted(tiers))}). {usage}"
    problem = model_name_problem(model, (tiers[tier] or {}).get("runtime", "ollama"))
    if problem:  # the problem quotes the name (at most 80 characters of it)
        return f"Bad input: model {problem}" if problem.startswith("'") else f"Bad input: model: {problem}"
    return ""


CANARY_KEYS = (
    "tiers",
    "share_percent",
    "min_requests",
    "max_requests",
    "duration",
    "poll_interval",
    "min_success_rate",
    "max_success_drop",
    "confidence",
    "on_inconclusive",
)


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _canary_value_problem(key, value):
    if key == "share_percent" and not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 99):
        return f"inference_canary.share_percent must be a whole percent from 1 to 99, got {shown(value)}"
    if key in ("min_requests", "max_requests") and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    ):
        return f"inference_canary.{key} must be a whole number of requests, at least 1, got {shown(value)}"
    if key in ("duration", "poll_interval") and not (_number(value) and value > 0):
        return f"inference_canary.{key} must be a positive number of seconds, got {shown(value)}"
    if (
        key in ("min_success_rate", "max_success_drop")
        and value is not None
        and not (_number(value) and 0 <= value <= 1)
    ):
        return f"inference_canary.{key} must be a fraction from 0 to 1 (or null: no such check), got {shown(value)}"
    if key == "confidence" and not (_number(value) and 0 < value < 1):
        return f"inference_canary.confidence must be between 0 and 1 (exclusive), got {shown(value)}"
    if key == "on_inconclusive" and value not in ("fail", "pass"):
        return f"inference_canary.on_inconclusive must be fail or pass, got {shown(value)}"
    return ""


def _canary_tiers_problem(listed, tiers):
    if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
        return f"inference_canary.tiers must be a list of tier names, got {shown(listed)}"
    for name in listed:
        if name not in tiers:
            return f"inference_canary.tiers names {shown(name)}, which is not a tier of inference_tiers"
        runtime = (tiers[name] or {}).get("runtime", "ollama")
        if runtime != "ollama":
            return (
                f"inference_canary.tiers names {name}, whose runtime is {runtime}: a canary serves the old and the "
                f"new model side by side, which vLLM (one model per server) cannot. Remove {name} from "
                "inference_canary.tiers"
            )
    return ""


def canary_problem(settings, tiers):
    """Why the inventory's ``inference_canary`` is bad input, or ``""``; checked in preflight, before anything
    changes.

    Args:
        settings (dict | None): ``inference_canary`` (README "The canary"); None or ``{}`` is no canary.
        tiers (dict): ``inference_tiers``.

    Returns:
        str: a message naming the field, what is wrong and the fix; ``""`` when the settings are good. A canary
        needs a runtime that serves both models at once: Ollama loads either on demand, vLLM serves the one model
        it was started with.
    """
    if not settings:
        return ""
    if not isinstance(settings, dict):
        return f'inference_canary must be a mapping (README "The canary"), got {_kind(settings)}'
    unknown = sorted(set(settings) - set(CANARY_KEYS))
    if unknown:
        return f"inference_canary has unknown key(s) {', '.join(unknown)}; known: {', '.join(CANARY_KEYS)}"
    problem = _canary_tiers_problem(settings.get("tiers", []), tiers or {})
    if problem:
        return problem
    for key in CANARY_KEYS[1:]:
        if key in settings:
            problem = _canary_value_problem(key, settings[key])
            if problem:
                return problem
    if settings.get("max_requests", 200) < settings.get("min_requests", 20):
        return "inference_canary.max_requests must be at least inference_canary.min_requests"
    return ""


def canary_memory_problem(entry, tags, catalog):
    """Why a canary of the planned upgrade ``entry`` would thrash the runtime, or ``""``.

    A canary serves the old and the new model side by side, so the runtime must hold both at once: Ollama loads a
    model on its first request and, when memory is short, waits for the other model's requests to end, unloads it
    and loads this one (its scheduler, server/sched.go): with two models that do not fit together, every switch is a
    cold load (164 to 218 s on the lab's CPU worker, stories 12.8 and 25.2) and the canary measures load times, not
    the model. Both fit when the memory each needs to run (``run_gib``, or its ``memory_limit_gib`` when its size
    is unknown) adds up to at most the new model's memory limit (the limit the tier is deployed with).

    Args:
        entry (dict): the tier's plan entry (``tier_plan``): ``model``, ``previous_model``, ``runtime``,
            ``requirements``.
        tags (dict): the Ollama ``/api/tags`` read of the tier (``json.models`` with ``name`` and ``size`` in
            bytes), for the old model's size.
        catalog (dict): ``inference_model_catalog``.

    Returns:
        str: the problem, naming both models, the memory and the fixes; ``""`` when both fit, when there is no old
        model (or it is the new one), or when the old model's needs are unknown.
    """
    entry = entry or {}
    old, new = entry.get("previous_model") or "", entry.get("model") or ""
    if entry.get("runtime") != "ollama" or not old or ollama_tag(old) == ollama_tag(new):
        return ""
    models = (
        (((tags or {}).get("json") or {}).get("models") or []) if isinstance((tags or {}).get("json"), dict) else []
    )
    size = next((int(m.get("size") or 0) for m in models if m.get("name") == ollama_tag(old)), 0)
    try:
        old_needs = model_requirements((catalog or {}).get(old) or (catalog or {}).get(ollama_tag(old)), size or None)
    except AnsibleFilterError:
        return ""
    new_needs = entry.get("requirements") or {}

    def gib(needs):
        return float(needs.get("run_gib") or needs.get("memory_limit_gib") or 0)

    limit = float(new_needs.get("memory_limit_gib") or 0)
    together = gib(old_needs) + gib(new_needs)
    if not limit or together <= limit:
        return ""
    return (
        f"inference_canary.tiers names {entry.get('tier')}, but its canary would serve {old} (about "
        f"{gib(old_needs):.1f} GiB to run) and {new} (about {gib(new_needs):.1f} GiB) side by side, {together:.1f} GiB "
        f"in all, and the tier is deployed with a memory limit of {new_needs.get('memory_limit')} for {new}: Ollama "
        f"would unload one model to load the other at every switch, so the canary would measure cold loads. Upgrade "
        f"without the canary (remove {entry.get('tier')} from inference_canary.tiers for this run: -e "
        "'{\"inference_canary\": {}}'), or give the new model a memory_limit in inference_model_catalog that holds both"
    )


def lxc_plan(now_mib, needed_mib, shrink=False):
    """The LXC size of a tier's node for a model: the plan's ``lxc_*`` fields.

    Args:
        now_mib (int | None): the LXC's memory now, MiB (None: the tier has no LXC, e.g. the GPU node).
        needed_mib (int): what the model needs, MiB (``model_requirements``' ``lxc_memory_mib``).
        shrink (bool): ``inference_lxc_shrink``: give memory back when the model needs less.

    Returns:
        dict: ``lxc_memory_now_mib``, ``lxc_memory_target_mib`` (the size the run leaves), ``needs_resize``
        (bool) and ``lxc_resize``: ``none`` (no LXC), ``grow``, ``same``, ``shrink``, or ``kept larger
        (inference_lxc_shrink is false)`` when the model needs less and shrinking was not asked for.
    """
    if now_mib is None or str(now_mib) in ("", "None"):
        return {"lxc_memory_now_mib": None, "lxc_memory_target_mib": None, "needs_resize": False, "lxc_resize": "none"}
    now, needed = int(now_mib), int(needed_mib)
    if needed > now:
        target, how = needed, "grow"
    elif needed == now:
        target, how = now, "same"
    elif shrink:
        target, how = needed, "shrink"
    else:
        target, how = now, "kept larger (inference_lxc_shrink is false)"
    return {
        "lxc_memory_now_mib": now,
        "lxc_memory_target_mib": target,
        "needs_resize": target != now,
        "lxc_resize": how,
    }


def litellm_routes(config_yaml):
    """``{alias: model}`` of a LiteLLM proxy config (``model_list[].model_name`` -> ``litellm_params.model``).

    The provider prefix is dropped (``ollama_chat/phi4-mini:latest`` -> ``phi4-mini:latest``,
    ``openai/Qwen/Qwen3-8B-AWQ`` -> ``Qwen/Qwen3-8B-AWQ``). An empty or unparsable config gives ``{}``.
    """
    import yaml

    try:
        config = yaml.safe_load(config_yaml or "") or {}
    except yaml.YAMLError:
        return {}
    routes = {}
    for entry in config.get("model_list") or []:
        model = str((entry.get("litellm_params") or {}).get("model") or "")
        provider, _slash, rest = model.partition("/")
        routes[entry.get("model_name")] = rest if provider in ("ollama_chat", "ollama", "openai") and rest else model
    return routes


def registry_manifest_path(name):
    """Ollama registry v2 path of a tag: ``qwen2.5:14b`` -> ``/v2/library/qwen2.5/manifests/14b``."""
    tag = ollama_tag(name)
    repo, _colon, version = tag.rpartition(":")
    if "/" not in repo:
        repo = f"library/{repo}"
    return f"/v2/{repo}/manifests/{version}"


def _gi(value):
    return f"{int(value)}Gi"


def _parse_gi(quantity, field):
    text = str(quantity).strip()
    if text.endswith("Gi"):
        return float(text[:-2])
    if text.endswith("Mi"):
        return float(text[:-2]) / 1024
    raise AnsibleFilterError(f"model catalog field {field}={quantity!r}: write memory as Gi or Mi, e.g. 16Gi")


def model_requirements(entry, size_bytes=None):
    """Memory a model needs, from its catalog ``entry`` (dict) and/or its size on disk.

    ``entry`` may give ``size_gb`` (GB on disk), ``memory_limit``/``memory_request`` (Kubernetes quantities
    in Gi/Mi) and ``lxc_memory_mib`` (MiB). Missing values come from the formula in this module's docstring,
    using ``size_gb`` or ``size_bytes`` (bytes, e.g. the sum of the registry manifest's layers).

    Returns a dict: ``size_gb``, ``run_gib``, ``memory_limit``, ``memory_request`` (quantities),
    ``memory_limit_gib``, ``lxc_memory_mib`` (int), ``source`` (``catalog``, ``formula`` or ``catalog+formula``).
    Raises AnsibleFilterError when neither a size nor explicit limits are known.
    """
    entry = dict(entry or {})
    size_gb = entry.get("size_gb")
    if size_gb is None and size_bytes:
        size_gb = round(int(size_bytes) / 1e9, 2)
    explicit = {k for k in ("memory_limit", "memory_request", "lxc_memory_mib") if entry.get(k) is not None}
    if size_gb is None and len(explicit) < 3:
        raise AnsibleFilterError(
            "model_requirements: the model has no size_gb in the catalog and no registry size; add size_gb "
            "(GB on disk) to inference_model_catalog or make sure the registry knows the tag"
        )
    run_gib = float(size_gb) * 1.2 + 1 if size_gb is not None else None
    if entry.get("memory_limit") is not None:
        limit_gib = _parse_gi(entry["memory_limit"], "memory_limit")
    else:
        limit_gib = max(2, 2 ** math.ceil(math.log2(run_gib)))
    if entry.get("memory_request") is not None:
        request = str(entry["memory_request"])
    else:
        request = _gi(max(2, math.ceil(limit_gib / 4)))
    limit = str(entry["memory_limit"]) if entry.get("memory_limit") is not None else _gi(limit_gib)
    lxc = int(entry["lxc_memory_mib"]) if entry.get("lxc_memory_mib") is not None else int((limit_gib + 4) * 1024)
    source = "catalog" if len(explicit) == 3 else ("formula" if not explicit else "catalog+formula")
    return {
        "size_gb": size_gb,
        "run_gib": round(run_gib, 2) if run_gib is not None else None,
        "memory_limit": limit,
        "memory_limit_gib": limit_gib,
        "memory_request": request,
        "lxc_memory_mib": lxc,
        "source": source,
    }


def _registry_problem(model, registry_url, manifest):
    """Why the registry could not say whether ``model`` exists (unreachable, or an answer other than 200/404)."""
    status = manifest.get("status", -1)
    if status == -1:
        how = (
            f"the Ollama registry {registry_url} could not be reached ({str(manifest.get('msg') or 'no answer')[:160]})"
        )
    else:
        how = f"the Ollama registry {registry_url} answered HTTP {status} {str(manifest.get('msg') or '')[:120]}"
    return (
        f"Cannot check model tag {model}: {how}, and Ollama does not have the model yet. This says nothing about "
        "the tag: check the controller's network, DNS and proxy, or ollama_registry_url, then run again. "
        "Nothing was changed."
    )


def _ollama_model_facts(model, reads, registry_url):
    """(size_bytes, problem) of an Ollama model from the /api/tags read and the registry manifest read."""
    tags, manifest = reads.get("tags") or {}, reads.get("manifest") or {}
    models = ((tags.get("json") or {}).get("models") or []) if isinstance(tags.get("json"), dict) else []
    tag = ollama_tag(model)
    present = tag in [m.get("name") for m in models]
    in_registry = manifest.get("status") == 200
    layers = ((manifest.get("json") or {}).get("layers") or []) if isinstance(manifest.get("json"), dict) else []
    size_bytes = sum(int(layer.get("size") or 0) for layer in layers) or next(
        (int(m.get("size") or 0) for m in models if m.get("name") == tag), 0
    )
    if not present and manifest.get("status", -1) not in (200, 404):
        return size_bytes, _registry_problem(model, registry_url, manifest)
    if not (present or in_registry):
        return (
            size_bytes,
            f"Model tag {model} does not exist: the Ollama registry {registry_url} answered 404 for its manifest and "
            "Ollama does not have it. Check the tag (story 25.2: phi4-mini exists, phi4-mini:3.8b does not) and "
            "pass -e model=<tag>. Nothing was changed.",
        )
    return size_bytes, ""


def _lxc_facts(model, tier_conf, vmid, requirements, lxc, options):
    """(lxc_plan fields, problem, note) of an Ollama tier's LXC from the proxmox_lxc_resources read."""
    if "config" not in lxc:
        return {}, f"{lxc.get('msg') or 'cannot read the LXC'}. Nothing was changed.", ""
    plan = lxc_plan(lxc["config"].get("memory"), requirements["lxc_memory_mib"], options.get("shrink", False))
    now, target = plan["lxc_memory_now_mib"], plan["lxc_memory_target_mib"]
    free = int((lxc.get("host_memory") or {}).get("free_mib") or 0)
    headroom = int(options.get("host_headroom_mib") or 0)
    if target - now > free - headroom:
        return (
            plan,
            f"{model} is too large for the Proxmox host {options.get('proxmox_node')}: it needs "
            f"{requirements['memory_limit']} to run, so the LXC {vmid} ({tier_conf['node']}) must grow from {now} to "
            f"{target} MiB (+{target - now} MiB), but the host has {free} MiB free and keeps {headroom} MiB headroom. "
            "Pick a smaller model or free host memory. Nothing was changed.",
            "",
        )
    note = ""
    if plan["lxc_resize"].startswith("kept larger"):
        note = (
            f"LXC {vmid} ({tier_conf['node']}) has {now} MiB; {model} needs {requirements['lxc_memory_mib']} MiB. It "
            "stays larger because inference_lxc_shrink is false; set it to true to give the memory back to the host "
            "(the node is drained and its LXC restarted, as for a resize)."
        )
    return plan, "", note


def tier_plan(tier, model, tiers, catalog, reads, options=None):
    """Plan one tier from what preflight read: the checks of the model and of where it runs, and the plan entry.

    Args:
        tier (str): the tier (a key of ``inference_tiers``).
        model (str): the model the tier is to serve (an Ollama tag or a Hugging Face model id).
        tiers (dict): ``inference_tiers``.
        catalog (dict): ``inference_model_catalog``.
        reads (dict): what preflight read, each optional: ``tags`` (the ``uri`` result of Ollama's ``/api/tags``),
            ``manifest`` (the ``uri`` result of the registry manifest, skipped when Ollama has the model), ``lxc``
            (the ``proxmox_lxc_resources`` result), ``nodes`` (the Kubernetes Node names), ``previous_model``.
        options (dict): ``vmid`` (the node's ``lxc_vmid``, none for a node without an LXC), ``gpu_memory_gib``
            (the node's GPU memory, GiB), ``registry_url``, ``shrink`` (``inference_lxc_shrink``, bool),
            ``host_headroom_mib`` (MiB the Proxmox host keeps free), ``proxmox_node``.

    Returns:
        dict: ``problem`` (the first check that failed, naming the field and the fix, ending "Nothing was
        changed."; "" when none), ``notes`` (warnings to show: a thinking model, an LXC kept larger) and
        ``entry`` (the tier's ``inference_preflight_plan`` entry; None when there is a problem).

    Raises:
        AnsibleFilterError: the model's size is unknown (from ``model_requirements``).
    """
    options, reads = dict(options or {}), dict(reads or {})
    conf = tiers[tier]
    entry = dict((catalog or {}).get(model) or {})
    runtime = conf["runtime"]
    vmid = options.get("vmid")
    vmid = None if str(vmid) in ("", "None") else vmid
    failed = {"problem": "", "notes": [], "entry": None}
    size_bytes = 0
    if runtime == "ollama":
        size_bytes, problem = _ollama_model_facts(model, reads, options.get("registry_url"))
        if problem:
            return dict(failed, problem=problem)
    elif runtime == "vllm" and (entry.get("runtime") != "vllm" or entry.get("vram_gib") is None):
        return dict(
            failed,
            problem=f"vLLM model {model} is not in inference_model_catalog with runtime: vllm and vram_gib. Add it "
            "(runtime, vram_gib, served_model_name, quantization, max_model_len) to the catalog in inventory "
            "group_vars. Nothing was changed.",
        )
    requirements = model_requirements(entry, size_bytes)
    if conf["node"] not in (reads.get("nodes") or []):
        return dict(
            failed,
            problem=f"Node {conf['node']} (inference_tiers.{tier}.node) is not in the cluster. Fix the node name in "
            "the inventory or join the node. Nothing was changed.",
        )
    gpu = float(options.get("gpu_memory_gib") or 0)
    if runtime == "vllm" and float(entry["vram_gib"]) > gpu:
        return dict(
            failed,
            problem=f"{model} needs {entry['vram_gib']} GiB of GPU memory but {conf['node']} has "
            f"{options.get('gpu_memory_gib') or 0} "
            "GiB (gpu_memory_gib in the inventory). Pick a smaller or more quantised model. Nothing was changed.",
        )
    notes, lxc = [], lxc_plan(None, requirements["lxc_memory_mib"])
    if runtime == "ollama" and vmid is not None:
        lxc, problem, note = _lxc_facts(model, conf, vmid, requirements, reads.get("lxc") or {}, options)
        if problem:
            return dict(failed, problem=problem)
        notes += [note] if note else []
    if runtime == "ollama" and boolean(entry.get("thinks", False), strict=False):
        notes.insert(
            0,
            f"{model} emits thinking tokens (inference_model_catalog.thinks). On CPU Ollama it cannot be switched off "
            "reliably (story 25.2); expect the gate to fail on latency and thinking output.",
        )
    return {
        "problem": "",
        "notes": notes,
        "entry": {
            "tier": tier,
            "runtime": runtime,
            "release": conf["release"],
            "model": model,
            "served_model": ollama_tag(model) if runtime == "ollama" else entry.get("served_model_name") or model,
            "previous_model": reads.get("previous_model") or "",
            "catalog": entry,
            "requirements": requirements,
            "node": conf["node"],
            "vmid": vmid if runtime == "ollama" else None,
            "lxc_memory_now_mib": lxc["lxc_memory_now_mib"],
            "lxc_memory_target_mib": lxc["lxc_memory_target_mib"],
            "lxc_memory_needed_mib": requirements["lxc_memory_mib"],
            "needs_resize": lxc["needs_resize"],
            "lxc_resize": lxc["lxc_resize"],
            "lxc_shrink": boolean(options.get("shrink", False), strict=False),
            "alias": conf["alias"],
            "api_url": conf["api_url"],
            "service_url": conf["service_url"],
            "ca_path": conf.get("ca_path") or "",
            "keep_models": conf.get("keep_models") or [],
            "thinks": entry.get("thinks", False),
        },
    }


def detour_plan(tier, tiers, current_models, needed, enabled=True, check=None):
    """Which tier serves ``tier``'s alias while ``tier`` is replaced, and why (the plan's ``detour`` fields).

    The detour tier is the first other tier (by name) that serves a model now; it is taken only when its own
    alias answered through LiteLLM just before (``check``: the ``litellm_route_check`` result, whose
    ``model_group`` must be that alias).

    Args:
        tier (str): the tier being replaced.
        tiers (dict): ``inference_tiers`` (tier -> ``alias``, ...).
        current_models (dict): tier -> the model it serves now.
        needed (bool): something about the tier is replaced (another model, an LXC resize).
        enabled (bool): ``inference_detour``.
        check (dict | None): the route check of the detour tier's alias; None when it was not run.

    Returns:
        dict: ``detour`` (the other tier, or None) and ``detour_note`` (what the plan and report say).
    """
    alias = tiers[tier]["alias"]
    other = detour_tier_of(tier, current_models, tiers=tiers)
    if not needed:
        return {"detour": None, "detour_note": f"no detour: nothing about tier {tier} is replaced"}
    if not enabled:
        return {"detour": None, "detour_note": f"no detour (inference_detour is false): {alias} may see failures"}
    if other is None:
        return {"detour": None, "detour_note": f"no detour: no other tier serves a model; {alias} may see failures"}
    other_alias = tiers[other]["alias"]
    check = check or {}
    if check.get("model_group") == other_alias and not check.get("failed"):
        return {
            "detour": other,
            "detour_note": f"detour: alias {alias} is served by tier {other} ({other_alias}) "
            f"while tier {tier} is replaced",
        }
    why = str(check.get("msg") or "it was not checked")[:200]
    return {
        "detour": None,
        "detour_note": f"no detour: alias {other_alias} of tier {other} does not answer through LiteLLM ({why}); "
        f"clients of {alias} may see failures while tier {tier} is replaced",
    }


def plan_detours(plan):
    """tier -> detour tier, for the tiers of ``plan`` (``inference_preflight_plan``) that have a detour."""
    return {tier: entry["detour"] for tier, entry in (plan or {}).items() if (entry or {}).get("detour")}


def detour_tier_of(tier, current_models, down=(), tiers=None):
    """The one choice of a detour: the tier that serves ``tier``'s alias while ``tier`` is replaced (the upgrade's
    plan) or does not answer (the rollback): the first other tier by name that serves a model, is not in ``down``
    and, when ``tiers`` (``inference_tiers``) is given, is one of them; None when there is none."""
    others = sorted(
        t for t in current_models or {} if t != tier and t not in (down or ()) and (tiers is None or t in tiers)
    )
    return others[0] if others else None


def helm_stuck_fix(history, release, namespace):
    """The command that puts back a Helm release stuck in a pending operation.

    Args:
        history (list[dict] | str): ``helm history RELEASE -o json`` (``revision``, ``status`` ...), parsed or not.
        release (str): the release name.
        namespace (str): its namespace.

    Returns:
        str: ``helm rollback RELEASE N -n NAMESPACE`` with N the newest revision that was deployed (status
        ``deployed`` or ``superseded``); ``helm uninstall RELEASE -n NAMESPACE`` when none ever was.
    """
    if isinstance(history, str):
        history = json.loads(history or "[]")
    good = [int(h["revision"]) for h in history or [] if h.get("status") in ("deployed", "superseded")]
    if good:
        return f"helm rollback {release} {max(good)} -n {namespace}"
    return f"helm uninstall {release} -n {namespace}"


def pod_problems(pods, logs=None, max_log_lines=5):
    """Why the Pods of a release are not ready, in one line each: what ``kubectl describe`` and ``kubectl logs``
    would show an operator after a failed ``helm --wait`` ("context deadline exceeded" alone says nothing).

    Args:
        pods (list[dict]): Pod objects (``kubernetes.core.k8s_info`` ``resources``).
        logs (list[dict] | None): ``kubernetes.core.k8s_log`` results, each with ``item`` (the Pod) and
            ``log_lines``; matched to the Pods by name.
        max_log_lines (int): how many of the last non-empty log lines to quote per Pod.

    Returns:
        str: e.g. ``pod ml/vllm-server-6d9f (node k3s-gpu-worker): container vllm CrashLoopBackOff, last exit
        code 1 (Error); log: ... ValueError: ...``; empty when every Pod is ready.
    """
    by_name = {}
    for result in logs or []:
        pod = (result or {}).get("item") or {}
        lines = [line for line in (result or {}).get("log_lines") or [] if str(line).strip()]
        by_name[(pod.get("metadata") or {}).get("name")] = lines[-int(max_log_lines) :]
    out = []
    for pod in pods or []:
        meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        if (conditions.get("Ready") or {}).get("status") == "True":
            continue
        where = f"pod {meta.get('namespace')}/{meta.get('name')} (node {spec.get('nodeName') or 'none'})"
        parts = []
        scheduled = conditions.get("PodScheduled") or {}
        if scheduled.get("status") == "False":
            parts.append(f"not scheduled: {scheduled.get('message') or scheduled.get('reason') or '?'}")
        parts.extend(_container_problem(c) for c in status.get("containerStatuses") or [])
        if by_name.get(meta.get("name")):
            parts.append("log: " + " | ".join(str(line).strip() for line in by_name[meta.get("name")]))
        if not parts:
            parts.append(f"phase {status.get('phase') or '?'}")
        out.append(f"{where}: " + "; ".join(parts))
    return ". ".join(out)


def _container_problem(c):
    """One container's state as ``kubectl describe`` shows it: ``container vllm CrashLoopBackOff, last exit code 1
    (Error), 3 restarts``."""
    state, last = c.get("state") or {}, c.get("lastState") or {}
    text = f"container {c.get('name')}"
    if "waiting" in state:
        w = state["waiting"]
        text += f" {w.get('reason') or 'waiting'}" + (f": {w['message']}" if w.get("message") else "")
    elif "terminated" in state:
        t = state["terminated"]
        text += f" terminated, exit code {t.get('exitCode')} ({t.get('reason') or '?'})"
    elif "running" in state:
        text += " running, not ready"
    if "terminated" in last:
        t = last["terminated"]
        text += f", last exit code {t.get('exitCode')} ({t.get('reason') or '?'})"
    if c.get("restartCount"):
        text += f", {c['restartCount']} restarts"
    return text


def node_states(nodes, names=None):
    """``{node: {"unschedulable": bool, "ready": bool, "reason": str}}`` from Node objects (``k8s_info``).

    Args:
        nodes (list[dict]): Node objects.
        names (list[str] | None): keep only these nodes (the tiers' nodes); all when None.
    """
    out = {}
    for node in nodes or []:
        name = (node.get("metadata") or {}).get("name")
        if names is not None and name not in names:
            continue
        ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
        out[name] = {
            "unschedulable": bool((node.get("spec") or {}).get("unschedulable")),
            "ready": ready.get("status") == "True",
            "reason": ready.get("message") or ready.get("reason") or "",
        }
    return out


def release_differs(now, recorded):
    """Whether Helm release ``now`` (``helm_info``'s ``status``, ``{}`` when not installed) is not the release
    ``recorded`` (the same, from the run record): installed or not, its status (a release left
    ``pending-upgrade`` or ``failed`` differs), chart, or user-supplied values.

    The revision number is not compared: a restore that rolls back from revision 7 to 5 makes revision 8 with 5's
    chart and values, which is the recorded release again, so a second restore leaves it alone.
    """
    now, recorded = now or {}, recorded or {}
    if not recorded.get("revision"):
        return bool(now.get("revision"))
    if not now.get("revision"):
        return True
    return (
        now.get("status") != recorded.get("status")
        or now.get("chart") != recorded.get("chart")
        or (now.get("values") or {}) != (recorded.get("values") or {})
    )


def node_problems(nodes, names):
    """``["node X is cordoned", "node Y is not Ready (Kubelet stopped posting node status.)", ...]`` for the nodes
    ``names`` in ``nodes`` (``node_states``); a name missing from ``nodes`` is "not in the cluster"."""
    out = []
    for name in names or []:
        node = (nodes or {}).get(name)
        if node is None:
            out.append(f"node {name} is not in the cluster")
            continue
        if node.get("unschedulable"):
            out.append(f"node {name} is cordoned")
        if not node.get("ready"):
            out.append(f"node {name} is not Ready ({node.get('reason') or 'no status'})")
    return out


def runtime_problem(entry, pods=None, nodes=None, error=""):
    """Why tier ``entry`` (a plan entry: ``tier``, ``runtime``, ``node``, ``api_url``) does not answer, in one line
    an operator can act on: e.g. ``tier ollama: Ollama does not answer at http://...:11434 (connection refused);
    node k3s-worker-02 is cordoned and Ollama's Pod ml/ollama-7c9 is Pending: not scheduled: 0/4 nodes are
    available: ...``.

    Args:
        entry (dict): the tier's plan entry.
        pods (list[dict] | None): the Pods of its release (``k8s_info``).
        nodes (dict | None): ``node_states`` of the cluster's Nodes.
        error (str): what the last request to the runtime said.
    """
    entry = entry or {}
    runtime = {"ollama": "Ollama", "vllm": "vLLM"}.get(entry.get("runtime"), str(entry.get("runtime") or "runtime"))
    text = f"tier {entry.get('tier')}: {runtime} does not answer at {entry.get('api_url')}"
    if error:
        text += f" ({str(error).strip()[:200]})"
    causes = node_problems(nodes, [entry["node"]] if entry.get("node") else [])
    live = [p for p in pods or [] if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if not live:
        causes.append(f"{runtime} has no Pod" + (" (only terminating ones)" if pods else ""))
    for pod in live:
        problem = pod_problems([pod])
        if problem:
            meta = pod.get("metadata") or {}
            phase = (pod.get("status") or {}).get("phase") or "?"
            detail = problem.split(": ", 1)[1] if ": " in problem else problem
            causes.append(f"{runtime}'s Pod {meta.get('namespace')}/{meta.get('name')} is {phase}: {detail}")
    if causes:
        text += "; " + " and ".join(causes)
    return text


def _routes_of(snapshot):
    return litellm_routes(((snapshot or {}).get("litellm_config") or {}).get("config.yaml") or "")


def _expected_state(record):
    """What the last finished run left, from its record: tier -> model, vmid -> LXC memory (MiB), alias -> the
    model LiteLLM routes it to. The state recorded before the run's first change, with a succeeded run's target
    applied."""
    before, plan = record.get("snapshot") or {}, record.get("plan") or {}
    models = dict(before.get("tier_models") or {})
    lxc = {str(k): (v or {}).get("memory") for k, v in (before.get("lxc") or {}).items()}
    routes = _routes_of(before)
    if record.get("status") == "succeeded":
        for tier, entry in plan.items():
            models[tier] = entry.get("model")
            if entry.get("alias"):
                routes[entry["alias"]] = entry.get("served_model") or entry.get("model")
            if entry.get("vmid") and entry.get("lxc_memory_target_mib"):
                lxc[str(entry["vmid"])] = int(entry["lxc_memory_target_mib"])
    return models, lxc, routes


def _cordoned_drift(before, snapshot):
    out = []
    for name, node in sorted((snapshot.get("nodes") or {}).items()):
        was = (before.get("nodes") or {}).get(name, {"unschedulable": False})
        if node.get("unschedulable") and not was.get("unschedulable"):
            out.append(f"node {name} is cordoned")
    return out


def _lxc_drift(expected_lxc, snapshot):
    out = []
    lxc_now = snapshot.get("lxc") or {}
    for vmid, memory in sorted(expected_lxc.items()):
        now = (lxc_now.get(vmid) or lxc_now.get(int(vmid)) or {}).get("memory")
        if memory is not None and now is not None and int(now) != int(memory):
            out.append(f"LXC {vmid} has {now} MiB, not {memory}")
    return out


def _release_drift(snapshot):
    return [
        f"Helm release {release} is {info.get('status')} (revision {info.get('revision')})"
        for release, info in sorted((snapshot.get("releases") or {}).items())
        if info and info.get("status") not in (None, "deployed")
    ]


def _route_drift(expected_routes, plan, snapshot):
    routes = _routes_of(snapshot)
    if not routes:
        return []
    aliases = {e.get("alias") for e in plan.values()}
    return [
        f"LiteLLM routes {alias} to {routes.get(alias)}, not {model}"
        for alias, model in sorted(expected_routes.items())
        if routes.get(alias) != model and alias in aliases
    ]


def _model_drift(expected_models, plan, snapshot):
    out = []
    present = snapshot.get("models") or {}
    for tier, entry in sorted(plan.items()):
        if entry.get("runtime") != "ollama" or tier not in present:
            continue
        wanted = ollama_tag(expected_models.get(tier) or entry.get("model"))
        if wanted not in present[tier]:
            out.append(f"Ollama of tier {tier} does not have {wanted}")
    return out


def state_drift(record, snapshot):
    """How ``snapshot`` (the state now, ``inference_snapshot``'s) differs from what the last finished run left,
    as sentences; ``[]`` when it does not, or when there is no finished run to compare with.

    What a run left: for ``rolled back`` and ``restored``, the state it recorded before its first change; for a
    ``succeeded`` upgrade, that state with its target applied (the tier's model served, routed and pinned, the
    LXC at its planned size). Compared: nodes cordoned, LXC memory, Helm releases not deployed, what LiteLLM
    routes each tier's alias to, and whether each Ollama tier still has its model.

    Args:
        record (dict | None): the run record (``inference_run``'s ``record``).
        snapshot (dict): the state now.
    """
    record, snapshot = record or {}, snapshot or {}
    before = record.get("snapshot")
    if record.get("status") not in ("succeeded", "rolled back", "restored") or not before:
        return []
    plan = record.get("plan") or {}
    models, lxc, routes = _expected_state(record)
    return (
        _cordoned_drift(before, snapshot)
        + _lxc_drift(lxc, snapshot)
        + _release_drift(snapshot)
        + _route_drift(routes, plan, snapshot)
        + _model_drift(models, plan, snapshot)
    )


def quantity_mib(quantity):
    """A Kubernetes quantity (``"20709376Ki"``, ``"16Gi"``) in MiB (float), using the kubernetes client's parser.

    Raises AnsibleFilterError for a value that is not a quantity.
    """
    try:
        # imported here: importing the kubernetes package takes about 0.4 s, and every task that uses any of
        # these filters imports this file anew in its worker process
        from kubernetes.utils.quantity import parse_quantity
    except ImportError as exc:  # pragma: no cover - kubernetes is a requirement of kubernetes.core as well
        raise AnsibleFilterError("quantity_mib needs the kubernetes Python package (pip install kubernetes)") from exc
    try:
        return float(parse_quantity(quantity)) / 2**20
    except ValueError as exc:
        raise AnsibleFilterError(f"quantity_mib: {quantity!r} is not a Kubernetes quantity") from exc


def gate_reuse(entry, changed, force=False):
    """Whether a tier's gate may reuse its recorded pass instead of classifying again: nothing about the tier
    changed in this run.

    Args:
        entry (dict): the tier's plan entry (``inference_preflight_plan[tier]``: ``tier``, ``model``,
            ``previous_model``, ``needs_resize``).
        changed (dict): tier -> whether its runtime changed in this run (the Helm release upgraded or a model
            pulled), as the runtime roles record it (``ollama_tier_changed``, ``vllm_tier_changed``); a tier missing
            from it counts as changed.
        force (bool | str): ``inference_gate_force``: run the gate whatever is recorded.

    Returns:
        bool: True only when not forced, the tier serves the requested model already, no LXC resize is planned and
        the runtime role recorded no change for the tier.
    """
    if boolean(force, strict=False):
        return False
    entry = entry or {}
    if entry.get("needs_resize") or entry.get("previous_model") != entry.get("model"):
        return False
    tier = entry.get("tier")
    return tier in (changed or {}) and not boolean(changed[tier], strict=False)


def gate_champion(entry, catalog=None):
    """The model a tier's gate compares its candidate with (the champion): the model the tier served before this run,
    named as its runtime's API names it, with what pins its weights for an API without digests (vLLM).

    Args:
        entry (dict): the tier's plan entry (``runtime``, ``model``, ``previous_model``).
        catalog (dict): ``inference_model_catalog``.

    Returns:
        dict: ``model`` (Ollama: the tag with ``:latest`` when it has none; vLLM: the catalog's
        ``served_model_name``, else the name) and ``identity`` (the champion's catalog entry, ``{}`` when it has
        none); ``{}`` when the tier served nothing before or serves the candidate already.
    """
    entry = entry or {}
    previous = entry.get("previous_model") or ""
    if not previous or previous == entry.get("model"):
        return {}
    identity = dict((catalog or {}).get(previous) or {})
    if entry.get("runtime") == "ollama":
        return {"model": ollama_tag(previous), "identity": identity}
    return {"model": identity.get("served_model_name") or previous, "identity": identity}


def consumer_data(consumer, tier_models, tiers):
    """The data a consumer's ConfigMap gets: the model its tier serves, and the tier's URL when it asks for one.

    Args:
        consumer (dict): an ``inference_consumers`` entry (``tier``, ``model_key``, optional ``url_key``).
        tier_models (dict): tier -> model it serves.
        tiers (dict): ``inference_tiers`` (``service_url`` of each tier).

    Returns:
        dict: ConfigMap data, every value a string.

    Raises:
        AnsibleFilterError: the consumer names a tier that is not in ``tier_models``/``tiers``.
    """
    tier = consumer.get("tier")
    if tier not in (tier_models or {}) or tier not in (tiers or {}):
        raise AnsibleFilterError(
            f"consumer {consumer.get('name', '?')}: tier {tier!r} is not in inference_tiers; "
            "fix inference_consumers[].tier"
        )
    data = {consumer["model_key"]: str(tier_models[tier])}
    if consumer.get("url_key"):
        data[consumer["url_key"]] = str(tiers[tier]["service_url"])
    return data


def consumer_objects(consumers):
    """The ``k8s_objects_info`` reads of the consumers' ConfigMaps: ``{kind, namespace, name, item}`` each.

    Args:
        consumers (list): ``inference_consumers`` (``namespace``, ``configmap``, ...).

    Returns:
        list[dict]: one read per consumer, its ``item`` the consumer (as a loop's results carry it).
    """
    return [
        {"kind": "ConfigMap", "namespace": c["namespace"], "name": c["configmap"], "item": c} for c in consumers or []
    ]


def consumer_reads(results, tier_models, tiers, labels=None):
    """Pair each consumer's ConfigMap, as read, with the data and labels the consumers role would give it.

    Args:
        results (list): ``kubernetes.core.k8s_info`` results of a loop over ``inference_consumers`` (``item`` the
            consumer, ``resources`` the ConfigMap or nothing).
        tier_models (dict): tier -> model each tier will serve; tiers (dict): ``inference_tiers``.
        labels (dict): the labels the role sets on the ConfigMap.

    Returns:
        list[dict]: ``{"name", "configmap" (dict or None), "data", "labels"}`` per consumer, for upgrade_changes.
    """
    return [
        {
            "name": r["item"].get("name"),
            "configmap": (r.get("resources") or [None])[0],
            "data": consumer_data(r["item"], tier_models, tiers),
            "labels": labels or {},
        }
        for r in results or []
    ]


def _first_difference(before, after, path=""):
    """The first key path (``a.b[0]``) where two values parsed from YAML differ, or "" when equal."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in before or key not in after:
                return where
            found = _first_difference(before[key], after[key], where)
            if found:
                return found
        return ""
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            found = _first_difference(b, a, f"{path}[{i}]")
            if found:
                return found
        return ""
    return "" if before == after else (path or "(all)")


def _release_changes(releases, desired):
    """What a Helm upgrade of each desired release would change, the way kubernetes.core.helm decides it without
    helm-diff (``default_check``: the user-supplied values, chart name-version and appVersion)."""
    read = {r.get("item"): r.get("status") for r in releases or []}
    changes = []
    for name, want in sorted((desired or {}).items()):
        status = read.get(name)
        chart = want.get("chart") or {}
        if not status:
            changes.append(f"release {name} is not installed")
            continue
        if status.get("status") != "deployed":
            changes.append(f"release {name} is {status.get('status')}, not deployed")
            continue
        wanted_chart = f"{chart.get('name')}-{chart.get('version')}"
        if status.get("chart") != wanted_chart:
            changes.append(f"release {name}: chart {status.get('chart')} -> {wanted_chart}")
        if (chart.get("appVersion") or "") != (status.get("app_version") or ""):
            changes.append(f"release {name}: appVersion {status.get('app_version')} -> {chart.get('appVersion')}")
        where = _first_difference(status.get("values") or {}, want.get("values") or {})
        if where:
            changes.append(f"release {name}: values differ at {where}")
    return changes


def _consumer_changes(consumers):
    """What the consumers role would change: one line per ConfigMap missing, data key or labels that differ.

    Args:
        consumers (list): ``consumer_reads``' output.
    """
    changes = []
    for c in consumers or []:
        configmap = c.get("configmap")
        if not configmap:
            changes.append(f"consumer {c.get('name')}: ConfigMap is missing")
            continue
        data = configmap.get("data") or {}
        labels = (configmap.get("metadata") or {}).get("labels") or {}
        for key, value in sorted((c.get("data") or {}).items()):
            if data.get(key) != value:
                changes.append(f"consumer {c.get('name')}: {key} {data.get(key)!r} -> {value!r}")
        if any(labels.get(k) != v for k, v in (c.get("labels") or {}).items()):
            changes.append(f"consumer {c.get('name')}: labels differ")
    return changes


def _model_changes(entry, models_present):
    if entry.get("runtime") != "ollama":
        return []
    if models_present is None:
        return ["the models on Ollama could not be listed"]
    present = {normalize_name(str(m)) for m in models_present}
    model = normalize_name(str(entry.get("model")))
    keep = {model} | {normalize_name(str(m)) for m in entry.get("keep_models") or []}
    changes = [] if model in present else [f"{model} is not on Ollama (it would be pulled)"]
    prune = sorted(present - keep)
    if prune:
        changes.append(f"{', '.join(prune)} would be pruned (not on the keep-list)")
    return changes


def upgrade_changes(entry, releases=None, desired=None, consumers=None, models_present=None, pins=None, targets=None):
    """What an upgrade of a tier to the model it already serves would still change; empty when nothing would.

    An empty list is the no-op fast path's condition (with a reusable gate record and the alias answering): the
    play then skips the snapshot, the probe and every step.

    Args:
        entry (dict): the tier's plan entry (``model``, ``previous_model``, ``needs_resize``, ``runtime``,
            ``keep_models``).
        releases (list): ``kubernetes.core.helm_info`` results of a loop over release names (``item``, ``status``
            with ``status``, ``chart``, ``app_version``, ``values``).
        desired (dict): release name -> ``{"chart": Chart.yaml as a dict, "values": the values the role renders}``.
        consumers (list): ``{"name", "configmap": the ConfigMap read (or None), "data": consumer_data(...),
            "labels": the labels the role sets}`` per consumer.
        models_present (list | None): names Ollama lists (``/api/tags``); None when it could not be read.
        pins (dict): the model pins file's ``models``; targets (dict): the model each tier will serve.

    Returns:
        list[str]: one line per difference, for example ``release ollama: values differ at resources.limits``.
    """
    entry = entry or {}
    changes = []
    if entry.get("previous_model") != entry.get("model"):
        changes.append(f"the tier serves {entry.get('previous_model')}, not {entry.get('model')}")
    if boolean(entry.get("needs_resize", False), strict=False):
        changes.append(f"the LXC is resized ({entry.get('lxc_resize')})")
    if targets is not None and (pins or {}) != targets:
        changes.append("the model pins file does not record the models the tiers serve")
    return (
        changes
        + _release_changes(releases, desired)
        + _consumer_changes(consumers)
        + _model_changes(entry, models_present)
    )


def _gate_records_patch(records, key, record, keep=50):
    """module_utils.llm_gate.gate_records_patch, with its ValueError as an AnsibleFilterError."""
    try:
        return gate_records_patch(records, key, record, keep)
    except ValueError as exc:
        raise AnsibleFilterError(f"gate_records_patch: {exc}; set llm_gate_records_keep to 1 or more") from None


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self):
        return {
            "ollama_tag": ollama_tag,
            "model_name_problem": model_name_problem,
            "litellm_routes": litellm_routes,
            "registry_manifest_path": registry_manifest_path,
            "model_requirements": model_requirements,
            "quantity_mib": quantity_mib,
            "detour_plan": detour_plan,
            "detour_tier_of": detour_tier_of,
            "plan_detours": plan_detours,
            "helm_stuck_fix": helm_stuck_fix,
            "pod_problems": pod_problems,
            "upgrade_input_problem": upgrade_input_problem,
            "canary_problem": canary_problem,
            "canary_memory_problem": canary_memory_problem,
            "lxc_plan": lxc_plan,
            "tier_plan": tier_plan,
            "shown": shown,
            "node_states": node_states,
            "release_differs": release_differs,
            "runtime_problem": runtime_problem,
            "node_problems": node_problems,
            "state_drift": state_drift,
            "gate_reuse": gate_reuse,
            "gate_champion": gate_champion,
            "consumer_data": consumer_data,
            "consumer_reads": consumer_reads,
            "consumer_objects": consumer_objects,
            "consumer_changes": _consumer_changes,
            "upgrade_changes": upgrade_changes,
            "gate_records_patch": _gate_records_patch,
        }
