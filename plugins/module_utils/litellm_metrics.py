# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-deployment request counts from the LiteLLM proxy's Prometheus metrics, for the canary.

Upstream: LiteLLM's ``prometheus`` callback (``litellm_settings.callbacks: ["prometheus"]``, needs the
``prometheus_client`` package beside the proxy) serves ``GET /metrics/`` in the text exposition format; with
LiteLLM 1.106.2 and no database it asks for the master key (``Authorization: Bearer``). Three counters per
deployment, labelled ``model_group`` (the alias) and ``model_id`` (the deployment's ``model_info.id``):

* ``litellm_deployment_total_requests_total``: requests sent to the deployment;
* ``litellm_deployment_success_responses_total``: of those, answered;
* ``litellm_deployment_failure_responses_total``: of those, failed (an error status, a timeout, a refused
  connection), whether or not a fallback then answered the client.

The counters live in the proxy's process (no database): they start at 0 when a Pod starts. :class:`CounterTracker`
counts increases across scrapes the way Prometheus' ``increase()`` does, so a restarted Pod loses no request it
counted after the restart. With more than one LiteLLM replica a scrape through the Service reads one Pod at a time:
the canary expects one replica (the chart's default).

The exposition text is parsed by ``prometheus_client.parser`` (the Prometheus project's Python client).
"""

from __future__ import annotations

from ansible_collections.homelab.inference.plugins.module_utils.tls import httpx_verify

try:
    import httpx
except ImportError:  # pragma: no cover - reported by the module through missing_required_lib
    httpx = None

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover - reported by the module through missing_required_lib
    text_string_to_metric_families = None

COUNTERS = {
    "requests": "litellm_deployment_total_requests_total",
    "successes": "litellm_deployment_success_responses_total",
    "failures": "litellm_deployment_failure_responses_total",
}
"""What :func:`deployment_counts` reports (key) and the sample it sums (value)."""


class MetricsError(Exception):
    """The metrics could not be read: no answer, an error status, or no LiteLLM deployment counters in the text."""


def deployment_counts(text, model_group):
    """The deployment counters of one model group in a Prometheus exposition text.

    :param text: the body of LiteLLM's ``/metrics/`` (str)
    :param model_group: the alias (``model_name``) whose deployments to count
    :returns: ``{model_id: {"requests": int, "successes": int, "failures": int}}``, summed over the other labels
        (client, key, exception class); a deployment with no request yet is absent
    :raises MetricsError: when prometheus_client is missing or the text does not parse
    """
    if text_string_to_metric_families is None:
        raise MetricsError("the prometheus_client Python package is required to read LiteLLM's metrics")
    wanted = {sample: key for key, sample in COUNTERS.items()}
    counts = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = wanted.get(sample.name)
                if key is None or sample.labels.get("model_group") != model_group:
                    continue
                entry = counts.setdefault(sample.labels.get("model_id", ""), dict.fromkeys(COUNTERS, 0))
                entry[key] += int(sample.value)
    except ValueError as exc:
        raise MetricsError(f"LiteLLM's metrics do not parse as the Prometheus text format: {exc}") from exc
    return counts


class CounterTracker:
    """Increases of the deployment counters since the first scrape, across counter resets (a restarted Pod).

    Like Prometheus' ``increase()``: a counter that went down was reset, and its new value is all increase.
    """

    def __init__(self, baseline):
        """:param baseline: :func:`deployment_counts` at the start (the counts before the window are not counted)"""
        self.last = {mid: dict(c) for mid, c in baseline.items()}
        self.total = {}
        self.resets = 0

    def update(self, counts):
        """Add one scrape's :func:`deployment_counts`; returns :attr:`total` (counts since the baseline)."""
        reset = False
        for mid, entry in counts.items():
            before = self.last.get(mid, dict.fromkeys(COUNTERS, 0))
            into = self.total.setdefault(mid, dict.fromkeys(COUNTERS, 0))
            for key in COUNTERS:
                now, then = entry.get(key, 0), before.get(key, 0)
                if now < then:
                    reset = True
                into[key] += now if now < then else now - then
        # a deployment that vanished from the text was reset to nothing: its next counts are all new
        for mid in set(self.last) - set(counts):
            reset = True
            self.last[mid] = dict.fromkeys(COUNTERS, 0)
        self.resets += reset
        self.last.update({mid: dict(c) for mid, c in counts.items()})
        return self.total

    def of(self, model_id):
        """Counts of one deployment since the baseline (zeros when it had none)."""
        return dict(self.total.get(model_id, dict.fromkeys(COUNTERS, 0)))


class LiteLLMMetrics:
    """Reads the LiteLLM proxy's ``/metrics/``.

    Args:
        base_url (str): the proxy's root URL (a ``/v1`` suffix is dropped), for example ``http://litellm.ml.svc:4000``.
        api_key (str | None): the master key, sent as ``Authorization: Bearer``; never logged.
        timeout (float): seconds for each request.
        verify (bool | str): verify TLS certificates; a string is the path of a CA bundle (PEM).

    Raises:
        MetricsError: from :meth:`counts` when the proxy does not answer with metrics.
    """

    def __init__(self, base_url, api_key=None, timeout=30.0, verify=True):
        if httpx is None:
            raise MetricsError("the httpx Python package is required to read LiteLLM's metrics")
        base = base_url.rstrip("/")
        self.url = (base[: -len("/v1")] if base.endswith("/v1") else base) + "/metrics/"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout, verify=httpx_verify(verify))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.client.close()

    def text(self):
        """The exposition text of one scrape. Raises :class:`MetricsError` on a failed request or an error status."""
        try:
            response = self.client.get(self.url)
        except httpx.HTTPError as exc:
            raise MetricsError(f"GET {self.url} failed: {exc.__class__.__name__}: {exc}") from exc
        if response.status_code != 200:
            detail = response.text.strip()[:300]
            hint = (
                " (is the prometheus callback on, and prometheus_client installed beside the proxy?)"
                if response.status_code == 404
                else ""
            )
            raise MetricsError(f"GET {self.url} answered HTTP {response.status_code}: {detail}{hint}")
        return response.text

    def counts(self, model_group):
        """:func:`deployment_counts` of one scrape for ``model_group``."""
        return deployment_counts(self.text(), model_group)
