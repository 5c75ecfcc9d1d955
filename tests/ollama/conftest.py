"""Fixtures for the emulated Ollama / vLLM / registry tests: the catalog and servers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab.ollama import OllamaEmulator, load_models, make_ollama_app
from lab.ollama.catalog import GIB
from tests.ollama.helpers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def catalog():
    return load_models(ROOT / "lab" / "models.yaml")


def sample_documents() -> list[dict]:
    """The test samples plus the gate's shipped documents when that directory exists."""
    docs = list(yaml.safe_load((HERE / "documents.yaml").read_text(encoding="utf-8")))
    shipped = ROOT / "roles" / "llm_gate" / "files" / "documents"
    if shipped.is_dir():
        for path in sorted(shipped.glob("*.y*ml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            for doc in data if isinstance(data, list) else [data]:
                if isinstance(doc, dict) and doc.get("text") and doc.get("document_type"):
                    docs.append(doc)
    return docs


@pytest.fixture
def ollama_factory(catalog, tmp_path, monkeypatch):
    """Start emulated Ollama servers: ``ollama_factory(limit_gib=16, lxc_gb=20, env=None, scale=0.001)``."""
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    servers: list[ServerThread] = []

    def start(
        limit_gib: float | None = 16,
        lxc_gb: float = 20,
        env: dict | None = None,
        scale: float = 0.001,
        store: Path | None = None,
    ) -> tuple[OllamaEmulator, ServerThread]:
        emulator = OllamaEmulator(
            catalog,
            store or tmp_path / "ollama-store",
            None if limit_gib is None else int(limit_gib * GIB),
            lambda: int(lxc_gb * 1e9),
            dict(env or {}),
            scale,
        )
        server = ServerThread(lambda: make_ollama_app(emulator)).start()
        servers.append(server)
        return emulator, server

    yield start
    for server in servers:
        server.stop()
