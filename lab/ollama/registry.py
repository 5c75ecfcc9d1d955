"""The twin's Ollama registry: the registry v2 manifest API of registry.ollama.ai.

``GET /v2/library/{name}/manifests/{tag}`` (and ``/v2/{namespace}/{name}/manifests/{tag}``) returns the
manifest (schemaVersion 2, config + layers with ``mediaType``, ``digest``, ``size`` in bytes); unknown tags give
404 ``{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`` as the real registry does.
``HEAD`` on a manifest or ``/v2/.../blobs/{digest}`` answers with ``Content-Length`` (no blob bodies are served).
"""

from __future__ import annotations

from aiohttp import web

from lab.ollama.catalog import MANIFEST_MEDIA_TYPE, Layer, ModelCatalog, OllamaModel


class Registry:
    """Manifest lookup over a :class:`ModelCatalog` (used by the registry app and the emulated Ollama's pulls).

    Args:
        catalog: models from ``lab/models.yaml``.
    """

    def __init__(self, catalog: ModelCatalog):
        self.catalog = catalog
        self.requests = 0

    def lookup(self, repository: str, tag: str) -> OllamaModel | None:
        """The model for ``repository`` (``library/qwen2.5`` or ``qwen2.5``) and ``tag`` (``14b``), or None."""
        repo = repository[len("library/") :] if repository.startswith("library/") else repository
        return self.catalog.ollama.get(f"{repo}:{tag}")

    def model(self, name: str) -> OllamaModel | None:
        """The model for a pull name such as ``phi4-mini`` / ``qwen2.5:14b``, or None when the tag does not exist."""
        return self.catalog.ollama_model(name)

    def blob(self, digest: str) -> Layer | None:
        """The layer (or config) descriptor with this digest, or None."""
        for model in self.catalog.ollama.values():
            for layer in (*model.layers, model.config):
                if layer is not None and layer.digest == digest:
                    return layer
        return None


REGISTRY_KEY: web.AppKey[Registry] = web.AppKey("registry", Registry)

_UNKNOWN = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
_BLOB_UNKNOWN = {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry"}]}


async def _manifest(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]
    registry.requests += 1
    namespace = request.match_info.get("namespace", "library")
    model = registry.lookup(f"{namespace}/{request.match_info['name']}", request.match_info["tag"])
    if model is None:
        return web.json_response(_UNKNOWN, status=404)
    headers = {"Docker-Content-Digest": model.manifest_digest, "Content-Type": MANIFEST_MEDIA_TYPE}
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(model.manifest_body))
        return web.Response(status=200, headers=headers)
    return web.Response(body=model.manifest_body, headers=headers)


async def _blob(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]
    layer = registry.blob(request.match_info["digest"])
    if layer is None:
        return web.json_response(_BLOB_UNKNOWN, status=404)
    if request.method == "HEAD":
        return web.Response(
            status=200, headers={"Content-Length": str(layer.size), "Docker-Content-Digest": layer.digest}
        )
    return web.json_response(
        {"errors": [{"code": "UNSUPPORTED", "message": "the twin registry serves manifests and blob sizes only"}]},
        status=501,
    )


async def _base(request: web.Request) -> web.Response:
    return web.json_response({})


def make_registry_app(registry: Registry) -> web.Application:
    """The aiohttp app of the Ollama registry (TLS is added by the runtime when it listens).

    Routes: ``GET /v2/``, ``GET|HEAD /v2/library/{name}/manifests/{tag}``,
    ``GET|HEAD /v2/{namespace}/{name}/manifests/{tag}``, ``HEAD /v2/{namespace}/{name}/blobs/{digest}``.
    """
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app.router.add_get("/v2/", _base)
    app.router.add_get("/v2/{namespace}/{name}/manifests/{tag}", _manifest)  # GET also answers HEAD
    app.router.add_get("/v2/{namespace}/{name}/blobs/{digest}", _blob)
    return app
