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

STATS_IMPORT_ERROR = None
try:
    import numpy
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint
except ImportError as exc:  # the module that uses this reports it with missing_required_lib("statsmodels")
    STATS_IMPORT_ERROR = exc

PASSED = "passed"
FAILED = "failed"
INCONCLUSIVE = "inconclusive"
RATE_METHODS = ("wilson", "beta")
# McNemar's exact binomial test below this many discordant pairs (statsmodels' documentation's advice: the
# chi-square approximation needs about 25)
MCNEMAR_EXACT_BELOW = 25


def _require_stats():
    if STATS_IMPORT_ERROR is not None:
        raise ImportError(f"the gate's statistics need statsmodels and numpy: {STATS_IMPORT_ERROR}")


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


def percentile(samples, q):
    """The ``q``-th percentile of latency samples (seconds), numpy's linear interpolation.

    :param samples: latencies in seconds (at least one)
    :param q: percentile, 0..100 (95 for p95)
    :returns: dict with ``value`` (seconds, None without samples), ``q`` and ``n``
    :raises ValueError: when ``q`` is outside 0..100
    """
    _require_stats()
    if not 0 <= q <= 100:
        raise ValueError(f"q must be a percentile from 0 to 100, got {q!r}")
    values = [float(s) for s in samples]
    return {"value": float(numpy.percentile(values, q)) if values else None, "q": q, "n": len(values)}


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
