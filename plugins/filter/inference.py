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

try:
    from kubernetes.utils.quantity import parse_quantity
except ImportError:  # pragma: no cover - kubernetes is a requirement of kubernetes.core as well
    parse_quantity = None

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
"""

GIB = 2**30


def ollama_tag(name):
    """``"phi4-mini"`` -> ``"phi4-mini:latest"``; names with a tag are returned unchanged.

    Raises AnsibleFilterError for an empty name.
    """
    name = str(name or "").strip()
    if not name:
        raise AnsibleFilterError("ollama_tag: empty model name; pass e.g. model=qwen2.5:14b")
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


# Ollama's model name grammar (ollama/ollama types/model/name.go): [host/][namespace/]model[:tag], each part
# starting with a letter, digit or underscore, then letters, digits, "_", "-" or "." (no "." in a namespace; ":"
# only in the host), at most 80 characters (350 for the host).
_OLLAMA_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_OLLAMA_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_OLLAMA_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")
# Hugging Face repository ids (what vLLM's --model takes): [owner/]name, letters, digits, "-", "_", ".", at most
# 96 characters each, no "--" or ".." (huggingface_hub validate_repo_id)
_HF_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def model_name_problem(name, runtime="ollama"):
    """Why ``name`` is not a valid model name for ``runtime`` (``ollama`` or ``vllm``), or ``""`` when it is.

    Checked before any request is made with the name, so a malformed name never reaches a URL or a shell.
    """
    name = str(name if name is not None else "")
    shown = name if len(name) <= 80 else name[:77] + "..."
    if not name.strip():
        return "the model name is empty"
    if runtime == "vllm":
        parts = name.split("/")
        if len(parts) > 2 or not all(_HF_PART.fullmatch(p) for p in parts) or "--" in name or ".." in name:
            return (
                f"{shown!r} is not a Hugging Face model id: use owner/name with letters, digits, '-', '_' and '.' "
                "(e.g. Qwen/Qwen3-8B-AWQ)"
            )
        return ""
    base, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    parts = base.split("/")
    if len(parts) > 3:
        return f"{shown!r} is not an Ollama model name: at most host/namespace/model:tag"
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
                f"{shown!r} is not an Ollama model name: the {what} {value!r} must start with a letter, digit or "
                "'_' and hold only letters, digits, '_', '-' and '.' (at most 80 characters), e.g. qwen2.5:14b"
            )
    return ""


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
        provider, _, rest = model.partition("/")
        routes[entry.get("model_name")] = rest if provider in ("ollama_chat", "ollama", "openai") and rest else model
    return routes


def registry_manifest_path(name):
    """Ollama registry v2 path of a tag: ``qwen2.5:14b`` -> ``/v2/library/qwen2.5/manifests/14b``."""
    tag = ollama_tag(name)
    repo, _, version = tag.rpartition(":")
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
    others = sorted(t for t in current_models if t != tier and t in tiers)
    other = others[0] if others else None
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


def detour_tier(current_models, tier):
    """The tier whose alias is checked for a detour of ``tier``: the first other tier by name, or None."""
    others = sorted(t for t in current_models if t != tier)
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
        for c in status.get("containerStatuses") or []:
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
            parts.append(text)
        if by_name.get(meta.get("name")):
            parts.append("log: " + " | ".join(str(line).strip() for line in by_name[meta.get("name")]))
        if not parts:
            parts.append(f"phase {status.get('phase') or '?'}")
        out.append(f"{where}: " + "; ".join(parts))
    return ". ".join(out)


def quantity_mib(quantity):
    """A Kubernetes quantity (``"20709376Ki"``, ``"16Gi"``) in MiB (float), using the kubernetes client's parser.

    Raises AnsibleFilterError for a value that is not a quantity.
    """
    if parse_quantity is None:
        raise AnsibleFilterError("quantity_mib needs the kubernetes Python package (pip install kubernetes)")
    try:
        return float(parse_quantity(quantity)) / 2**20
    except ValueError as exc:
        raise AnsibleFilterError(f"quantity_mib: {quantity!r} is not a Kubernetes quantity") from exc


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
            "detour_tier": detour_tier,
            "plan_detours": plan_detours,
            "helm_stuck_fix": helm_stuck_fix,
            "pod_problems": pod_problems,
        }
