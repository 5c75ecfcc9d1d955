"""The gate's statistics (plugins/module_utils/gate_stats.py): intervals as statsmodels computes them, and the
verdict rules on each side of a threshold."""

from __future__ import annotations

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.gate_stats import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    check_max_drop,
    check_minimum,
    evaluate,
    evaluate_canary,
    paired_test,
    percentile,
    rate,
    rate_difference,
    verdict,
)


def test_nine_of_ten_cannot_tell_ninety_from_ninety_nine_percent():
    # story 12.8: 9 valid answers of 10 "looked acceptable" against a 95 % target
    got = rate(9, 10)
    assert got["value"] == 0.9 and got["n"] == 10 and got["method"] == "wilson"
    assert got["low"] == pytest.approx(0.596, abs=1e-3) and got["high"] == pytest.approx(0.982, abs=1e-3)
    assert check_minimum(got, 0.95) == INCONCLUSIVE
    exact = rate(9, 10, method="beta")
    assert exact["low"] < got["low"], "Clopper-Pearson is wider than Wilson"


@pytest.mark.parametrize(
    ("successes", "n", "threshold", "expected"),
    [
        (10, 10, 0.70, PASSED),  # Wilson [0.722, 1.0] clears 0.70
        (9, 10, 0.70, INCONCLUSIVE),
        (2, 10, 0.70, FAILED),  # [0.057, 0.510] lies below
        (73, 73, 0.95, PASSED),  # the smallest all-valid sample whose lower bound reaches 0.95
        (72, 72, 0.95, INCONCLUSIVE),
    ],
)
def test_a_minimum_passes_or_fails_only_when_the_interval_is_on_one_side(successes, n, threshold, expected):
    assert check_minimum(rate(successes, n), threshold) == expected


def test_the_difference_and_a_maximum_drop():
    worse = rate_difference((8, 10), (10, 10))
    assert worse["value"] == pytest.approx(-0.2) and worse["method"] == "newcomb"
    assert worse["low"] == pytest.approx(-0.510, abs=1e-3) and worse["high"] == pytest.approx(0.112, abs=1e-3)
    assert check_max_drop(worse, 0.05) == INCONCLUSIVE, "ten documents cannot tell a 20-point drop from none"
    clearly_worse = rate_difference((40, 100), (95, 100))
    assert check_max_drop(clearly_worse, 0.05) == FAILED
    as_good = rate_difference((99, 100), (98, 100))
    assert check_max_drop(as_good, 0.05) == PASSED


def test_mcnemar_on_the_same_documents():
    champion = [True] * 20
    challenger = [True] * 12 + [False] * 8
    got = paired_test(challenger, champion)
    assert got["table"] == [[12, 8], [0, 0]] and got["discordant"] == 8 and got["exact"] is True
    assert got["pvalue"] == pytest.approx(2 * 0.5**8)  # the exact binomial test of 0 of 8 discordant
    same = paired_test([True, False, True], [True, False, True])
    assert same["discordant"] == 0 and same["pvalue"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one outcome per document for both models, got 2 and 3"):
        paired_test([True, True], [True, True, False])


def test_percentile_with_its_sample_size():
    got = percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95)
    assert got == {"value": pytest.approx(4.8), "q": 95, "n": 5, "method": "linear"}
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95, method="inverted_cdf")["value"] == 5.0, "the nearest rank"
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 80, method="inverted_cdf")["value"] == 4.0
    assert percentile([], 95) == {"value": None, "q": 95, "n": 0, "method": "linear"}
    with pytest.raises(ValueError, match="q must be a percentile from 0 to 100"):
        percentile([1.0], 950)


