# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A client probe: what a client of the LiteLLM proxy sees while the tier changes under it.

One thread per alias sends a short non-streaming chat completion (``POST {base}/chat/completions``, the OpenAI
chat API that LiteLLM serves) every ``interval`` seconds, as a client such as Paperless-AI would, until a stop
condition: the stop file exists, the owner process (the ``ansible-playbook`` that started the probe) is gone, or
``max_duration`` seconds have passed. Each request is one :class:`ProbeEvent`; :func:`summarize` turns them into
the figures the run report shows per alias:

* ``requests`` and ``failed``: a request fails when no answer came back (HTTP error status, refused or reset
  connection, timeout). An answer a fallback model group gave is an answer (counted in ``fallbacks``).
* ``longest_gap_s``: the longest time the alias gave no answer, in seconds: from the start of the first failed
  request of a run of failures to the end of the next answered request (or the end of the probe). 0 when no
  request failed.
* ``slowest_s``: the slowest answered request, seconds (a cold model load shows here).
* ``errors``: each distinct failure message with its count and the first and last time it was seen.

Used by the ``llm_probe`` module; the probing runs in the module process (Ansible ``async``), so it needs only
httpx (through :mod:`openai_client`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from ansible_collections.homelab.inference.plugins.module_utils.files import write_atomic
from ansible_collections.homelab.inference.plugins.module_utils.openai_client import OpenAIClient, OpenAIError

PROMPT = "Reply with the single word OK."
"""What the probe asks: short, so a probe request costs the model almost nothing."""


def paused_aliases(pause_file: str | None) -> set[str]:
    """The aliases a probe's pause file names, one per line (empty when there is no file or it cannot be read)."""
    if not pause_file:
        return set()
    try:
        with open(pause_file, encoding="utf-8") as fh:
            return set(fh.read().split())
    except OSError:
        return set()


@contextmanager
def probe_paused(pause_file: str | None, aliases: list[str]) -> Iterator[None]:
    """Keep a running probe off ``aliases`` while the ``with`` block runs (for example while a gate measures the
    latency of the runtime behind them): writes its pause file (atomically), removes it at the end, even when the
    block raises. Does nothing when ``pause_file`` or ``aliases`` is empty.

    Raises:
        OSError: the pause file cannot be written.
    """
    if not pause_file or not aliases:
        yield
        return
    write_atomic(pause_file, "\n".join(aliases) + "\n")
    try:
        yield
    finally:
        try:
            os.unlink(pause_file)
        except FileNotFoundError:
            pass


@dataclass
class ProbeEvent:
    """One probe request.

    Attributes:
        alias (str): the model alias requested.
        start (float): wall-clock start, seconds since the epoch.
        duration (float): seconds until the answer or the failure.
        ok (bool): an answer came back (HTTP 200 with a completion).
        error (str | None): why not, when ``ok`` is false.
        model_group (str | None): ``x-litellm-model-group`` of the answer.
        fallback (bool): a fallback model group answered (``x-litellm-attempted-fallbacks`` > 0).
    """

    alias: str
    start: float
    duration: float
    ok: bool
    error: str | None = None
    model_group: str | None = None
    fallback: bool = False


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists on this host (signal 0; a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class ClientProbe:
    """Probe aliases through one OpenAI-compatible endpoint (the LiteLLM proxy) until told to stop.

    Args:
        client_factory (Callable[[], OpenAIClient]): makes one client per alias thread (httpx clients are not
            shared between threads).
        aliases (list[str]): the model aliases to request.
        interval (float): seconds between the starts of two requests to one alias (a slower answer delays the
            next request; requests to one alias never overlap).
        timeout (float): seconds each request may take before it counts as failed.
        max_tokens (int): ``max_tokens`` of each request.
        should_stop (Callable[[], str | None]): returns why the probe stops (for example ``"stop file"``), or
            None to go on; asked before each request and while waiting.
        events_file (str | None): when set, each event is appended to it as a JSON line as it happens.
        paused (Callable[[str], bool] | None): True while requests to that alias must wait (for example while a
            gate measures the latency of the runtime that serves it: probe requests would queue with the gate's);
            the paused time is reported per alias.
    """

    def __init__(
        self,
        client_factory: Callable[[], OpenAIClient],
        aliases: list[str],
        interval: float,
        timeout: float,
        max_tokens: int,
        should_stop: Callable[[], str | None],
        events_file: str | None = None,
        paused: Callable[[str], bool] | None = None,
    ):
        self.client_factory = client_factory
        self.aliases = list(aliases)
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.max_tokens = int(max_tokens)
        self.should_stop = should_stop
        self.events_file = events_file
        self.paused = paused or (lambda alias: False)
        self.paused_s: dict[str, float] = {alias: 0.0 for alias in self.aliases}
        self.events: list[ProbeEvent] = []
        self.stopped_by: str | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def _record(self, event: ProbeEvent) -> None:
        with self._lock:
            self.events.append(event)
            if self.events_file:
                with open(self.events_file, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(asdict(event)) + "\n")

    def request(self, client: OpenAIClient, alias: str) -> ProbeEvent:
        """Send one probe request for ``alias`` and describe what happened (never raises for HTTP failures)."""
        start, began = time.time(), time.monotonic()
        try:
            _data, headers = client.chat(
                alias,
                [{"role": "user", "content": PROMPT}],
                extra_body={"max_tokens": self.max_tokens},
                timeout=self.timeout,
            )
        except OpenAIError as exc:
            # one line: the report lists the errors
            return ProbeEvent(alias, start, time.monotonic() - began, False, error=" ".join(str(exc).split())[:300])
        try:
            fallbacks = int(headers.get("x-litellm-attempted-fallbacks") or 0)
        except ValueError:
            fallbacks = 0
        return ProbeEvent(
            alias,
            start,
            time.monotonic() - began,
            True,
            model_group=headers.get("x-litellm-model-group"),
            fallback=fallbacks > 0,
        )

    def _stop_reason(self) -> str | None:
        if self._done.is_set():
            return self.stopped_by
        reason = self.should_stop()
        if reason:
            with self._lock:
                if not self._done.is_set():
                    self.stopped_by = reason
                    self._done.set()
        return self.stopped_by if self._done.is_set() else None

    def _loop(self, alias: str) -> None:
        client = self.client_factory()
        try:
            while self._stop_reason() is None:
                began = time.monotonic()
                if self.paused(alias):
                    self._done.wait(min(self.interval, 0.2))
                    self.paused_s[alias] += time.monotonic() - began
                    continue
                self._record(self.request(client, alias))
                while self._stop_reason() is None:
                    left = self.interval - (time.monotonic() - began)
                    if left <= 0:
                        break
                    self._done.wait(min(left, 0.2))
        finally:
            client.close()

    def run(self) -> dict:
        """Probe every alias until a stop condition; returns :func:`summarize` of the events."""
        started = time.time()
        threads = [threading.Thread(target=self._loop, args=(alias,), daemon=True) for alias in self.aliases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return summarize(self.events, self.aliases, started, time.time(), self.interval, self.stopped_by, self.paused_s)


def summarize(
    events: list[ProbeEvent],
    aliases: list[str],
    started: float,
    finished: float,
    interval: float,
    stopped_by: str | None = None,
    paused_s: dict[str, float] | None = None,
) -> dict:
    """The probe's figures per alias (see the module docstring for each one's meaning).

    Args:
        events (list[ProbeEvent]): every request, any order.
        aliases (list[str]): the aliases probed (an alias without events still gets a row).
        started (float), finished (float): wall-clock bounds of the probe, seconds since the epoch.
        interval (float): the probe interval, seconds (reported back).
        stopped_by (str | None): why the probe stopped.
        paused_s (dict[str, float] | None): alias -> seconds its requests were paused.

    Returns:
        dict: ``summary`` (one line for people), ``started``, ``finished`` (ISO 8601), ``duration_s``,
        ``interval_s``, ``stopped_by``, ``failed`` (all aliases), ``longest_gap_s`` (all aliases) and
        ``aliases``: alias -> ``requests``, ``failed``, ``fallbacks``, ``longest_gap_s``, ``slowest_s``,
        ``errors`` (list of ``message``, ``count``, ``first``, ``last``), ``model_groups`` (model group -> answers),
        ``paused_s``.
    """
    per_alias: dict[str, dict] = {}
    for alias in aliases:
        mine = sorted((e for e in events if e.alias == alias), key=lambda e: e.start)
        longest, gap_start = 0.0, None
        errors: dict[str, dict] = {}
        groups: dict[str, int] = {}
        for event in mine:
            if event.ok:
                groups[event.model_group or "?"] = groups.get(event.model_group or "?", 0) + 1
                if gap_start is not None:
                    longest = max(longest, event.start + event.duration - gap_start)
                    gap_start = None
                continue
            if gap_start is None:
                gap_start = event.start
            seen = errors.setdefault(event.error or "?", {"message": event.error or "?", "count": 0})
            seen["count"] += 1
            seen.setdefault("first", _iso(event.start))
            seen["last"] = _iso(event.start)
        if gap_start is not None:
            longest = max(longest, finished - gap_start)
        answered = [e for e in mine if e.ok]
        per_alias[alias] = {
            "requests": len(mine),
            "failed": len(mine) - len(answered),
            "fallbacks": sum(1 for e in answered if e.fallback),
            "longest_gap_s": round(longest, 2),
            "slowest_s": round(max((e.duration for e in answered), default=0.0), 2),
            "errors": sorted(errors.values(), key=lambda e: -e["count"])[:10],
            "model_groups": groups,
            "paused_s": round((paused_s or {}).get(alias, 0.0), 1),
        }
    failed = sum(a["failed"] for a in per_alias.values())
    requests = sum(a["requests"] for a in per_alias.values())
    summary = f"{failed} of {requests} requests failed in {finished - started:.0f} s; " + ", ".join(
        f"{alias}: {a['failed']} of {a['requests']} failed, longest gap {a['longest_gap_s']:g} s"
        + (f", {a['fallbacks']} answered by a fallback" if a["fallbacks"] else "")
        + (f", paused {a['paused_s']:g} s during a gate" if a["paused_s"] else "")
        for alias, a in per_alias.items()
    )
    return {
        "summary": summary,
        "started": _iso(started),
        "finished": _iso(finished),
        "duration_s": round(finished - started, 1),
        "interval_s": interval,
        "stopped_by": stopped_by,
        "failed": failed,
        "longest_gap_s": max((a["longest_gap_s"] for a in per_alias.values()), default=0.0),
        "aliases": per_alias,
    }
