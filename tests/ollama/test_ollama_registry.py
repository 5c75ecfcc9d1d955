"""The twin's Ollama registry: manifest API as registry.ollama.ai serves it (sizes the preflight reads)."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from aiohttp.test_utils import TestServer

from lab.ollama import Registry, make_registry_app

SIZES = {
    "llama3.2:1b": 1_300_000_000,
    "qwen2.5:3b": 1_900_000_000,
    "phi4-mini": 2_500_000_000,
    "qwen2.5:14b": 9_000_000_000,
    "qwen3:4b": 2_500_000_000,
    "llama3.1:8b": 4_700_000_000,
    "llama3.1:70b": 40_000_000_000,
}


@pytest.fixture
async def registry_url(catalog):
    server = TestServer(make_registry_app(Registry(catalog)), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


def _path(name: str) -> str:
    repo, _, tag = name.partition(":")
    return f"/v2/library/{repo}/manifests/{tag or 'latest'}"


@pytest.mark.parametrize(("name", "size"), sorted(SIZES.items()))
async def test_manifest_sizes_and_media_types(registry_url, name, size):
    async with httpx.AsyncClient(base_url=registry_url) as client:
        response = await client.get(_path(name))
    assert response.status_code == 200
    manifest = response.json()
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert sum(layer["size"] for layer in manifest["layers"]) == size
    kinds = [layer["mediaType"] for layer in manifest["layers"]]
    assert kinds[0] == "application/vnd.ollama.image.model"
    assert "application/vnd.ollama.image.template" in kinds
    for layer in (*manifest["layers"], manifest["config"]):
        assert layer["digest"].startswith("sha256:") and len(layer["digest"]) == 71
    assert response.headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(response.content).hexdigest()


async def test_digests_are_stable_across_loads(catalog, registry_url):
    from lab.ollama import load_models
    from tests.ollama.conftest import ROOT

    again = load_models(ROOT / "lab" / "models.yaml")
    assert again.ollama["qwen2.5:14b"].manifest_digest == catalog.ollama["qwen2.5:14b"].manifest_digest
    # Different models have different model blobs.
    blobs = {m.model_layer.digest for m in catalog.ollama.values()}
    assert len(blobs) == len(catalog.ollama)


@pytest.mark.parametrize(
    "path", [_path("phi4-mini:3.8b"), _path("nosuchmodel:1b"), "/v2/someone/qwen2.5/manifests/14b"]
)
async def test_unknown_manifest_is_404_manifest_unknown(registry_url, path):
    async with httpx.AsyncClient(base_url=registry_url) as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.json() == {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}


async def test_head_manifest_and_blob(registry_url, catalog):
    model = catalog.ollama["qwen2.5:14b"]
    async with httpx.AsyncClient(base_url=registry_url) as client:
        head = await client.head(_path("qwen2.5:14b"))
        blob = await client.head(f"/v2/library/qwen2.5/blobs/{model.model_layer.digest}")
        missing = await client.head("/v2/library/qwen2.5/blobs/sha256:" + "0" * 64)
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == model.manifest_digest
    assert blob.status_code == 200 and int(blob.headers["Content-Length"]) == model.model_layer.size
    assert missing.status_code == 404