def test_the_verdict_is_the_worst_check():
    assert verdict([PASSED, INCONCLUSIVE, PASSED]) == INCONCLUSIVE
    assert verdict([INCONCLUSIVE, FAILED]) == FAILED
    assert verdict([PASSED, PASSED]) == PASSED
    assert verdict([]) == PASSED
    with pytest.raises(ValueError, match="unknown check verdict"):
        verdict(["maybe"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rate(11, 10), "rate: successes must be an integer from 0 to 10, got 11"),
        (lambda: rate(0, 0), "rate: the number of documents must be a positive integer, got 0"),
        (lambda: rate(5, 10, confidence=95), "confidence must be between 0 and 1"),
        (lambda: rate(5, 10, method="wald"), "method must be one of wilson, beta"),
        (lambda: rate_difference((5, 10), (3, 2)), "champion: successes must be an integer from 0 to 2"),
        (lambda: check_max_drop({"low": 0, "high": 0}, -0.1), "max_drop must be 0 or more"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _docs(n, correct, valid=None, latency=1.0, prefix="doc"):
    valid = n if valid is None else valid
    return [
        {"id": f"{prefix}-{i:03d}", "valid": i < valid, "correct": i < correct, "latency": latency, "thinking": False}
        for i in range(n)
    ]


RELATIVE = {"min_accuracy": 0.70, "max_accuracy_drop": 0.05}


def test_a_challenger_better_than_the_champion_passes():
    got = evaluate(_docs(40, 40), RELATIVE, champion_docs=_docs(40, 30))
    assert got["verdict"] == PASSED, got["checks"]
    relative = [c for c in got["checks"] if c["kind"] == "relative"]
    assert [c["metric"] for c in relative] == ["accuracy"]
    accuracy = next(c for c in relative if c["metric"] == "accuracy")
    assert accuracy["challenger"] == 1.0 and accuracy["champion"] == 0.75 and accuracy["value"] == pytest.approx(0.25)
    assert accuracy["low"] > -0.05, accuracy
    assert got["paired"]["accuracy"]["table"] == [[30, 0], [10, 0]] and got["paired"]["accuracy"]["n"] == 40


def test_above_every_minimum_but_clearly_worse_than_the_champion_fails_naming_both_values():
    got = evaluate(_docs(80, 68), RELATIVE, champion_docs=_docs(80, 80))
    assert got["verdict"] == FAILED
    absolute = next(c for c in got["checks"] if c["metric"] == "accuracy" and c["kind"] == "absolute")
    assert absolute["verdict"] == PASSED, "0.85 of 80 clears 0.70 on its own"
    relative = next(c for c in got["checks"] if c["metric"] == "accuracy" and c["kind"] == "relative")
    assert relative["verdict"] == FAILED and relative["high"] < -0.05
    assert (
        "accuracy 0.85 (n=80) against the champion's 1.00 (n=80): change -0.15 (95 % CI -0.24 to -0.07)"
        in relative["reason"]
    )
    assert "worse than the allowed drop of 0.05" in relative["reason"]


def test_a_borderline_challenger_is_inconclusive_until_more_documents_tell():
    at_ten = evaluate(_docs(10, 8), {"min_accuracy": 0.70})
    assert at_ten["verdict"] == INCONCLUSIVE and at_ten["champion"] is None and at_ten["paired"] == {}
    assert (
        "accuracy 0.80 (95 % CI 0.49 to 0.94, n=10) neither clears nor misses the minimum 0.70"
        in (at_ten["checks"][0]["reason"])
    )
    assert evaluate(_docs(60, 57), {"min_accuracy": 0.70})["verdict"] == PASSED
    assert evaluate(_docs(60, 30), {"min_accuracy": 0.70})["verdict"] == FAILED


def test_latency_thinking_and_thresholds_left_out():
    slow = evaluate(
        _docs(10, 10, latency=9.0),
        {"max_p95_latency": 6, "max_p95_latency_ratio": 1.5},
        champion_docs=_docs(10, 10, latency=4.0),
    )
    assert [c["verdict"] for c in slow["checks"]] == [FAILED, PASSED, FAILED]
    assert slow["checks"][0]["reason"] == "p95 latency 9 s (n=10) not below the maximum 6 s"
    assert "2.25 x the champion's 4 s (n=10), beyond the maximum 1.5 x" in slow["checks"][2]["reason"]
    thinking = _docs(5, 5)
    thinking[2]["thinking"] = True
    assert evaluate(thinking, {})["checks"][0]["reason"] == "thinking output in 1/5 answers"
    assert evaluate(thinking, {"allow_thinking": True}) == {
        **evaluate(thinking, {"allow_thinking": True}),
        "verdict": PASSED,
        "checks": [],
    }


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ({"min_accuracy": 70}, "min_accuracy must be a fraction from 0 to 1"),
        ({"max_accuracy_drop": -0.1}, "max_accuracy_drop must be a fraction from 0 to 1"),
        ({"max_p95_latency": 0}, "max_p95_latency must be a positive number"),
        ({"min_acuracy": 0.7}, "unknown threshold.s. min_acuracy"),
    ],
)
def test_a_bad_threshold_is_named(thresholds, message):
    with pytest.raises(ValueError, match=message):
        evaluate(_docs(3, 3), thresholds)


