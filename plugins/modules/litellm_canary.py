#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, annotations, division, print_function

DOCUMENTATION = r"""
module: litellm_canary
short_description: Watch a LiteLLM canary's live traffic and decide whether the new deployment may take it all
description:
  - While LiteLLM serves one alias from two deployments (two C(model_list) entries with the same C(model_name),
    C(weight)s splitting the traffic, each with its C(model_info.id)), reads the proxy's per-deployment counters
    from its Prometheus metrics (C(GET /metrics/)) and compares the new deployment (the challenger) with the old
    one (the champion) on the live requests both served in the same window.
  - The success rate of each side comes with its confidence interval (Wilson score by default, statsmodels); a
    check is C(passed) when the interval clears its threshold, C(failed) when it lies on the wrong side,
    C(inconclusive) otherwise, as the gate's rates (module C(llm_validate)). Two checks, each optional - the
    challenger's success rate at least O(min_success_rate), and not worse than the champion's by more than
    O(max_success_drop) (Newcombe's interval of the difference).
  - The module decides once the challenger has O(min_requests) requests; a failed check ends the watch at once, an
    inconclusive one keeps it going until O(max_requests) or O(duration) seconds. Then O(on_inconclusive) decides.
    Metrics that cannot be read for the whole window fail the canary (it fails closed).
  - Counters reset when the proxy's Pod restarts; increases are counted across resets (as Prometheus'
    C(increase()) does), and the result says how many resets were seen.
  - The module changes nothing (C(changed) is always false). In check mode it sends nothing and returns
    C(skipped).
  - Upstream, LiteLLM 1.106.2 - the C(prometheus) callback (C(litellm_settings.callbacks)) with the
    C(prometheus_client) package installed beside the proxy; counters C(litellm_deployment_total_requests),
    C(litellm_deployment_success_responses), C(litellm_deployment_failure_responses), labelled C(model_group) and
    C(model_id). Without a database the endpoint asks for the master key.
version_added: "0.2.0"
author: home-lab inference project (!UNKNOWN)
extends_documentation_fragment:
  - homelab.inference.attributes
  - homelab.inference.openai_api
  - homelab.inference.openai_api.timeout
options:
  alias:
    description:
      - The alias both deployments serve (their C(model_name), the C(model_group) label of the metrics).
    type: str
    required: true
  champion_id:
    description:
      - C(model_info.id) of the old deployment.
    type: str
    required: true
  challenger_id:
    description:
      - C(model_info.id) of the new deployment.
    type: str
    required: true
  min_requests:
    description:
      - Requests the challenger must have served (answered or failed) before any verdict.
    type: int
    default: 20
  max_requests:
    description:
      - Challenger requests at which an inconclusive verdict becomes final (O(on_inconclusive) decides).
      - A challenger that answered all of 100 requests has a Wilson 95 % lower bound of 0.963, which clears the
        default O(min_success_rate) and, against a champion without failures, the default O(max_success_drop).
    type: int
    default: 100
  duration:
    description:
      - Most seconds to watch; an undecided canary ends then (O(on_inconclusive) decides). A home lab's live
        traffic is light - Paperless-AI sends a request per document - so the default is half an hour.
    type: float
    default: 1800
  poll_interval:
    description:
      - Seconds between two reads of the metrics.
    type: float
    default: 5
  min_success_rate:
    description:
      - Minimum success rate of the challenger, a fraction 0..1. Omit (or null) for no absolute check.
    type: float
    default: 0.90
  max_success_drop:
    description:
      - How much lower than the champion's the challenger's success rate may be, a fraction (0.02 is two points).
        Omit (or null) for no relative check.
    type: float
    default: 0.05
  confidence:
    description:
      - Confidence level of the intervals, 0..1 (exclusive).
    type: float
    default: 0.95
  interval_method:
    description:
      - Rate interval - C(wilson) (Wilson score) or C(beta) (exact Clopper-Pearson).
    type: str
    choices: [wilson, beta]
    default: wilson
  on_inconclusive:
    description:
      - What an undecided canary ends as - C(fail) (closed, the default) or C(pass).
    type: str
    choices: [fail, pass]
    default: fail
notes:
  - O(api_url) is the proxy's root URL (a C(/v1) suffix is dropped); O(api_key) the master key, never logged.
  - One LiteLLM replica (the chart's default) - each Pod counts its own requests and a scrape through the Service
    reads one Pod.
  - Uses the C(httpx), C(prometheus_client) and C(statsmodels) Python libraries on the host that runs the module.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Watch the canary of ollama-qwen until 20 live requests reached the new model
  homelab.inference.litellm_canary:
    api_url: http://litellm.ml.svc:4000
    api_key: "{{ litellm_master_key }}"
    alias: ollama-qwen
    champion_id: ollama-qwen.champion
    challenger_id: ollama-qwen.challenger
    min_requests: 20
    duration: 900
  register: canary
"""

