"""Emulated vLLM OpenAI-compatible server of the lab twin (see docs/design.md, "lab.ollama / lab.vllm")."""

from lab.vllm.server import VllmEmulator, VllmStartupError, make_vllm_app

__all__ = ["VllmEmulator", "VllmStartupError", "make_vllm_app"]