# -- the canary --------------------------------------------------------------------------------------------------------


def test_a_canary_without_failures_passes_only_with_enough_requests():
    thresholds = {"min_success_rate": 0.90, "max_success_drop": 0.05}
    # 20 of 20: Wilson's lower bound 0.839 cannot clear 0.90 yet
    early = evaluate_canary((20, 20), (80, 80), thresholds)
    assert early["verdict"] == INCONCLUSIVE
    assert early["challenger"]["low"] == pytest.approx(0.8389, abs=1e-3)
    # 100 of 100 (lower bound 0.963) against 400 of 400: both checks pass
    late = evaluate_canary((100, 100), (400, 400), thresholds)
    assert late["verdict"] == PASSED
    assert [c["verdict"] for c in late["checks"]] == [PASSED, PASSED]
    assert [c["kind"] for c in late["checks"]] == ["absolute", "relative"]


def test_a_canary_failing_four_in_ten_fails_both_checks_with_its_figures():
    got = evaluate_canary((12, 20), (80, 80), {"min_success_rate": 0.90, "max_success_drop": 0.05})
    assert got["verdict"] == FAILED
    absolute, relative = got["checks"]
    assert absolute["verdict"] == FAILED and "success_rate 0.60" in absolute["reason"] and "0.90" in absolute["reason"]
    assert relative["verdict"] == FAILED and relative["champion"] == 1.0 and relative["challenger"] == 0.6
    assert "worse than the allowed drop of 0.05" in relative["reason"]


def test_a_canary_side_without_requests():
    # no challenger request: undecided whatever the thresholds; no champion request: no relative check
    none_yet = evaluate_canary((0, 0), (10, 10), {"min_success_rate": 0.9, "max_success_drop": 0.05})
    assert none_yet["verdict"] == INCONCLUSIVE and none_yet["challenger"] is None
    assert all("no request yet" in c["reason"] for c in none_yet["checks"])
    alone = evaluate_canary((100, 100), (0, 0), {"min_success_rate": 0.9, "max_success_drop": 0.05})
    assert alone["champion"] is None and [c["kind"] for c in alone["checks"]] == ["absolute"]
    assert alone["verdict"] == PASSED


def test_canary_thresholds_and_counts_are_checked():
    with pytest.raises(ValueError, match="min_success_rate must be a fraction"):
        evaluate_canary((1, 1), (1, 1), {"min_success_rate": 90})
    with pytest.raises(ValueError, match=r"unknown canary threshold.*min_accuracy"):
        evaluate_canary((1, 1), (1, 1), {"min_accuracy": 0.9})
    with pytest.raises(ValueError, match="successes must be an integer from 0 to 2"):
        evaluate_canary((3, 2), (1, 1), {})
