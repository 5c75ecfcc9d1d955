"""Emulated vLLM OpenAI-compatible server (the ``ml/vllm-server`` Pod of the twin).

``VllmEmulator(catalog, args, gpu_memory_bytes, time_scale)`` parses the container args the way
``vllm serve`` does (``[serve] MODEL`` or ``--model``, ``--served-model-name``, ``--max-model-len``,
``--gpu-memory-utilization``, ``--quantization``, ``--enforce-eager``; ``--host``/``--port`` and unknown flags are
ignored) and runs vLLM's startup checks: unknown repo, quantization mismatch, weights that do not fit
``gpu_memory_utilization`` x GPU memory, a KV cache smaller than ``max_model_len`` -> :class:`VllmStartupError`
with vLLM's message. The app serves ``GET /health`` (503 while the model loads, then 200), ``GET /v1/models``,
``POST /v1/chat/completions`` (OpenAI response with ``usage``; SSE when ``stream: true``; 404 for a model name it
does not serve, exactly as vLLM), ``GET /version``. Answers come from :mod:`lab.ollama.behaviour`; Qwen3 thinks
inline (``<think>...</think>``) unless ``chat_template_kwargs.enable_thinking`` is false.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from lab.ollama.behaviour import generate
from lab.ollama.catalog import GIB, MIB, ModelCatalog, VllmModel

VLLM_VERSION = "0.10.1.1"
_QUANTIZATIONS = ("awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "bitsandbytes")
_SPEED_FACTOR = {"awq": 0.6, "gptq": 0.6}  # plain kernels are slower than the *_marlin ones


class VllmStartupError(Exception):
    """vLLM cannot start with these args (the Pod would crash-loop). ``message`` is vLLM's error text."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would exit the process
        raise VllmStartupError(f"vllm: error: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _ArgParser(prog="vllm serve", add_help=False)
    parser.add_argument("positional", nargs="*")
    parser.add_argument("--model")
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--quantization", "-q", choices=_QUANTIZATIONS)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--port", type=int)
    parser.add_argument("--host")
    return parser


class VllmEmulator:
    """One vLLM process serving one model.

    Args:
        catalog: models from ``lab/models.yaml`` (``catalog.vllm``).
        args: the container command/args after the executable, e.g.
            ``["--model", "Qwen/Qwen3-8B-AWQ", "--served-model-name", "Qwen/Qwen3-8B-AWQ", "--max-model-len",
            "8192", "--quantization", "awq_marlin"]`` (a leading ``serve`` and the positional model are accepted).
        gpu_memory_bytes: total memory of the GPU (bytes), e.g. 12 GiB for the RTX 3060.
        time_scale: wall seconds per real-lab second.

    Raises:
        VllmStartupError: unknown model, bad args, quantization mismatch, not enough GPU memory for the weights or
            for ``max_model_len`` tokens of KV cache.
    """

    def __init__(self, catalog: ModelCatalog, args: list[str], gpu_memory_bytes: int, time_scale: float):
        opts, _unknown = _parser().parse_known_args([str(a) for a in args])
        positional = [p for p in opts.positional if p != "serve"]
        repo = opts.model or (positional[0] if positional else None)
        if not repo:
            raise VllmStartupError("vllm serve: error: the following arguments are required: model_tag")
        self.time_scale = float(time_scale)
        model = catalog.vllm.get(repo)
        if model is None:
            raise VllmStartupError(
                f"OSError: {repo} is not a local folder and is not a valid model identifier listed on "
                "'https://huggingface.co/models'"
            )
        self.model: VllmModel = model
        self.served_names: list[str] = list(opts.served_model_name or [repo])
        self.quantization = opts.quantization or model.quantization
        if model.quantization and self.quantization and self.quantization.split("_")[0] != model.quantization:
            raise VllmStartupError(
                f"ValueError: Quantization method specified in the model config ({model.quantization}) does not "
                f"match the quantization method specified in the `quantization` argument ({self.quantization})."
            )
        util = float(opts.gpu_memory_utilization)
        if not 0 < util <= 1:
            raise VllmStartupError(f"ValueError: GPU memory utilization must be within (0, 1]. Got {util}.")
        self.max_model_len = int(opts.max_model_len or model.max_position_embeddings)
        if self.max_model_len > model.max_position_embeddings:
            raise VllmStartupError(
                f"ValueError: User-specified max_model_len ({self.max_model_len}) is greater than the derived "
                f"max_model_len (max_position_embeddings={model.max_position_embeddings} in model's config.json)."
            )
        self.enforce_eager = bool(opts.enforce_eager)
        budget = util * gpu_memory_bytes
        weights = model.weights_gib * GIB + (0 if self.enforce_eager else model.cuda_graph_gib * GIB)
        kv_bytes = budget - weights
        if kv_bytes <= 0:
            raise VllmStartupError(
                "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
                "when initializing the engine."
            )
        self.kv_cache_tokens = int(kv_bytes / (model.kv_cache_mib_per_1k_tokens * MIB) * 1024)
        if self.kv_cache_tokens < self.max_model_len:
            raise VllmStartupError(
                f"ValueError: The model's max seq len ({self.max_model_len}) is larger than the maximum number of "
                f"tokens that can be stored in KV cache ({self.kv_cache_tokens}). Try increasing "
                "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
            )
        self.gpu_memory_bytes = int(gpu_memory_bytes)
        self.gpu_memory_utilization = util
        self.vram_used_bytes = int(budget)
        self.ready = False
        self.started = time.monotonic()
        self.created = int(time.time())
        self.requests = 0
        self._loader: asyncio.Task | None = None

    @property
    def speed_factor(self) -> float:
        """Generation speed relative to the profile (plain AWQ kernels and eager mode are slower)."""
        factor = _SPEED_FACTOR.get(self.quantization or "", 1.0)
        return factor * (0.8 if self.enforce_eager else 1.0)

    async def load(self) -> None:
        """Load the weights (``load_s`` real-lab seconds, scaled); then ``/health`` answers 200."""
        await asyncio.sleep(self.model.load_s * self.time_scale)
        self.ready = True

    def snapshot(self) -> dict:
        """State for ``python -m lab status --json``."""
        return {
            "model": self.model.repo,
            "served_model_names": self.served_names,
            "ready": self.ready,
            "max_model_len": self.max_model_len,
            "kv_cache_tokens": self.kv_cache_tokens,
            "quantization": self.quantization,
            "vram_used_bytes": self.vram_used_bytes,
            "requests": self.requests,
        }


