# -*- coding: utf-8 -*-
# Copyright: (c) 2026, home-lab inference project
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Statistics of the gate: rates with confidence intervals, the difference of two rates, a paired test, latency
percentiles, and the verdict of each check (``passed``, ``failed`` or ``inconclusive``).

Every figure comes from statsmodels or scipy, none from a formula of our own:

* a rate (valid JSON, accuracy, field completeness) with its interval: statsmodels'
  ``proportion_confint`` (Wilson score by default; ``beta`` is the exact Clopper-Pearson);
* the difference challenger - champion with its interval: ``confint_proportions_2indep`` with Newcombe's hybrid
  score method (``method="newcomb"``), valid whether or not the two saw the same documents;
* the paired test when they did see the same documents: McNemar's (``statsmodels.stats.contingency_tables.mcnemar``,
  exact binomial below 25 discordant documents);
* a latency percentile: ``numpy.percentile`` (linear interpolation, numpy's default), with its sample size.

A check is ``passed`` when the interval lies on the right side of its threshold, ``failed`` when it lies on the
wrong side, ``inconclusive`` otherwise (Argo Rollouts' AnalysisRun phases; MLflow's ``min_absolute_change``
reads as a maximum drop here). Raises ``ValueError`` naming the argument on bad input.
"""

from __future__ import annotations

import importlib.util

# statsmodels (with pandas and scipy) takes about 2.7 s of CPU to import: imported at the first figure, not when a
# module that may need none (a reused gate record, a check-mode skip) is loaded
numpy = mcnemar = confint_proportions_2indep = proportion_confint = None
STATS_IMPORT_ERROR = (
    None
    if importlib.util.find_spec("statsmodels") and importlib.util.find_spec("numpy")
    else ImportError("No module named 'statsmodels' (or numpy)")
)

PASSED = "passed"
FAILED = "failed"
INCONCLUSIVE = "inconclusive"
RATE_METHODS = ("wilson", "beta")
# McNemar's exact binomial test below this many discordant pairs (statsmodels' documentation's advice: the
# chi-square approximation needs about 25)
MCNEMAR_EXACT_BELOW = 25


def _require_stats():
    global numpy, mcnemar, confint_proportions_2indep, proportion_confint
    if STATS_IMPORT_ERROR is not None:
        raise ImportError(f"the gate's statistics need statsmodels and numpy: {STATS_IMPORT_ERROR}")
    if proportion_confint is None:
        import numpy as _numpy
        from statsmodels.stats.contingency_tables import mcnemar as _mcnemar
        from statsmodels.stats.proportion import (
            confint_proportions_2indep as _newcombe,
        )
        from statsmodels.stats.proportion import (
            proportion_confint as _confint,
        )

        numpy, mcnemar, confint_proportions_2indep, proportion_confint = _numpy, _mcnemar, _newcombe, _confint


def _check_confidence(confidence):
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")


def _check_count(name, successes, n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}: the number of documents must be a positive integer, got {n!r}")
    if isinstance(successes, bool) or not isinstance(successes, int) or not 0 <= successes <= n:
        raise ValueError(f"{name}: successes must be an integer from 0 to {n}, got {successes!r}")


def rate(successes, n, confidence=0.95, method="wilson"):
    """A rate and its two-sided interval.

    :param successes: documents that met the criterion (int, 0..n)
    :param n: documents classified (int, >= 1)
    :param confidence: confidence level of the interval (0..1, default 0.95)
    :param method: ``wilson`` (score interval) or ``beta`` (exact Clopper-Pearson)
    :returns: dict with ``value``, ``low``, ``high`` (fractions 0..1), ``successes``, ``n``, ``method``,
        ``confidence``
    :raises ValueError: on a count out of range, a confidence outside (0, 1) or an unknown method
    """
    _require_stats()
    _check_count("rate", successes, n)
    _check_confidence(confidence)
    if method not in RATE_METHODS:
        raise ValueError(f"method must be one of {', '.join(RATE_METHODS)}, got {method!r}")
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method=method)
    return {
        "value": successes / n,
        "low": float(low),
        "high": float(high),
        "successes": successes,
        "n": n,
        "method": method,
        "confidence": confidence,
    }


def rate_difference(challenger, champion, confidence=0.95):
    """The difference of two rates, challenger - champion, with Newcombe's interval.

    :param challenger: ``(successes, n)`` of the candidate
    :param champion: ``(successes, n)`` of the model it would replace (this run's, or its recorded gate's)
    :param confidence: confidence level (0..1, default 0.95)
    :returns: dict with ``value``, ``low``, ``high`` (differences of fractions, -1..1), ``method`` (``newcomb``),
        ``confidence``
    :raises ValueError: on a count out of range or a confidence outside (0, 1)
    """
    _require_stats()
    _check_count("challenger", *challenger)
    _check_count("champion", *champion)
    _check_confidence(confidence)
    low, high = confint_proportions_2indep(
        challenger[0], challenger[1], champion[0], champion[1], method="newcomb", compare="diff", alpha=1 - confidence
    )
    return {
        "value": challenger[0] / challenger[1] - champion[0] / champion[1],
        "low": float(low),
        "high": float(high),
        "method": "newcomb",
        "confidence": confidence,
    }


def paired_test(challenger, champion):
    """McNemar's test of two models' outcomes on the same documents, in the same order.

    :param challenger: one bool per document (the candidate met the criterion)
    :param champion: one bool per document, the same documents
    :returns: dict with ``table`` (``[[both, champion only], [challenger only, neither]]``), ``discordant``,
        ``statistic``, ``pvalue`` (two-sided) and ``exact`` (binomial test, below 25 discordant documents)
    :raises ValueError: when the two lists are empty or of different lengths
    """
    _require_stats()
    challenger, champion = [bool(x) for x in challenger], [bool(x) for x in champion]
    if not challenger or len(challenger) != len(champion):
        raise ValueError(
            f"paired_test: one outcome per document for both models, got {len(challenger)} and {len(champion)}"
        )
    pairs = list(zip(challenger, champion, strict=True))
    both = sum(a and b for a, b in pairs)
    champion_only = sum(b and not a for a, b in pairs)
    challenger_only = sum(a and not b for a, b in pairs)
    neither = len(challenger) - both - champion_only - challenger_only
    table = [[both, champion_only], [challenger_only, neither]]
    discordant = champion_only + challenger_only
    exact = discordant < MCNEMAR_EXACT_BELOW
    result = mcnemar(table, exact=exact, correction=True)
    return {
        "table": table,
        "discordant": discordant,
        "statistic": float(result.statistic),
        "pvalue": float(result.pvalue),
        "exact": exact,
    }


def percentile(samples, q, method="linear"):
    """The ``q``-th percentile of latency samples (seconds) by ``numpy.percentile``.

    :param samples: latencies in seconds (at least one)
    :param q: percentile, 0..100 (95 for p95)
    :param method: numpy's method: ``linear`` (numpy's default) or ``inverted_cdf`` (the nearest rank: the smallest
        sample with at least ``q`` percent of the samples at or below it, what the gate's metrics report)
    :returns: dict with ``value`` (seconds, None without samples), ``q``, ``n`` and ``method``
    :raises ValueError: when ``q`` is outside 0..100
    """
    _require_stats()
    if not 0 <= q <= 100:
        raise ValueError(f"q must be a percentile from 0 to 100, got {q!r}")
    values = [float(s) for s in samples]
    value = float(numpy.percentile(values, q, method=method)) if values else None
    return {"value": value, "q": q, "n": len(values), "method": method}


def check_minimum(interval, threshold):
    """Verdict of "the rate is at least ``threshold``" (fraction 0..1) from a :func:`rate` result."""
    if interval["low"] >= threshold:
        return PASSED
    if interval["high"] < threshold:
        return FAILED
    return INCONCLUSIVE


def check_max_drop(difference, max_drop):
    """Verdict of "the challenger is not worse than the champion by more than ``max_drop``" (a fraction: 0.05 is
    five points) from a :func:`rate_difference` result."""
    if max_drop < 0:
        raise ValueError(f"max_drop must be 0 or more (a drop in points, as a fraction), got {max_drop!r}")
    if difference["low"] >= -max_drop:
        return PASSED
    if difference["high"] < -max_drop:
        return FAILED
    return INCONCLUSIVE


def verdict(checks):
    """The gate's verdict from its checks' verdicts: ``failed`` when any failed, else ``inconclusive`` when any
    is, else ``passed`` (no checks: ``passed``)."""
    checks = list(checks)
    unknown = sorted(set(checks) - {PASSED, FAILED, INCONCLUSIVE})
    if unknown:
        raise ValueError(f"verdict: unknown check verdict(s) {', '.join(unknown)}")
    if FAILED in checks:
        return FAILED
    if INCONCLUSIVE in checks:
        return INCONCLUSIVE
    return PASSED


# -- the gate's checks -------------------------------------------------------------------------------------------------

RATE_METRICS = {"valid_json": "valid", "accuracy": "correct"}
"""Rate metrics and the per-document flag each counts (an invalid answer is never correct)."""

THRESHOLD_KEYS = (
    "min_valid_json",
    "min_accuracy",
    "max_p95_latency",
    "allow_thinking",
    "max_valid_json_drop",
    "max_accuracy_drop",
    "max_p95_latency_ratio",
)
"""Thresholds :func:`evaluate` reads; each is optional (None or absent: no check)."""


def _ci(interval):
    return f"{interval['confidence'] * 100:g} % CI {interval['low']:.2f} to {interval['high']:.2f}"


def _rates(documents, confidence, method):
    n = len(documents)
    return {
        metric: rate(sum(1 for d in documents if d.get(flag)), n, confidence, method) if n else None
        for metric, flag in RATE_METRICS.items()
    }


def _latency_p95(documents):
    return percentile([d["latency"] for d in documents if d.get("latency") is not None], 95, method="inverted_cdf")


def _check(metric, kind, threshold, result, reason, **figures):
    """One check as :func:`evaluate` returns it: ``metric``, ``kind`` (absolute or relative), ``threshold``,
    ``verdict``, ``reason`` and its figures (``value``, ``low``, ``high``, ``n``, ...)."""
    return {"metric": metric, "kind": kind, "threshold": threshold, "verdict": result, "reason": reason, **figures}


def _bounds(interval):
    return {"value": interval["value"], "low": interval["low"], "high": interval["high"]}


def _absolute_rate_check(metric, interval, threshold):
    if interval is None:
        return _check(metric, "absolute", threshold, FAILED, f"{metric}: no document was classified")
    result = check_minimum(interval, threshold)
    shown = f"{metric} {interval['value']:.2f} ({_ci(interval)}, n={interval['n']})"
    reason = {
        PASSED: f"{shown} clears the minimum {threshold:.2f}",
        FAILED: f"{shown} lies below the minimum {threshold:.2f}",
        INCONCLUSIVE: f"{shown} neither clears nor misses the minimum {threshold:.2f}",
    }[result]
    return _check(metric, "absolute", threshold, result, reason, **_bounds(interval), n=interval["n"])


def _relative_rate_check(metric, challenger, champion, max_drop, confidence):
    difference = rate_difference(
        (challenger["successes"], challenger["n"]), (champion["successes"], champion["n"]), confidence
    )
    result = check_max_drop(difference, max_drop)
    shown = (
        f"{metric} {challenger['value']:.2f} (n={challenger['n']}) against the champion's {champion['value']:.2f} "
        f"(n={champion['n']}): change {difference['value']:+.2f} ({_ci(difference)})"
    )
    reason = {
        PASSED: f"{shown} is within the allowed drop of {max_drop:.2f}",
        FAILED: f"{shown} is worse than the allowed drop of {max_drop:.2f}",
        INCONCLUSIVE: f"{shown} can neither be told within nor beyond the allowed drop of {max_drop:.2f}",
    }[result]
    return _check(
        metric,
        "relative",
        max_drop,
        result,
        reason,
        **_bounds(difference),
        challenger=challenger["value"],
        champion=champion["value"],
        n=challenger["n"],
        champion_n=champion["n"],
        method=difference["method"],
    )


def _paired(challenger_docs, champion_docs):
    """McNemar's test per rate metric on the documents both models answered (matched by ``id``)."""
    champion_by_id = {d["id"]: d for d in champion_docs if d.get("id") is not None}
    common = [(d, champion_by_id[d["id"]]) for d in challenger_docs if d.get("id") in champion_by_id]
    if not common:
        return {}
    return {
        metric: dict(paired_test([a.get(flag) for a, _b in common], [b.get(flag) for _a, b in common]), n=len(common))
        for metric, flag in RATE_METRICS.items()
    }


def _check_thresholds(thresholds):
    unknown = sorted(set(thresholds) - set(THRESHOLD_KEYS))
    if unknown:
        raise ValueError(f"unknown threshold(s) {', '.join(unknown)}; known: {', '.join(THRESHOLD_KEYS)}")
    for name in ("min_valid_json", "min_accuracy", "max_valid_json_drop", "max_accuracy_drop"):
        value = thresholds.get(name)
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"{name} must be a fraction from 0 to 1 (0.05 is five points), got {value!r}")
    for name in ("max_p95_latency", "max_p95_latency_ratio"):
        value = thresholds.get(name)
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def _absolute_checks(challenger, challenger_docs, thresholds):
    """The minimums of the rates, the maximum p95 latency and the ban on thinking output that apply."""
    checks = [
        _absolute_rate_check(metric, challenger[metric], thresholds[f"min_{metric}"])
        for metric in RATE_METRICS
        if thresholds.get(f"min_{metric}") is not None
    ]
    p95 = challenger["latency_p95"]
    limit = thresholds.get("max_p95_latency")
    if limit is not None:
        ok = p95["value"] is not None and p95["value"] < limit
        shown = "n/a" if p95["value"] is None else f"{p95['value']:.3g} s"
        relation = "below" if ok else "not below"
        reason = f"p95 latency {shown} (n={p95['n']}) {relation} the maximum {limit:g} s"
        checks.append(
            _check("latency_p95", "absolute", limit, PASSED if ok else FAILED, reason, value=p95["value"], n=p95["n"])
        )
    if not thresholds.get("allow_thinking"):
        thinking = sum(1 for d in challenger_docs if d.get("thinking"))
        reason = f"thinking output in {thinking}/{len(challenger_docs)} answers"
        verdict_ = FAILED if thinking else PASSED
        checks.append(_check("thinking", "absolute", 0, verdict_, reason, value=thinking, n=len(challenger_docs)))
    return checks


