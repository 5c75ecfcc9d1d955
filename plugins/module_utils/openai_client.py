# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small client for OpenAI-compatible chat APIs (vLLM, the LiteLLM proxy, OpenAI), over httpx.

Upstream API: https://platform.openai.com/docs/api-reference/chat (``POST {base}/chat/completions``,
``GET {base}/models``). ``base_url`` includes the version path, like the OpenAI SDK's ``base_url`` and LiteLLM's
``api_base``: ``http://vllm-api.ml.svc.cluster.local:8000/v1``, ``http://litellm.ml.svc:4000/v1``.

Used by the ``llm_validate`` and ``litellm_route_check`` modules. Every failure (HTTP error status, connection
problem, a body that is not JSON) raises :class:`OpenAIError`; a timeout raises the subclass :class:`OpenAITimeout`.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.homelab.inference.plugins.module_utils.tls import httpx_verify

try:
    import httpx

    HAS_HTTPX = True
    HTTPX_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the modules through missing_required_lib
    httpx = None
    HAS_HTTPX = False
    HTTPX_IMPORT_ERROR = exc

DEFAULT_TIMEOUT = 60.0
"""Default timeout in seconds for connect / read / write / pool of every request."""


def openai_api_argument_spec(timeout: float | None = DEFAULT_TIMEOUT) -> dict:
    """The Ansible ``argument_spec`` of the ``openai_api`` doc fragment.

    Args:
        timeout (float | None): default of the ``timeout`` option (seconds); None leaves the option out
            (modules with their own timeout options use the ``openai_api`` fragment without ``.timeout``).

    Returns:
        dict: ``api_url`` (str, required), ``api_key`` (str, no_log), ``validate_certs`` (bool, default true),
        ``ca_path`` (path) and, unless ``timeout`` is None, ``timeout`` (float, seconds).
    """
    spec: dict[str, Any] = {
        "api_url": {"type": "str", "required": True},
        "api_key": {"type": "str", "no_log": True},
        "validate_certs": {"type": "bool", "default": True},
        "ca_path": {"type": "path"},
    }
    if timeout is not None:
        spec["timeout"] = {"type": "float", "default": float(timeout)}
    return spec


def verify_from_params(params: dict) -> bool | str:
    """``verify`` for the clients from module parameters: a CA bundle path when ``ca_path`` is set and
    ``validate_certs`` is true, else the ``validate_certs`` boolean."""
    if params.get("validate_certs", True) and params.get("ca_path"):
        return str(params["ca_path"])
    return bool(params.get("validate_certs", True))


