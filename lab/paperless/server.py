"""The twin's Paperless-ngx REST API, what the gate's document source uses of it.

``GET /api/documents/``, ``/api/document_types/``, ``/api/correspondents/`` (and ``/api/<kind>/<id>/``) answer as
Paperless-ngx does (Django REST Framework): ``{"count", "next", "previous", "results"}`` pages of ``page_size``
(default 25, at most 100000) selected by ``page`` (an absolute ``next`` URL, a page past the end answers 404
``{"detail": "Invalid page."}``); token authentication (``Authorization: Token <token>``; a missing or wrong token
answers 401 ``{"detail": "Invalid token."}`` or ``{"detail": "Authentication credentials were not provided."}``).
Documents filter on ``document_type__id``, ``document_type__id__in``, ``document_type__isnull`` (``1``/``true`` or
``0``/``false``), ``correspondent__id`` and ``id__in``; ``fields`` (a comma-separated list) limits the fields of
each result. https://docs.paperless-ngx.com/api/
"""

from __future__ import annotations

from aiohttp import web

from lab.paperless.corpus import Corpus

REQUESTS = web.AppKey("requests", dict)
"""``app[REQUESTS]["count"]``: the authenticated requests the app answered."""

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100000


def _truth(value: str) -> bool | None:
    lowered = value.strip().lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    return None


def _ids(value: str) -> set[int]:
    return {int(part) for part in value.split(",") if part.strip().isdigit()}


def _filter_documents(documents: list[dict], query) -> list[dict]:
    selected = documents
    if "document_type__isnull" in query:
        isnull = _truth(query["document_type__isnull"])
        if isnull is not None:
            selected = [d for d in selected if (d["document_type"] is None) == isnull]
    if "document_type__id" in query:
        selected = [d for d in selected if str(d["document_type"]) == query["document_type__id"]]
    if "document_type__id__in" in query:
        wanted = _ids(query["document_type__id__in"])
        selected = [d for d in selected if d["document_type"] in wanted]
    if "correspondent__id" in query:
        selected = [d for d in selected if str(d["correspondent"]) == query["correspondent__id"]]
    if "id__in" in query:
        wanted = _ids(query["id__in"])
        selected = [d for d in selected if d["id"] in wanted]
    return selected


def _page(request: web.Request, results: list[dict]) -> web.Response:
    query = request.query
    try:
        size = min(int(query.get("page_size", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE)
        page = int(query.get("page", "1"))
    except ValueError:
        return web.json_response({"detail": "Invalid page."}, status=404)
    if size < 1 or page < 1 or (page - 1) * size >= max(len(results), 1):
        return web.json_response({"detail": "Invalid page."}, status=404)
    fields = [f for f in query.get("fields", "").split(",") if f]
    chunk = results[(page - 1) * size : page * size]
    if fields:
        chunk = [{k: v for k, v in item.items() if k in fields} for item in chunk]

    def link(number: int) -> str | None:
        if number < 1 or (number - 1) * size >= len(results):
            return None
        return str(request.url.update_query(page=str(number)))

    return web.json_response(
        {"count": len(results), "next": link(page + 1), "previous": link(page - 1), "results": chunk}
    )


def _auth(token: str, counter: dict):
    """Token authentication as Paperless-ngx (DRF's TokenAuthentication) answers it; counts what passes."""

    @web.middleware
    async def auth(request: web.Request, handler):
        header = request.headers.get("Authorization", "")
        if not header:
            return web.json_response({"detail": "Authentication credentials were not provided."}, status=401)
        if header != f"Token {token}":
            return web.json_response({"detail": "Invalid token."}, status=401)
        counter["count"] += 1
        return await handler(request)

    return auth


def _named(items: dict[int, str]) -> list[dict]:
    return [{"id": k, "slug": v.lower().replace(" ", "-"), "name": v} for k, v in sorted(items.items())]


class _Api:
    def __init__(self, corpus: Corpus):
        self.collections = {
            "documents": lambda: corpus.documents,
            "document_types": lambda: _named(corpus.document_types),
            "correspondents": lambda: _named(corpus.correspondents),
        }

    def _items(self, kind: str) -> list[dict]:
        if kind not in self.collections:
            raise web.HTTPNotFound()
        return self.collections[kind]()

    async def listing(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        results = self._items(kind)
        if kind == "documents":
            results = _filter_documents(results, request.query)
        return _page(request, results)

    async def one(self, request: web.Request) -> web.Response:
        wanted = int(request.match_info["id"])
        for item in self._items(request.match_info["kind"]):
            if item["id"] == wanted:
                return web.json_response(item)
        return web.json_response({"detail": "No Document matches the given query."}, status=404)


def make_paperless_app(corpus: Corpus, token: str) -> web.Application:
    """The API over ``corpus``; ``token`` is the one API token that is accepted (``app[REQUESTS]`` counts the
    requests it let through)."""
    api = _Api(corpus)
    counter = {"count": 0}
    app = web.Application(middlewares=[_auth(token, counter)])
    app[REQUESTS] = counter
    app.router.add_get("/api/{kind}/", api.listing)
    app.router.add_get(r"/api/{kind}/{id:\d+}/", api.one)
    return app