def _relative_checks(challenger, champion, thresholds, confidence):
    """The maximum drops of the rates and the maximum p95 latency ratio against the champion that apply."""
    checks = [
        _relative_rate_check(metric, challenger[metric], champion[metric], thresholds[f"max_{metric}_drop"], confidence)
        for metric in RATE_METRICS
        if thresholds.get(f"max_{metric}_drop") is not None and challenger[metric] and champion[metric]
    ]
    limit = thresholds.get("max_p95_latency_ratio")
    mine, theirs = challenger["latency_p95"], champion["latency_p95"]
    if limit is not None and mine["value"] is not None and theirs["value"]:
        ratio = mine["value"] / theirs["value"]
        ok = ratio <= limit
        reason = (
            f"p95 latency {mine['value']:.3g} s (n={mine['n']}) is {ratio:.2f} x the champion's "
            f"{theirs['value']:.3g} s (n={theirs['n']}), {'within' if ok else 'beyond'} the maximum {limit:g} x"
        )
        figures = {"challenger": mine["value"], "champion": theirs["value"], "n": mine["n"], "champion_n": theirs["n"]}
        checks.append(
            _check("latency_p95", "relative", limit, PASSED if ok else FAILED, reason, value=ratio, **figures)
        )
    return checks


def evaluate(challenger_docs, thresholds, champion_docs=None, confidence=0.95, method="wilson"):
    """The gate's checks of one candidate (challenger), against absolute thresholds and against the model it would
    replace (champion), and the verdict.

    Rates (valid JSON, accuracy: an invalid answer is never correct) come with their interval (:func:`rate`);
    absolute minimums are judged by :func:`check_minimum`, drops against the champion by :func:`check_max_drop`
    on Newcombe's interval of the difference (:func:`rate_difference`); McNemar's test on the documents both
    answered is reported beside it (``paired``). Latency is judged on its p95 point estimate (nearest rank) with its
    sample size: below a few dozen requests no interval of a p95 has an upper bound (so no interval verdict).
    Thinking output fails outright unless allowed.

    :param challenger_docs: one dict per document classified: ``id``, ``valid`` and ``correct`` (bool),
        ``latency`` (seconds), ``thinking`` (bool)
    :param thresholds: optional keys (None or absent: no check): ``min_valid_json``, ``min_accuracy`` (fractions
        0..1), ``max_p95_latency`` (seconds), ``allow_thinking`` (bool, default false), ``max_valid_json_drop``,
        ``max_accuracy_drop`` (fractions: 0.05 is five points), ``max_p95_latency_ratio`` (challenger p95 over the
        champion's, e.g. 1.5)
    :param champion_docs: the champion's documents in the same shape (this run's, or its recorded gate's), or
        None: the relative checks are then skipped and ``champion`` is None
    :param confidence: confidence level of every interval (0..1, default 0.95)
    :param method: rate interval, ``wilson`` or ``beta`` (Clopper-Pearson)
    :returns: dict with ``verdict``, ``checks`` (one dict per check: ``metric``, ``kind`` (absolute or relative),
        ``threshold``, ``verdict``, ``reason`` and the figures), ``challenger`` and ``champion`` (``n``, the rates
        with their intervals, ``latency_p95``), ``paired`` (McNemar per rate metric), ``confidence``, ``method``
    :raises ValueError: on a threshold out of range (naming it) or a confidence outside (0, 1)
    """
    _require_stats()
    _check_confidence(confidence)
    _check_thresholds(thresholds)

    def side(documents):
        return dict(_rates(documents, confidence, method), n=len(documents), latency_p95=_latency_p95(documents))

    challenger = side(challenger_docs)
    champion = side(champion_docs) if champion_docs else None
    checks = _absolute_checks(challenger, challenger_docs, thresholds)
    if champion is not None:
        checks += _relative_checks(challenger, champion, thresholds, confidence)
    return {
        "verdict": verdict(c["verdict"] for c in checks),
        "checks": checks,
        "challenger": challenger,
        "champion": champion,
        "paired": _paired(challenger_docs, champion_docs) if champion_docs else {},
        "confidence": confidence,
        "method": method,
    }


