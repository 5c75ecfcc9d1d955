"""Live traffic for the twin, standing in for Paperless-AI: chat requests for one alias through the twin's LiteLLM,
sent back to back from a few threads, as the operator's apps send them through the real proxy.

A canary needs live requests to judge (roles/llm_canary); in the lab Paperless-AI sends them, in the twin this does.
It counts what a client sees: which deployment answered (``x-litellm-model-id``, the ``model_info.id`` of a
canary's two deployments) and how many requests failed. ``python -m lab traffic ALIAS --seconds N`` runs it from a
shell and prints the counts as JSON.
"""

from __future__ import annotations

import threading
import time

import httpx

PROMPT = "Classify this document: Rechnung Nr. 2024-117, Stadtwerke, 84,20 EUR. Reply with its type."


class Traffic:
    """Requests for ``alias`` through LiteLLM at ``url`` with the master ``key``, from ``workers`` threads, each
    waiting ``pause`` seconds between its requests, until :meth:`stop` (or the ``with`` block ends).

    ``served`` counts answered requests per deployment id (None when the proxy sent none), ``failed`` the requests
    that got an error status or no answer, ``errors`` the last few error texts.
    """

    def __init__(self, url: str, key: str, alias: str, workers: int = 2, pause: float = 0.0, timeout: float = 60.0):
        self.url, self.key, self.alias = url.rstrip("/"), key, alias
        self.pause, self.timeout = pause, timeout
        self.served: dict[str | None, int] = {}
        self.failed = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(workers)]
        self.started = self.ended = None

    def _loop(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        body = {"model": self.alias, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16}
        # a connection per request, as a Service routes each new connection afresh
        with httpx.Client(
            base_url=self.url, headers=headers, timeout=self.timeout, limits=httpx.Limits(max_keepalive_connections=0)
        ) as c:
            while not self.stopping.is_set():
                try:
                    response = c.post("/v1/chat/completions", json=body)
                    ok, served = response.status_code == 200, response.headers.get("x-litellm-model-id")
                    error = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, served, error = False, None, f"{exc.__class__.__name__}: {exc}"
                with self.lock:
                    if ok:
                        self.served[served] = self.served.get(served, 0) + 1
                    else:
                        self.failed += 1
                        self.errors = [*self.errors[-4:], error]
                if self.pause:
                    self.stopping.wait(self.pause)

    def start(self) -> Traffic:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> dict:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=self.timeout + 10)
        self.ended = time.monotonic()
        return self.summary()

    def summary(self) -> dict:
        with self.lock:
            answered = sum(self.served.values())
            return {
                "alias": self.alias,
                "requests": answered + self.failed,
                "answered": answered,
                "failed": self.failed,
                "served_by": {str(k): v for k, v in sorted(self.served.items(), key=lambda kv: str(kv[0]))},
                "errors": list(self.errors),
                "seconds": round((self.ended or time.monotonic()) - (self.started or time.monotonic()), 3),
            }

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
