"""Emulated Ollama server and Ollama registry of the lab twin (see docs/design.md, "lab.ollama / lab.vllm")."""

from lab.ollama.catalog import DEFAULT_MODELS_PATH, CatalogError, ModelCatalog, load_models
from lab.ollama.registry import Registry, make_registry_app
from lab.ollama.server import OllamaEmulator, make_ollama_app

__all__ = [
    "DEFAULT_MODELS_PATH",
    "CatalogError",
    "ModelCatalog",
    "OllamaEmulator",
    "Registry",
    "load_models",
    "make_ollama_app",
    "make_registry_app",
]