class OpenAIError(Exception):
    """An OpenAI-compatible API call failed.

    Attributes:
        message (str): the server's ``error.message`` (OpenAI/LiteLLM) or ``message`` (vLLM) when it sent one,
            else a description of the failure.
        status (int | None): HTTP status code, or None when no HTTP response was received (connection error,
            timeout).
        headers (dict[str, str]): response headers (lower-case names), empty without a response. LiteLLM sends
            ``x-litellm-*`` headers with errors too.
        body (Any): the decoded error body (dict) or its text, None without a response.
    """

    def __init__(
        self, message: str, status: int | None = None, headers: dict[str, str] | None = None, body: Any = None
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = dict(headers or {})
        self.body = body

    def __str__(self) -> str:
        return self.message


class OpenAITimeout(OpenAIError):
    """The request did not complete within the timeout (seconds)."""


def _error_message(response: httpx.Response) -> tuple[str, Any]:
    """The error text of an error response and its decoded body.

    OpenAI and LiteLLM send ``{"error": {"message": ...}}``; vLLM sends ``{"object": "error", "message": ...}``;
    FastAPI sends ``{"detail": ...}``.
    """
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"]), data
        if isinstance(err, str) and err:
            return err, data
        if data.get("message"):
            return str(data["message"]), data
        if data.get("detail"):
            return str(data["detail"]), data
    text = response.text.strip()
    return (text[:500] or response.reason_phrase or f"HTTP {response.status_code}"), (data if data else text)


class OpenAIClient:
    """Client for one OpenAI-compatible endpoint.

    Args:
        base_url (str): API base including the version path, e.g. ``http://vllm-api.ml.svc.cluster.local:8000/v1``.
        api_key (str | None): sent as ``Authorization: Bearer <api_key>`` (the LiteLLM master key, an OpenAI key);
            None sends no Authorization header (vLLM without ``--api-key``).
        timeout (float): seconds for each request (connect, read gap, write, pool); per-call override in
            :meth:`chat`.
        verify (bool | str): verify TLS certificates; a string is the path of a CA bundle (PEM) to trust.
        headers (dict[str, str] | None): extra headers sent with every request.
        keep_alive (bool): reuse connections between requests (httpx's pool). False opens a connection per request,
            so each one is routed afresh (a Service's kube-proxy picks a ready endpoint for every new connection,
            while a kept-alive connection stays with the Pod it was opened to, even while that Pod shuts down).

    Raises:
        OpenAIError: from every method on failure (see the module docstring).
        ImportError: at construction when httpx is not installed.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        verify: bool | str = True,
        headers: dict[str, str] | None = None,
        keep_alive: bool = True,
    ):
        if not HAS_HTTPX:
            raise ImportError(f"httpx is required for OpenAIClient: {HTTPX_IMPORT_ERROR}")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        all_headers = {"Accept": "application/json"}
        all_headers.update(headers or {})
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        limits = httpx.Limits() if keep_alive else httpx.Limits(max_keepalive_connections=0)
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout,
            verify=httpx_verify(verify),
            headers=all_headers,
            limits=limits,
        )

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._client.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, json_body: Any = None, timeout: float | None = None
    ) -> tuple[Any, dict[str, str]]:
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        if timeout is not None:
            kwargs["timeout"] = float(timeout)
        url = f"{self.base_url}{path}"
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            limit = timeout if timeout is not None else self.timeout
            raise OpenAITimeout(f"{method} {url} timed out after {limit:g} s ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise OpenAIError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
        headers = dict(response.headers.items())
        if response.status_code >= 400:
            message, body = _error_message(response)
            raise OpenAIError(
                f"{method} {url} returned HTTP {response.status_code}: {message}",
                status=response.status_code,
                headers=headers,
                body=body,
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise OpenAIError(
                f"{method} {url} returned a body that is not JSON: {response.text[:200]!r}",
                status=response.status_code,
                headers=headers,
                body=response.text,
            ) from exc
        return data, headers

    def models(self) -> list[dict]:
        """``GET {base}/models``: the models the endpoint serves.

        Returns:
            list[dict]: the ``data`` entries (``id``, ``object``, ``owned_by``; vLLM adds ``max_model_len``).

        Raises:
            OpenAIError: on failure.
        """
        data, _headers = self._request("GET", "/models")
        return list((data or {}).get("data") or [])

    def chat(
        self,
        model: str,
        messages: list[dict],
        response_format: dict | None = None,
        extra_body: dict | None = None,
        timeout: float | None = None,
    ) -> tuple[dict, dict[str, str]]:
        """``POST {base}/chat/completions``, non-streaming.

        Args:
            model (str): model name as the endpoint knows it (vLLM ``--served-model-name``, LiteLLM ``model_name``).
            messages (list[dict]): ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
            response_format (dict | None): e.g. ``{"type": "json_object"}``.
            extra_body (dict | None): more top-level request fields merged into the body, e.g. ``temperature``,
                ``max_tokens``, vLLM's ``chat_template_kwargs: {"enable_thinking": false}``.
            timeout (float | None): seconds for this request; default the client timeout.

        Returns:
            tuple[dict, dict[str, str]]: the completion JSON (``choices[0].message.content``, optional
            ``reasoning_content``/``reasoning``, ``usage.completion_tokens``, ``model``) and the response headers
            with lower-case names (LiteLLM: ``x-litellm-model-group``, ``x-litellm-attempted-fallbacks`` ...).

        Raises:
            OpenAIError: HTTP error status (vLLM 404 for a model name it does not serve, LiteLLM 400 for an unknown
                alias, 401/400 for a bad key, 500 when all fallbacks failed), connection error, non-JSON body.
            OpenAITimeout: no answer within the timeout.
        """
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": False}
        if response_format is not None:
            body["response_format"] = response_format
        if extra_body:
            body.update(extra_body)
        data, headers = self._request("POST", "/chat/completions", json_body=body, timeout=timeout)
        if not isinstance(data, dict):
            raise OpenAIError(f"unexpected completion body: {str(data)[:200]!r}", headers=headers, body=data)
        return data, headers