RETURN = r"""
passed:
  description: Whether the new deployment may take all traffic (null in check mode).
  returned: always
  type: bool
verdict:
  description: C(passed), C(failed) or C(inconclusive) - the checks' verdict when the watch ended.
  returned: always
  type: str
  sample: failed
decided_by:
  description:
    - Why the watch ended - C(verdict) (a check passed or failed), C(max_requests), C(duration), or C(metrics) (they
      could not be read).
  returned: always
  type: str
checks:
  description: One dict per check, as C(llm_validate)'s - metric, kind (absolute or relative), threshold,
    verdict, reason and the figures (value, low, high, n).
  returned: always
  type: list
  elements: dict
challenger:
  description: Counts of the new deployment in the window - requests, successes, failures - and its success rate
    with the interval (C(rate), null without requests).
  returned: always
  type: dict
champion:
  description: The same for the old deployment.
  returned: always
  type: dict
seconds:
  description: Seconds the watch took.
  returned: always
  type: float
scrapes:
  description: Reads of the metrics.
  returned: always
  type: int
resets:
  description: Reads that showed a counter reset (the proxy restarted).
  returned: always
  type: int
failures:
  description: Why the canary failed, one line each (empty when it passed).
  returned: always
  type: list
  elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.homelab.inference.plugins.module_utils import gate_stats
from ansible_collections.homelab.inference.plugins.module_utils.litellm_metrics import (
    CounterTracker,
    LiteLLMMetrics,
    MetricsError,
    httpx,
    text_string_to_metric_families,
)
from ansible_collections.homelab.inference.plugins.module_utils.openai_client import (
    openai_api_argument_spec,
    verify_from_params,
)


def module_args() -> dict:
    """The argument spec: the API options (doc fragment openai_api), the deployments and the decision's settings."""
    argument_spec = openai_api_argument_spec()
    argument_spec.update(
        alias={"type": "str", "required": True},
        champion_id={"type": "str", "required": True},
        challenger_id={"type": "str", "required": True},
        min_requests={"type": "int", "default": 20},
        max_requests={"type": "int", "default": 100},
        duration={"type": "float", "default": 1800.0},
        poll_interval={"type": "float", "default": 5.0},
        min_success_rate={"type": "float", "default": 0.90},
        max_success_drop={"type": "float", "default": 0.05},
        confidence={"type": "float", "default": 0.95},
        interval_method={"type": "str", "choices": ["wilson", "beta"], "default": "wilson"},
        on_inconclusive={"type": "str", "choices": ["fail", "pass"], "default": "fail"},
    )
    return argument_spec


def option_problems(params: dict) -> list[str]:
    """Problems with the options, each naming the field and what it must be."""
    problems = []
    if params["min_requests"] < 1:
        problems.append(f"min_requests must be at least 1 (got {params['min_requests']})")
    if params["max_requests"] < params["min_requests"]:
        problems.append(
            f"max_requests must be at least min_requests ({params['min_requests']}), got {params['max_requests']}"
        )
    for name in ("duration", "poll_interval", "timeout"):
        if params[name] <= 0:
            problems.append(f"{name} must be a positive number of seconds (got {params[name]:g})")
    for name in ("min_success_rate", "max_success_drop"):
        value = params.get(name)
        if value is not None and not 0 <= value <= 1:
            problems.append(f"{name} must be a fraction from 0 to 1 (got {value:g})")
    if not 0 < params["confidence"] < 1:
        problems.append(f"confidence must be between 0 and 1, exclusive (got {params['confidence']:g})")
    if params["champion_id"] == params["challenger_id"]:
        problems.append(
            "champion_id and challenger_id must name two deployments (both are " + params["champion_id"] + ")"
        )
    return problems


def side(counts: dict, interval) -> dict:
    """One deployment's counts with its success rate (``rate``, None without requests)."""
    return dict(counts, rate=interval)