EMULATOR_KEY: web.AppKey[VllmEmulator] = web.AppKey("vllm_emulator", VllmEmulator)


def _error(status: int, message: str, err_type: str) -> web.Response:
    body = {"object": "error", "message": message, "type": err_type, "param": None, "code": status}
    return web.json_response(body, status=status)


@web.middleware
async def _not_ready(request: web.Request, handler: Callable) -> web.StreamResponse:
    emu = request.app[EMULATOR_KEY]
    if not emu.ready and request.path != "/version":
        return web.Response(status=503, text="model is loading")
    return await handler(request)


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def _version(request: web.Request) -> web.Response:
    return web.json_response({"version": VLLM_VERSION})


async def _models(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR_KEY]
    data = [
        {
            "id": name,
            "object": "model",
            "created": emu.created,
            "owned_by": "vllm",
            "root": emu.model.repo,
            "parent": None,
            "max_model_len": emu.max_model_len,
            "permission": [],
        }
        for name in emu.served_names
    ]
    return web.json_response({"object": "list", "data": data})


def _constrained(response_format: Any) -> bool:
    if not isinstance(response_format, dict):
        return False
    return response_format.get("type") in ("json_object", "json_schema")


def _schema(response_format: Any) -> dict | None:
    """The JSON schema of ``response_format={"type": "json_schema", "json_schema": {"schema": ...}}``, else None."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else None


async def _chat(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR_KEY]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "Invalid JSON body", "BadRequestError")
    if not isinstance(body, dict):
        return _error(400, "Invalid JSON body", "BadRequestError")
    name = body.get("model")
    if name not in emu.served_names:
        return _error(404, f"The model `{name}` does not exist.", "NotFoundError")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "messages: Field required", "BadRequestError")
    kwargs = body.get("chat_template_kwargs") or {}
    behaviour = emu.model.behaviour
    thinks = behaviour.thinking == "always" or (
        behaviour.thinking == "optional" and kwargs.get("enable_thinking", True) is not False
    )
    response_format = body.get("response_format")
    answer = generate(
        behaviour,
        emu.model.repo,
        messages,
        _constrained(response_format),
        thinks,
        True,
        schema=_schema(response_format),
    )
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if answer.prompt_tokens + int(max_tokens or 0) > emu.max_model_len:
        return _error(
            400,
            f"This model's maximum context length is {emu.max_model_len} tokens. However, you requested "
            f"{answer.prompt_tokens + int(max_tokens or 0)} tokens ({answer.prompt_tokens} in the messages, "
            f"{int(max_tokens or 0)} in the completion). Please reduce the length of the messages or completion.",
            "BadRequestError",
        )
    emu.requests += 1
    wall = answer.latency_s / emu.speed_factor * emu.time_scale
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    usage = {
        "prompt_tokens": answer.prompt_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "completion_tokens": answer.completion_tokens,
        "prompt_tokens_details": None,
    }
    if not body.get("stream"):
        await asyncio.sleep(wall)
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": name,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": answer.content,
                            "reasoning_content": None,
                            "tool_calls": [],
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                        "stop_reason": None,
                    }
                ],
                "usage": usage,
                "prompt_logprobs": None,
            }
        )
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)

    async def event(delta: dict, finish: str | None = None, with_usage: bool = False) -> None:
        chunk: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if with_usage:
            chunk["usage"] = usage
        await response.write(b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n")

    await asyncio.sleep(wall * answer.prompt_eval_s / max(answer.latency_s, 1e-9))
    await event({"role": "assistant", "content": ""})
    text = answer.content
    size = max(1, len(text) // 8)
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    for piece in pieces:
        await asyncio.sleep(wall * answer.eval_s / max(answer.latency_s, 1e-9) / max(1, len(pieces)))
        await event({"content": piece})
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    await event({}, finish="stop", with_usage=include_usage)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def make_vllm_app(emulator: VllmEmulator) -> web.Application:
    """The aiohttp app of the emulated vLLM; loading starts when the app starts (``/health`` 503 until loaded)."""
    app = web.Application(middlewares=[_not_ready], client_max_size=64 * 1024**2)
    app[EMULATOR_KEY] = emulator

    async def start_loading(app: web.Application) -> None:
        if not emulator.ready and emulator._loader is None:
            emulator._loader = asyncio.get_running_loop().create_task(emulator.load())

    async def stop_loading(app: web.Application) -> None:
        if emulator._loader is not None and not emulator._loader.done():
            emulator._loader.cancel()

    app.on_startup.append(start_loading)
    app.on_cleanup.append(stop_loading)
    app.router.add_get("/health", _health)
    app.router.add_get("/version", _version)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat)
    return app