# -- the canary's checks -----------------------------------------------------------------------------------------------

CANARY_THRESHOLD_KEYS = ("min_success_rate", "max_success_drop")
"""Thresholds :func:`evaluate_canary` reads; each is optional (None or absent: no check)."""


def _check_canary_thresholds(thresholds):
    unknown = sorted(set(thresholds) - set(CANARY_THRESHOLD_KEYS))
    if unknown:
        known = ", ".join(CANARY_THRESHOLD_KEYS)
        raise ValueError(f"unknown canary threshold(s) {', '.join(unknown)}; known: {known}")
    for name in CANARY_THRESHOLD_KEYS:
        value = thresholds.get(name)
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"{name} must be a fraction from 0 to 1 (0.02 is two points), got {value!r}")


def _canary_checks(mine, theirs, thresholds, confidence):
    checks = []
    minimum = thresholds.get("min_success_rate")
    if minimum is not None:
        if mine is None:
            reason = f"success_rate: the new deployment has had no request yet (minimum {minimum:.2f})"
            checks.append(_check("success_rate", "absolute", minimum, INCONCLUSIVE, reason, value=None, n=0))
        else:
            checks.append(_absolute_rate_check("success_rate", mine, minimum))
    drop = thresholds.get("max_success_drop")
    if drop is not None:
        if mine is None:
            reason = f"success_rate: the new deployment has had no request yet (allowed drop {drop:.2f})"
            checks.append(_check("success_rate", "relative", drop, INCONCLUSIVE, reason, value=None, n=0))
        elif theirs is not None:
            checks.append(_relative_rate_check("success_rate", mine, theirs, drop, confidence))
    return checks