class Canary:
    """Read the deployment counters until the checks decide, the requests run out or the time does."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.params = module.params

    def run(self) -> None:
        params = self.params
        for name, missing in (("httpx", httpx is None), ("prometheus_client", text_string_to_metric_families is None)):
            if missing:
                self.module.fail_json(msg=missing_required_lib(name))
        problems = option_problems(params)
        if problems:
            self.module.fail_json(msg="invalid options: " + "; ".join(problems), changed=False)
        if self.module.check_mode:
            self.module.exit_json(
                changed=False, skipped=True, passed=None, verdict=None, msg="check mode: no live traffic watched"
            )
        with LiteLLMMetrics(
            params["api_url"], api_key=params["api_key"], timeout=params["timeout"], verify=verify_from_params(params)
        ) as metrics:
            result = self.watch(metrics)
        result["passed"] = result["verdict"] == gate_stats.PASSED or (
            result["verdict"] == gate_stats.INCONCLUSIVE and params["on_inconclusive"] == "pass"
        )
        result["failures"] = [] if result["passed"] else self.failures(result)
        result["msg"] = self.summary(result)
        if result["passed"]:
            self.module.exit_json(changed=False, **result)
        self.module.fail_json(changed=False, **result)

    def watch(self, metrics: LiteLLMMetrics) -> dict:
        """Read the metrics every ``poll_interval`` seconds until :meth:`poll` decides or ``duration`` runs out."""
        params = self.params
        started = time.monotonic()
        deadline = started + params["duration"]
        state = {"tracker": None, "scrapes": 0, "error": None, "evaluation": None, "decided_by": "duration"}
        while not self.poll(metrics, state):
            if time.monotonic() + params["poll_interval"] > deadline:
                break
            time.sleep(params["poll_interval"])
        return self.outcome(state, time.monotonic() - started)

    def poll(self, metrics: LiteLLMMetrics, state: dict) -> bool:
        """One read of the metrics into ``state``; True when the watch may end (a verdict, or max_requests)."""
        params = self.params
        try:
            counts = metrics.counts(params["alias"])
        except MetricsError as exc:
            state["error"] = str(exc)
            return False
        state["scrapes"] += 1
        state["error"] = None
        if state["tracker"] is None:  # the baseline: requests before the window do not count
            state["tracker"] = CounterTracker(counts)
            return False
        state["tracker"].update(counts)
        state["evaluation"] = self.evaluate(state["tracker"])
        n = state["tracker"].of(params["challenger_id"])["requests"]
        if n < params["min_requests"]:
            return False
        if state["evaluation"]["verdict"] != gate_stats.INCONCLUSIVE:
            state["decided_by"] = "verdict"
            return True
        if n >= params["max_requests"]:
            state["decided_by"] = "max_requests"
            return True
        return False

    def outcome(self, state: dict, seconds: float) -> dict:
        """The result of the watch from its last ``state``."""
        params = self.params
        tracker, evaluation = state["tracker"], state["evaluation"]
        if tracker is None or (state["error"] and evaluation is None):
            state["decided_by"] = "metrics"
        zero = {"requests": 0, "successes": 0, "failures": 0}
        challenger = tracker.of(params["challenger_id"]) if tracker else zero
        champion = tracker.of(params["champion_id"]) if tracker else zero
        if evaluation is None or challenger["requests"] < params["min_requests"]:
            # too few requests for a verdict: whatever the intervals say, the canary is undecided
            evaluation = dict(evaluation or self.evaluate(tracker), verdict=gate_stats.INCONCLUSIVE)
        if state["decided_by"] == "metrics":
            evaluation["verdict"] = gate_stats.FAILED
        return {
            "verdict": evaluation["verdict"],
            "decided_by": state["decided_by"],
            "checks": evaluation["checks"],
            "challenger": side(challenger, evaluation["challenger"]),
            "champion": side(champion, evaluation["champion"]),
            "alias": params["alias"],
            "min_requests": params["min_requests"],
            "seconds": round(seconds, 3),
            "scrapes": state["scrapes"],
            "resets": tracker.resets if tracker else 0,
            "metrics_error": state["error"],
            "confidence": params["confidence"],
            "method": params["interval_method"],
        }

    def evaluate(self, tracker) -> dict:
        params = self.params
        empty = {"successes": 0, "requests": 0}
        mine = tracker.of(params["challenger_id"]) if tracker else empty
        theirs = tracker.of(params["champion_id"]) if tracker else empty
        thresholds = {name: params.get(name) for name in gate_stats.CANARY_THRESHOLD_KEYS}
        # a scrape may fall between the two counters' increments of one request: never fewer requests than outcomes
        return gate_stats.evaluate_canary(
            (mine["successes"], max(mine["requests"], mine["successes"] + mine.get("failures", 0))),
            (theirs["successes"], max(theirs["requests"], theirs["successes"] + theirs.get("failures", 0))),
            thresholds,
            confidence=params["confidence"],
            method=params["interval_method"],
        )

    def failures(self, result: dict) -> list[str]:
        params = self.params
        if result["decided_by"] == "metrics":
            return [f"LiteLLM's metrics could not be read: {result['metrics_error'] or 'no read succeeded'}"]
        lines = [c["reason"] for c in result["checks"] if c["verdict"] == gate_stats.FAILED]
        if result["verdict"] == gate_stats.INCONCLUSIVE:
            n = result["challenger"]["requests"]
            why = (
                f"the new deployment served {n} live request(s) in {result['seconds']:.0f} s, fewer than the "
                f"{params['min_requests']} a verdict needs"
                if n < params["min_requests"]
                else "; ".join(c["reason"] for c in result["checks"] if c["verdict"] == gate_stats.INCONCLUSIVE)
            )
            lines.append(f"inconclusive after {result['decided_by'].replace('_', ' ')} ({why}); on_inconclusive=fail")
        return lines

    @staticmethod
    def summary(result: dict) -> str:
        mine, theirs = result["challenger"], result["champion"]
        shown = (
            f"new deployment {mine['successes']}/{mine['requests']} answered, old {theirs['successes']}/"
            f"{theirs['requests']}, in {result['seconds']:.0f} s"
        )
        if result["passed"]:
            return f"canary of {result['alias']} passed ({result['verdict']}): {shown}"
        return f"canary of {result['alias']} failed: {'; '.join(result['failures'])} ({shown})"


def main():
    module = AnsibleModule(argument_spec=module_args(), supports_check_mode=True)
    Canary(module).run()


if __name__ == "__main__":
    main()
