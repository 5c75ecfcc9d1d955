# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small client for the Ollama HTTP API (https://github.com/ollama/ollama/blob/main/docs/api.md), over httpx.

Used by the ``ollama_model`` and ``llm_validate`` modules and by the tests of the emulated Ollama in ``lab/``.
Every failure (HTTP error status, ``{"error": ...}`` line inside a 200 stream, connection problem, timeout)
raises :class:`OllamaError` (timeouts raise the subclass :class:`OllamaTimeout`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ansible_collections.homelab.inference.plugins.module_utils.model_names import same_model
from ansible_collections.homelab.inference.plugins.module_utils.tls import httpx_verify

try:
    import httpx

    HAS_HTTPX = True
    HTTPX_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the modules through missing_required_lib
    httpx = None
    HAS_HTTPX = False
    HTTPX_IMPORT_ERROR = exc

DEFAULT_TIMEOUT = 30.0
"""Default timeout in seconds for connect / read / write / pool of every request."""


class OllamaError(Exception):
    """An Ollama API call failed.

    Attributes:
        message (str): Ollama's own ``error`` text when it sent one, else a description of the failure.
        status (int | None): HTTP status code, or None when no HTTP response was received (connection error,
            timeout) or the error came as a line inside a 200 NDJSON stream.
        model (str | None): the model the call was about, when there is one.
    """

    def __init__(self, message: str, status: int | None = None, model: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.model = model

    def __str__(self) -> str:
        return self.message


class OllamaTimeout(OllamaError):
    """The request did not complete within the timeout (seconds)."""


def _error_text(response: httpx.Response) -> str:
    """Ollama's ``error`` field of an error response, or the raw body / reason."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    text = response.text.strip()
    return text or response.reason_phrase or f"HTTP {response.status_code}"


def _stream_items(response, model: str):
    """The objects of an NDJSON pull stream, one per non-empty line; raises OllamaError for a broken line, a line
    that is not an object, or an ``{"error": ...}`` line (Ollama reports failures inside a 200 stream)."""
    for raw in response.iter_lines():
        line = raw.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise OllamaError(f"invalid line in pull stream: {line[:200]!r}", model=model) from exc
        if not isinstance(item, dict):
            raise OllamaError(f"unexpected line in pull stream: {line[:200]!r}", model=model)
        if item.get("error"):
            raise OllamaError(str(item["error"]), model=model)
        yield item


class _PullTally:
    """What a pull stream said so far: the layers (digest -> total bytes, bytes done at the first and the last
    line that named it), the distinct statuses in order, and whether it said ``success``."""

    def __init__(self) -> None:
        self.total: dict[str, int] = {}
        self.first: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.statuses: list[str] = []
        self.success = False

    def add(self, item: dict) -> None:
        status = str(item.get("status", ""))
        if status and status not in self.statuses:
            self.statuses.append(status)
        digest = item.get("digest")
        if digest and item.get("total") is not None:
            self.total[digest] = int(item["total"])
            done = int(item.get("completed") or 0)
            self.first.setdefault(digest, done)
            self.done[digest] = max(done, self.done.get(digest, 0))
        if status == "success":
            self.success = True

    def progress(self, item: dict) -> dict:
        """``item`` plus ``total_bytes``/``completed_bytes`` over all layers seen so far and ``percent``."""
        total, completed = sum(self.total.values()), sum(self.done.values())
        percent = round(100.0 * completed / total, 1) if total else 0.0
        return dict(item, total_bytes=total, completed_bytes=completed, percent=100.0 if self.success else percent)

    def result(self) -> dict:
        return {
            "status": "success",
            "digest": max(self.total, key=lambda d: self.total[d]) if self.total else None,
            "total": sum(self.total.values()),
            "completed": sum(self.done.values()),
            "bytes_pulled": sum(self.done[d] - self.first[d] for d in self.done),
            "layers": self.total,
            "statuses": self.statuses,
        }


class OllamaClient:
    """Client for one Ollama server.

    Args:
        base_url (str): e.g. ``http://ollama.ml.svc.cluster.local:11434`` (no ``/api`` suffix).
        timeout (float): seconds for each request (connect, read gap, write); per-call override where offered.
        verify (bool | str): verify TLS certificates; a string is the path of a CA bundle (PEM) to trust.
        headers (dict[str, str] | None): extra headers sent with every request (e.g. Authorization for a proxy).

    Raises:
        OllamaError: from every method on failure (see the module docstring).
        ImportError: at construction when httpx is not installed.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = DEFAULT_TIMEOUT,
        verify: bool | str = True,
        headers: dict[str, str] | None = None,
    ):
        if not HAS_HTTPX:
            raise ImportError(f"httpx is required for OllamaClient: {HTTPX_IMPORT_ERROR}")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout,
            verify=httpx_verify(verify),
            headers=dict(headers or {}),
        )

    # -- plumbing -------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._client.close()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        model: str | None = None,
        json_body: Any = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        if timeout is not None:
            kwargs["timeout"] = float(timeout)
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            limit = timeout if timeout is not None else self.timeout
            raise OllamaTimeout(
                f"{method} {self.base_url}{path} timed out after {limit} s ({type(exc).__name__})", model=model
            ) from exc
        except httpx.HTTPError as exc:
            raise OllamaError(f"{method} {self.base_url}{path} failed: {exc}", model=model) from exc
        if response.status_code >= 400:
            raise OllamaError(_error_text(response), status=response.status_code, model=model)
        return response

    @staticmethod
    def _json(response: httpx.Response, model: str | None = None) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise OllamaError(
                f"invalid JSON from {response.request.url}: {response.text[:200]!r}",
                status=response.status_code,
                model=model,
            ) from exc

    # -- API ------------------------------------------------------------------------------------------------------

    def version(self) -> str:
        """``GET /api/version``: the server version string, e.g. ``"0.12.6"``."""
        return str(self._json(self._request("GET", "/api/version")).get("version", ""))

    def tags(self) -> list[dict]:
        """``GET /api/tags``: the locally present models.

        Returns:
            list[dict]: entries with ``name``, ``model``, ``digest``, ``size`` (bytes), ``modified_at``, ``details``.
        """
        return list(self._json(self._request("GET", "/api/tags")).get("models") or [])

    def has_model(self, model: str) -> dict | None:
        """The ``/api/tags`` entry for ``model`` (``x`` matches ``x:latest``), or None when it is not present."""
        for entry in self.tags():
            if same_model(entry.get("name") or entry.get("model") or "", model):
                return entry
        return None

    def show(self, model: str) -> dict:
        """``POST /api/show``: model details (``details``, ``model_info``, ``capabilities``, ``template`` ...).

        Raises:
            OllamaError: status 404 when the model is not present.
        """
        return self._json(self._request("POST", "/api/show", model=model, json_body={"model": model}), model)

    def ps(self) -> list[dict]:
        """``GET /api/ps``: models loaded in memory.

        Returns:
            list[dict]: entries with ``name``, ``model``, ``size`` (bytes in memory), ``size_vram`` (bytes),
            ``expires_at`` (RFC 3339 string), ``digest``, ``details``.
        """
        return list(self._json(self._request("GET", "/api/ps")).get("models") or [])

    def delete(self, model: str) -> None:
        """``DELETE /api/delete``: remove a local model.

        Raises:
            OllamaError: status 404 (``model 'x' not found``) when it is not present.
        """
        self._request("DELETE", "/api/delete", model=model, json_body={"model": model})

    def pull(
        self,
        model: str,
        on_progress: Callable[[dict], None] | None = None,
        timeout: float | None = None,
        insecure: bool = False,
    ) -> dict:
        """``POST /api/pull`` with ``stream: true``; read the NDJSON stream to its end.

        Every line is checked: Ollama sends HTTP 200 first and reports failures later as an ``{"error": ...}``
        line (e.g. ``pull model manifest: file does not exist`` for an unknown tag).

        Args:
            model (str): tag to pull, e.g. ``qwen2.5:14b``.
            on_progress (Callable[[dict], None] | None): called with each parsed line plus the aggregate keys
                ``total_bytes``/``completed_bytes`` (bytes over all layers seen so far) and ``percent`` (0-100).
            timeout (float | None): seconds allowed between two stream chunks (not for the whole pull);
                default the client timeout.
            insecure (bool): pass ``insecure: true`` (registry without TLS verification).

        Returns:
            dict: ``status`` ("success"), ``model``, ``digest`` (largest layer, the model blob), ``total``
            (bytes over all layers), ``completed`` (bytes), ``bytes_pulled`` (bytes actually transferred in this
            call: a resumed or already-present layer counts only the new part), ``layers``
            (``{digest: total}``), ``duration`` (seconds), ``statuses`` (distinct status texts in order).

        Raises:
            OllamaError: on an HTTP error status, an ``error`` line, a broken line, or a stream that ends without
                ``success``; OllamaTimeout when the server stays silent longer than ``timeout``.
        """
        body: dict[str, Any] = {"model": model, "stream": True}
        if insecure:
            body["insecure"] = True
        tally = _PullTally()
        started = time.monotonic()
        kwargs: dict[str, Any] = {"json": body}
        if timeout is not None:
            kwargs["timeout"] = float(timeout)
        try:
            with self._client.stream("POST", "/api/pull", **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise OllamaError(_error_text(response), status=response.status_code, model=model)
                for item in _stream_items(response, model):
                    tally.add(item)
                    if on_progress is not None:
                        on_progress(tally.progress(item))
        except httpx.TimeoutException as exc:
            limit = timeout if timeout is not None else self.timeout
            raise OllamaTimeout(f"pull of {model} stalled for more than {limit} s", model=model) from exc
        except httpx.HTTPError as exc:
            raise OllamaError(f"pull of {model} failed: {exc}", model=model) from exc
        if not tally.success:
            raise OllamaError(
                f"pull of {model} ended without 'success' (last status: {tally.statuses[-1:]})", model=model
            )
        return dict(tally.result(), model=model, duration=round(time.monotonic() - started, 3))

    def chat(
        self,
        model: str,
        messages: list[dict],
        format: str | dict | None = None,
        think: bool | str | None = None,
        keep_alive: str | int | None = None,
        options: dict | None = None,
        timeout: float | None = None,
    ) -> dict:
        """``POST /api/chat`` with ``stream: false``.

        Args:
            model (str): model tag.
            messages (list[dict]): ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
            format (str | dict | None): ``"json"`` or a JSON schema (dict) to constrain the output.
            think (bool | str | None): ``True``/``False`` or ``"low"|"medium"|"high"``; None leaves it out.
            keep_alive (str | int | None): e.g. ``"5m"``, ``-1`` (forever), ``0`` (unload now).
            options (dict | None): model options (``temperature``, ``num_ctx`` ...).
            timeout (float | None): seconds for this request (cold loads of big models on CPU take minutes).

        Returns:
            dict: Ollama's response: ``message`` (``role``, ``content``, optional ``thinking``), ``done``,
            ``done_reason``, ``total_duration``, ``load_duration``, ``prompt_eval_count``,
            ``prompt_eval_duration``, ``eval_count``, ``eval_duration`` (durations in nanoseconds).

        Raises:
            OllamaError: 404 model not present, 500 load failures (memory, load timeout), 503 busy.
            OllamaTimeout: no answer within ``timeout``.
        """
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": False}
        if format is not None:
            body["format"] = format
        if think is not None:
            body["think"] = think
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        if options:
            body["options"] = options
        return self._json(self._request("POST", "/api/chat", model=model, json_body=body, timeout=timeout), model)

    def generate(
        self,
        model: str,
        prompt: str = "",
        keep_alive: str | int | None = None,
        timeout: float | None = None,
        **fields: Any,
    ) -> dict:
        """``POST /api/generate`` with ``stream: false``; an empty prompt only loads the model (Ollama's preload).

        Args:
            model (str): model tag.
            prompt (str): prompt text.
            keep_alive (str | int | None): as for :meth:`chat`.
            timeout (float | None): seconds for this request.
            **fields: other request fields (``system``, ``format``, ``think``, ``options`` ...).

        Returns:
            dict: Ollama's response (``response``, ``done``, durations in nanoseconds).

        Raises:
            OllamaError: as for :meth:`chat`.
        """
        body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": False, **fields}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return self._json(self._request("POST", "/api/generate", model=model, json_body=body, timeout=timeout), model)


def ollama_argument_spec() -> dict:
    """Ansible argument spec of the shared connection options (doc fragment ``ollama``)."""
    return {
        "api_url": {"type": "str", "default": "http://127.0.0.1:11434"},
        "validate_certs": {"type": "bool", "default": True},
        "ca_path": {"type": "path"},
        "timeout": {"type": "float", "default": DEFAULT_TIMEOUT},
        "headers": {"type": "dict"},
    }


def client_from_module(module: Any) -> OllamaClient:
    """An :class:`OllamaClient` from a module's connection options; fails the module when httpx is missing.

    ``api_url`` left at its default is replaced by ``OLLAMA_HOST`` from the environment when that is set
    (``host:port`` without scheme gets ``http://``).
    """
    if not HAS_HTTPX:
        from ansible.module_utils.basic import missing_required_lib

        module.fail_json(msg=missing_required_lib("httpx"), exception=str(HTTPX_IMPORT_ERROR))
    import os

    params = module.params
    url = params["api_url"]
    env_host = os.environ.get("OLLAMA_HOST", "").strip()
    if env_host and url == ollama_argument_spec()["api_url"]["default"]:
        url = env_host if "://" in env_host else f"http://{env_host}"
    verify: bool | str = bool(params["validate_certs"])
    if verify and params.get("ca_path"):
        verify = params["ca_path"]
    return OllamaClient(url, timeout=params["timeout"], verify=verify, headers=params.get("headers"))