def evaluate_canary(challenger, champion, thresholds, confidence=0.95, method="wilson"):
    """The canary's checks of live traffic: the new deployment's (challenger's) success rate, absolute and against
    the old deployment (champion) that served the same alias at the same time, and the verdict.

    The same rules as the gate's rates (:func:`evaluate`): the success rate with its interval (:func:`rate`), its
    minimum judged by :func:`check_minimum`, its drop against the champion by :func:`check_max_drop` on Newcombe's
    interval of the difference (:func:`rate_difference`; the two deployments saw different requests, so no paired
    test). A side without requests gives no interval: a challenger without requests is ``inconclusive``, a champion
    without requests skips the relative check.

    :param challenger: ``(successes, requests)`` of the new deployment in the window
    :param champion: ``(successes, requests)`` of the old deployment in the same window
    :param thresholds: optional keys (None or absent: no check): ``min_success_rate`` (fraction 0..1),
        ``max_success_drop`` (fraction: 0.02 is two points)
    :param confidence: confidence level of every interval (0..1, default 0.95)
    :param method: rate interval, ``wilson`` or ``beta`` (Clopper-Pearson)
    :returns: dict with ``verdict``, ``checks`` (as :func:`evaluate`'s), ``challenger`` and ``champion`` (the success
        rate with its interval, or None without requests), ``confidence``, ``method``
    :raises ValueError: on a threshold out of range or unknown (naming it), a count out of range or a confidence
        outside (0, 1)
    """
    _require_stats()
    _check_confidence(confidence)
    _check_canary_thresholds(thresholds)
    sides = {}
    for name, (successes, n) in (("challenger", challenger), ("champion", champion)):
        sides[name] = None if n == 0 and successes == 0 else rate(successes, n, confidence, method)
    checks = _canary_checks(sides["challenger"], sides["champion"], thresholds, confidence)
    return {
        "verdict": verdict(c["verdict"] for c in checks),
        "checks": checks,
        "challenger": sides["challenger"],
        "champion": sides["champion"],
        "confidence": confidence,
        "method": method,
    }
