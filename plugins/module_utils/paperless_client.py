# -*- coding: utf-8 -*-
# Copyright: home-lab inference project
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client for the Paperless-ngx REST API, what the gate's document source needs of it, over httpx.

Upstream API: https://docs.paperless-ngx.com/api/ (Django REST Framework): ``GET /api/documents/``,
``/api/document_types/``, ``/api/correspondents/``, pages of ``{"count", "next", "previous", "results"}`` chosen
with ``page`` and ``page_size`` and followed through ``next``; token authentication, ``Authorization: Token
<token>``; django-filter parameters such as ``document_type__isnull``, ``id__in``, ``tags__id__all``; ``fields``
limits the fields of each document.

Every failure (HTTP error status, connection problem, a body that is not a page) raises :class:`PaperlessError`.
"""

from __future__ import annotations

import random
from typing import Any

from ansible_collections.homelab.inference.plugins.module_utils.tls import httpx_verify

try:
    import httpx

    HAS_HTTPX = True
except ImportError:  # pragma: no cover - reported by the modules through missing_required_lib
    httpx = None
    HAS_HTTPX = False

PAGE_SIZE = 100
"""Results per page the client asks for."""

MAX_PAGES = 1000
"""Pages the client follows at most (100 000 documents at PAGE_SIZE): a ``next`` loop ends there."""

ID_CHUNK = 50
"""Document ids per ``id__in`` request when fetching the contents of a sample."""


class PaperlessError(Exception):
    """A Paperless-ngx API call failed; ``status`` is the HTTP status (None without a response)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class PaperlessClient:
    """Client for one Paperless-ngx server.

    Args:
        base_url (str): the server's root URL, e.g. ``https://paperless.home.lab`` (the API is under ``/api/``).
        token (str): an API token (Paperless: My Profile, API token), sent as ``Authorization: Token <token>``.
        timeout (float): seconds for each request.
        verify (bool | str): verify TLS certificates; a string is the path of a CA bundle (PEM) to trust.

    Raises:
        PaperlessError: from every method on failure.
        ImportError: at construction when httpx is not installed.
    """

    def __init__(self, base_url: str, token: str, timeout: float = 30.0, verify: bool | str = True):
        if not HAS_HTTPX:
            raise ImportError("httpx is required for PaperlessClient")
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            timeout=float(timeout),
            verify=httpx_verify(verify),
            headers={"Accept": "application/json", "Authorization": f"Token {token}"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PaperlessClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get(self, url: str, params: dict | None = None) -> dict:
        try:
            response = self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise PaperlessError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            detail = data.get("detail") if isinstance(data, dict) else None
            raise PaperlessError(
                f"GET {url} returned HTTP {response.status_code}: {detail or response.text.strip()[:200]}",
                status=response.status_code,
            )
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise PaperlessError(f"GET {url} did not return a page of results (count, next, results)")
        return data

    def list(self, kind: str, params: dict | None = None) -> list[dict]:
        """Every result of ``/api/<kind>/`` with ``params``, page after page through ``next``.

        Raises:
            PaperlessError: a request failed, or ``next`` went on past :data:`MAX_PAGES` pages.
        """
        url: str | None = f"{self.base_url}/api/{kind}/"
        query: dict | None = {"page_size": PAGE_SIZE, **(params or {})}
        results: list[dict] = []
        for _page in range(MAX_PAGES):
            if url is None:
                return results
            page = self._get(url, query)
            results += [r for r in page["results"] if isinstance(r, dict)]
            url, query = page.get("next"), None  # ``next`` carries every parameter
        raise PaperlessError(f"/api/{kind}/ has more than {MAX_PAGES} pages; narrow the query")

    def names(self, kind: str) -> dict[int, str]:
        """id -> name of ``document_types`` or ``correspondents``."""
        return {int(r["id"]): str(r.get("name") or "") for r in self.list(kind) if "id" in r}

    def documents(self, ids: list[int]) -> list[dict]:
        """The documents with these ids (every field), in chunks of :data:`ID_CHUNK`, in the order of ``ids``."""
        found: dict[int, dict] = {}
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            for doc in self.list("documents", {"id__in": ",".join(str(i) for i in chunk)}):
                found[int(doc["id"])] = doc
        return [found[i] for i in ids if i in found]


def _gate_class(name: str, type_map: dict[str, str], classes: tuple[str, ...]) -> str | None:
    mapped = {str(k).strip().lower(): str(v).strip().lower() for k, v in (type_map or {}).items()}
    cls = mapped.get(name.strip().lower())
    return cls if cls in classes else None


def sample_documents(
    client: PaperlessClient,
    type_map: dict[str, str],
    classes: tuple[str, ...],
    max_documents: int,
    seed: int = 0,
    query: dict | None = None,
) -> tuple[list[dict], dict]:
    """Gate documents from Paperless-ngx: documents that have a document type the map names, drawn reproducibly.

    The candidates (``document_type__isnull=false`` and ``query``) are listed with their ids and types only; those
    whose type name ``type_map`` maps (case-insensitively) to one of ``classes`` are sorted by id and
    ``random.Random(seed).sample`` draws ``max_documents`` of them (all when fewer); only the drawn ones are
    fetched with their content. The same Paperless data and seed give the same documents, for the candidate and the
    champion alike.

    Args:
        client (PaperlessClient): the API.
        type_map (dict[str, str]): Paperless document type name -> gate class (``Rechnung: invoice``).
        classes (tuple[str, ...]): the gate's classes.
        max_documents (int): the most documents to draw (at least 1).
        seed (int): the sample's random seed.
        query (dict | None): more filter parameters (``tags__id__all: "3"``).

    Returns:
        tuple[list[dict], dict]: gate documents (``id`` ``paperless-<id>``, ``document_type`` (the class),
        ``correspondent`` (its name, ``""`` without one), ``text`` (the content), ``source`` ``paperless``),
        and what was drawn from (``candidates``, ``types`` (type name -> class), ``unmapped`` (type names left out),
        ``seed``).

    Raises:
        PaperlessError: a request failed, or no document has a mapped type and content.
    """
    types = client.names("document_types")
    mapping = {type_id: _gate_class(name, type_map, classes) for type_id, name in types.items()}
    params = {"document_type__isnull": "false", "fields": "id,document_type", **(query or {})}
    listed = client.list("documents", params)
    candidates = sorted(int(d["id"]) for d in listed if mapping.get(d.get("document_type")))
    if not candidates:
        raise PaperlessError(
            "no document has a document type that the type map (type_map) maps to "
            f"{', '.join(classes)} (document types: {', '.join(sorted(types.values())) or 'none'})"
        )
    # a reproducible sample (the same for candidate and champion), not a secret
    drawn = random.Random(seed).sample(candidates, min(int(max_documents), len(candidates)))  # noqa: S311
    correspondents = client.names("correspondents")
    documents = []
    for doc in client.documents(sorted(drawn)):
        text = doc.get("content") or ""
        if not text.strip():
            continue
        documents.append(
            {
                "id": f"paperless-{doc['id']}",
                "document_type": mapping[doc.get("document_type")],
                "correspondent": correspondents.get(doc.get("correspondent"), ""),
                "text": text,
                "source": "paperless",
            }
        )
    if not documents:
        raise PaperlessError("the documents drawn from Paperless-ngx have no text content (OCR not done yet?)")
    used: dict[str, Any] = {types[t]: c for t, c in mapping.items() if c}
    return documents, {
        "candidates": len(candidates),
        "types": used,
        "unmapped": sorted(types[t] for t, c in mapping.items() if not c),
        "seed": seed,
    }
