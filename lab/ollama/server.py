"""Emulated Ollama server (the ``ml/ollama`` Pod of the twin), speaking the Ollama HTTP API.

API (https://github.com/ollama/ollama/blob/main/docs/api.md): ``GET /``, ``GET /api/version``, ``GET /api/tags``,
``POST /api/show``, ``GET /api/ps``, ``DELETE /api/delete``, ``POST /api/pull`` (NDJSON progress, errors as a
line after HTTP 200), ``POST /api/chat`` and ``POST /api/generate`` (streaming NDJSON or one object).

Behaviour comes from ``lab/models.yaml`` (see :mod:`lab.ollama.catalog`, :mod:`lab.ollama.behaviour`); every
duration there is real-lab seconds and is multiplied by ``time_scale`` when it happens. Env values are the
real ones a Pod would get (``OLLAMA_LOAD_TIMEOUT=10m``, ``OLLAMA_KEEP_ALIVE=-1``, ``OLLAMA_NUM_PARALLEL``,
``OLLAMA_MAX_LOADED_MODELS``, ``OLLAMA_MAX_QUEUE``). Durations in responses (``total_duration`` ...) are the
twin's own elapsed nanoseconds, i.e. real-lab durations times ``time_scale``; the memory check compares the model's
memory with ``min(memory_limit_bytes, available_memory_bytes())``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from lab.ollama.behaviour import Answer, generate, unflatten_prompt
from lab.ollama.catalog import GIB, ModelCatalog, OllamaModel, normalize_tag
from lab.ollama.registry import Registry

OLLAMA_VERSION = "0.13.3"
STORE_FILE = "emulated-ollama-store.json"
PULL_TICK_S = 0.05  # wall seconds between two progress lines of a running download
STREAM_CHUNKS = 8  # content pieces of a streamed answer

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(value: str) -> float:
    """Seconds of a Go duration string (``"5m"``, ``"1h30m"``, ``"-1m"``, ``"300ms"``; ``"0"`` is 0).

    Raises:
        ValueError: not a Go duration.
    """
    text = value.strip()
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match:
            raise ValueError(f"time: invalid duration {value!r}")
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError(f"time: invalid duration {value!r}")
    return sign * total


def parse_keep_alive(value: Any) -> float:
    """Seconds a model stays loaded: a number (seconds) or Go duration; negative means forever (``math.inf``).

    Raises:
        ValueError: neither a number nor a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(int(text))
        except ValueError:
            seconds = parse_go_duration(text)
    return math.inf if seconds < 0 else seconds


def env_load_timeout(env: dict[str, str]) -> float:
    """``OLLAMA_LOAD_TIMEOUT`` in real-lab seconds (default 5m; a value <= 0 means no timeout, like Ollama)."""
    raw = env.get("OLLAMA_LOAD_TIMEOUT", "").strip()
    seconds = 300.0
    if raw:
        try:
            seconds = parse_go_duration(raw)
        except ValueError:
            try:
                seconds = float(int(raw))
            except ValueError:
                seconds = 300.0
    return math.inf if seconds <= 0 else seconds


def _env_int(env: dict[str, str], key: str, default: int) -> int:
    try:
        value = int(env.get(key, "").strip() or default)
    except ValueError:
        return default
    return value if value > 0 else default


def _now_iso(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


def _gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB"


def _param_count(size: str) -> int:
    match = re.fullmatch(r"([\d.]+)([KMB])", size.strip())
    if not match:
        return 0
    return int(float(match.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9}[match.group(2)])


class ApiError(Exception):
    """An error answer ``{"error": message}`` with an HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Runner:
    """A loaded model (``ollama ps``). Times are ``time.monotonic()`` seconds of the twin."""

    model: OllamaModel
    slots: asyncio.Semaphore
    loaded_at: float
    expires_at: float = math.inf
    expires_wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    active: int = 0
    last_used: float = 0.0


class _Store:
    """Models and (partial) blobs on the Ollama volume, persisted as one JSON file in ``store_dir``."""

    def __init__(self, store_dir: Path):
        self.path = Path(store_dir) / STORE_FILE
        self.models: dict[str, dict] = {}
        self.blobs: dict[str, dict] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.models = data.get("models", {})
            self.blobs = data.get("blobs", {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": 1, "models": self.models, "blobs": self.blobs}, indent=1), "utf-8")
        os.replace(tmp, self.path)


class OllamaEmulator:
    """State and behaviour of one emulated Ollama server.

    Args:
        catalog: models from ``lab/models.yaml``.
        store_dir: the Ollama volume (PVC); models and partial downloads persist there across restarts.
        memory_limit_bytes: the container memory limit (bytes), None for no limit.
        available_memory_bytes: returns the memory the worker LXC has now (bytes; hot-applied resizes count).
        env: the container env (``OLLAMA_KEEP_ALIVE``, ``OLLAMA_LOAD_TIMEOUT``, ``OLLAMA_NUM_PARALLEL``,
            ``OLLAMA_MAX_LOADED_MODELS``, ``OLLAMA_MAX_QUEUE``), real-lab values.
        time_scale: wall seconds per real-lab second (0.01: one real minute takes 0.6 s; 0: no waiting).
        registry: where pulls fetch manifests; default a :class:`Registry` over ``catalog``.

    Raises:
        ValueError: an env value cannot be parsed (``OLLAMA_KEEP_ALIVE``).
    """

    def __init__(
        self,
        catalog: ModelCatalog,
        store_dir: Path,
        memory_limit_bytes: int | None,
        available_memory_bytes: Callable[[], int],
        env: dict[str, str],
        time_scale: float,
        registry: Registry | None = None,
    ):
        self.catalog = catalog
        self.registry = registry or Registry(catalog)
        self.store = _Store(Path(store_dir))
        self.memory_limit_bytes = memory_limit_bytes
        self.faults = None  # the twin's fault injection (lab.faults.Faults), set by the kubelet
        self.available_memory_bytes = available_memory_bytes
        self.env = dict(env)
        self.time_scale = float(time_scale)
        self.keep_alive_s = parse_keep_alive(env.get("OLLAMA_KEEP_ALIVE") or "5m")
        self.load_timeout_s = env_load_timeout(env)
        self.num_parallel = _env_int(env, "OLLAMA_NUM_PARALLEL", 1)
        self.max_loaded = _env_int(env, "OLLAMA_MAX_LOADED_MODELS", 3)
        self.max_queue = _env_int(env, "OLLAMA_MAX_QUEUE", 512)
        self.runners: dict[str, _Runner] = {}
        self.pending = 0
        self.requests = 0
        self._sched_lock = asyncio.Lock()
        self._blob_locks: dict[str, asyncio.Lock] = {}
        self.started = datetime.now(UTC)

    # -- time -----------------------------------------------------------------------------------------------------

    async def sleep_real(self, seconds: float) -> None:
        """Sleep ``seconds`` real-lab seconds (scaled)."""
        await asyncio.sleep(max(0.0, seconds * self.time_scale))

    # -- store ----------------------------------------------------------------------------------------------------

    def present(self, name: str) -> dict | None:
        """The store entry of a local model (``phi4-mini`` finds ``phi4-mini:latest``) or None."""
        return self.store.models.get(normalize_tag(name))

    def tags(self) -> list[dict]:
        """``/api/tags`` entries, newest first."""
        out = []
        for name, entry in self.store.models.items():
            model = self.catalog.ollama_model(name)
            out.append(
                {
                    "name": name,
                    "model": name,
                    "modified_at": entry["modified_at"],
                    "size": entry["size"],
                    "digest": entry["digest"],
                    "details": model.details if model else {},
                }
            )
        return sorted(out, key=lambda e: e["modified_at"], reverse=True)

    def delete(self, name: str) -> None:
        """Remove a model and the blobs no other model uses. Raises ApiError 404 when absent."""
        key = normalize_tag(name)
        if key not in self.store.models:
            raise ApiError(404, f"model '{name}' not found")
        self.runners.pop(key, None)
        del self.store.models[key]
        used = {d for entry in self.store.models.values() for d in entry.get("layers", [])}
        for digest in list(self.store.blobs):
            if digest not in used:
                del self.store.blobs[digest]
        self.store.save()

    # -- pull -----------------------------------------------------------------------------------------------------

    async def pull(self, name: str) -> AsyncIterator[dict]:
        """Progress lines of ``ollama pull``; raises ApiError(500, text) on failure after the first line.

        Downloads advance at ``catalog.download_bytes_per_s`` real-lab bytes per second; completed bytes of every
        blob are kept (also when the client goes away), so a second pull resumes.
        """
        yield {"status": "pulling manifest"}
        await self.sleep_real(self.catalog.manifest_latency_s)
        model = self.registry.model(name)
        if model is None:
            raise ApiError(500, "pull model manifest: file does not exist")
        assert model.config is not None
        try:
            for layer in (*model.layers, model.config):
                lock = self._blob_locks.setdefault(layer.digest, asyncio.Lock())
                async with lock:
                    blob = self.store.blobs.setdefault(layer.digest, {"size": layer.size, "completed": 0})
                    status = f"pulling {layer.digest[7:19]}"
                    line: dict[str, Any] = {"status": status, "digest": layer.digest, "total": layer.size}
                    if blob["completed"]:
                        line["completed"] = blob["completed"]
                    yield line
                    last_save = time.monotonic()
                    while blob["completed"] < layer.size:
                        # At most PULL_TICK_S wall seconds and at most a tenth of the blob per progress line.
                        step = layer.size / 10
                        if self.time_scale > 0:
                            step = min(step, self.catalog.download_bytes_per_s * PULL_TICK_S / self.time_scale)
                        await self.sleep_real(step / self.catalog.download_bytes_per_s)
                        blob["completed"] = int(min(layer.size, blob["completed"] + step))
                        failure = self.faults.ollama_pull(blob["completed"], layer.size) if self.faults else None
                        if failure:
                            raise ApiError(500, failure)
                        if time.monotonic() - last_save > 0.5:
                            self.store.save()
                            last_save = time.monotonic()
                        yield {**line, "completed": blob["completed"]}
            yield {"status": "verifying sha256 digest"}
            yield {"status": "writing manifest"}
            self.store.models[model.name] = {
                "digest": model.manifest_digest.removeprefix("sha256:"),
                "size": sum(layer.size for layer in model.layers) + model.config.size,
                "modified_at": _now_iso(),
                "layers": [layer.digest for layer in (*model.layers, model.config)],
            }
            self.store.save()
            yield {"status": "success"}
        finally:
            self.store.save()

    # -- scheduling -----------------------------------------------------------------------------------------------

    def expire(self) -> None:
        """Unload idle models whose keep-alive has passed."""
        now = time.monotonic()
        for key, runner in list(self.runners.items()):
            if runner.active == 0 and runner.expires_at <= now:
                del self.runners[key]

    def _fit(self, model: OllamaModel) -> None:
        """Evict idle models until ``model`` fits; raise ApiError 500 when it cannot fit at all."""
        limit = self.available_memory_bytes()
        if self.memory_limit_bytes is not None:
            limit = min(limit, self.memory_limit_bytes)
        need = model.memory_bytes
        if self.faults is not None and self.faults.ollama_load():
            raise ApiError(500, f"model requires more system memory ({_gib(need)}) than is available ({_gib(0)})")

        def used() -> int:
            return sum(r.model.memory_bytes for r in self.runners.values())

        idle = sorted((r for r in self.runners.values() if r.active == 0), key=lambda r: r.last_used)
        while idle and (used() + need > limit or len(self.runners) >= self.max_loaded):
            victim = idle.pop(0)
            self.runners.pop(victim.model.name, None)
        available = limit - used()
        if need > available:
            raise ApiError(
                500, f"model requires more system memory ({_gib(need)}) than is available ({_gib(max(0, available))})"
            )

    async def acquire(self, model: OllamaModel) -> tuple[_Runner, float]:
        """Load ``model`` if needed and mark it in use. Returns (runner, load wall seconds).

        Raises:
            ApiError: 500 memory / load timeout.
        """
        self.expire()
        runner = self.runners.get(model.name)
        if runner is not None:
            runner.active += 1
            return runner, 0.0
        started = time.monotonic()
        async with self._sched_lock:
            self.expire()
            runner = self.runners.get(model.name)
            if runner is None:
                self._fit(model)
                if model.cold_load_s > self.load_timeout_s:
                    await self.sleep_real(self.load_timeout_s)
                    progress = self.load_timeout_s / model.cold_load_s
                    raise ApiError(500, f"timed out waiting for llama runner to start - progress {progress:.2f} - ")
                await self.sleep_real(model.cold_load_s)
                runner = _Runner(model=model, slots=asyncio.Semaphore(self.num_parallel), loaded_at=time.monotonic())
                self.runners[model.name] = runner
            runner.active += 1
        return runner, time.monotonic() - started

    def release(self, runner: _Runner, keep_alive: Any) -> None:
        """Mark one request done and set the expiry from ``keep_alive`` (request value or env default)."""
        runner.active -= 1
        seconds = self.keep_alive_s if keep_alive is None else parse_keep_alive(keep_alive)
        now = time.monotonic()
        runner.last_used = now
        if math.isinf(seconds):
            runner.expires_at = math.inf
            runner.expires_wall = datetime(2318, 1, 1, tzinfo=UTC)
        else:
            runner.expires_at = now + seconds * self.time_scale
            runner.expires_wall = datetime.now(UTC) + timedelta(seconds=seconds * self.time_scale)
        if seconds == 0 and runner.active == 0:
            self.runners.pop(runner.model.name, None)

    def ps(self) -> list[dict]:
        """``/api/ps`` entries."""
        self.expire()
        out = []
        for name, runner in self.runners.items():
            entry = self.present(name)
            out.append(
                {
                    "name": name,
                    "model": name,
                    "size": runner.model.memory_bytes,
                    "digest": entry["digest"] if entry else runner.model.manifest_digest.removeprefix("sha256:"),
                    "details": runner.model.details,
                    "expires_at": _now_iso(runner.expires_wall),
                    "size_vram": 0,
                    "context_length": 4096,
                }
            )
        return out

    def snapshot(self) -> dict:
        """State for ``python -m lab status --json``: models on disk, loaded models, partial downloads."""
        partial = {d: b for d, b in self.store.blobs.items() if b["completed"] < b["size"]}
        return {
            "models": sorted(self.store.models),
            "loaded": [e["name"] for e in self.ps()],
            "partial_blobs": partial,
            "pending_requests": self.pending,
            "requests": self.requests,
            "memory_limit_bytes": self.memory_limit_bytes,
            "keep_alive_s": None if math.isinf(self.keep_alive_s) else self.keep_alive_s,
            "load_timeout_s": None if math.isinf(self.load_timeout_s) else self.load_timeout_s,
            "num_parallel": self.num_parallel,
        }

    # -- inference ------------------------------------------------------------------------------------------------

    def resolve(self, name: Any) -> OllamaModel:
        """The catalog model of a local model name. Raises ApiError 400/404."""
        if not name or not isinstance(name, str):
            raise ApiError(400, "model is required")
        if self.present(name) is None:
            raise ApiError(404, f'model "{name}" not found, try pulling it first')
        model = self.catalog.ollama_model(name)
        if model is None:  # pragma: no cover - the store only holds catalog models
            raise ApiError(404, f'model "{name}" not found, try pulling it first')
        return model

    def thinking_mode(self, model: OllamaModel, think: Any) -> tuple[bool, bool]:
        """(thinks, inline) for a request's ``think`` value. Raises ApiError 400 for think on a non-thinker."""
        requested = think is not None and think is not False and think != ""
        mode = model.behaviour.thinking
        if mode == "never":
            if requested:
                raise ApiError(400, f'"{model.name}" does not support thinking')
            return False, False
        if mode == "always":  # cannot be switched off: without think it leaks into the content
            return True, not requested
        return think is not False, not requested

    @staticmethod
    def constrained(fmt: Any) -> bool:
        """Whether ``format`` constrains the output. Raises ApiError 400 for an invalid format."""
        if fmt is None or fmt == "":
            return False
        if fmt == "json" or isinstance(fmt, dict):
            return True
        raise ApiError(400, 'invalid format: expected "json" or a valid JSON schema')


@dataclass
class _Request:
    model: OllamaModel
    name: str
    messages: list[dict]
    constrained: bool
    thinks: bool
    inline: bool
    keep_alive: Any
    stream: bool
    num_predict: int | None = None  # options.num_predict: at most this many tokens (LiteLLM's max_tokens)
    schema: dict | None = None  # format as a JSON schema


def _limit(answer: Answer, num_predict: int | None) -> tuple[Answer, str]:
    """Stop ``answer`` after ``num_predict`` tokens, as Ollama does (``done_reason`` ``length``): thinking first,
    then the content, cut in proportion; generation time shrinks with the tokens."""
    if not num_predict or num_predict < 0 or answer.completion_tokens <= num_predict:
        return answer, "stop"
    keep = num_predict / answer.completion_tokens
    thinking = answer.thinking or ""
    chars = int((len(thinking) + len(answer.content)) * keep)
    eval_s = answer.eval_s * keep
    limited = replace(
        answer,
        thinking=thinking[:chars] or None if answer.thinking is not None else None,
        content=answer.content[: max(0, chars - len(thinking))],
        completion_tokens=num_predict,
        eval_s=eval_s,
        latency_s=answer.prompt_eval_s + eval_s,
    )
    return limited, "length"


EMULATOR_KEY: web.AppKey[OllamaEmulator] = web.AppKey("ollama_emulator", OllamaEmulator)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid request body: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid request body: expected a JSON object")
    return body


@web.middleware
async def _errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message)


async def _root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def _version(request: web.Request) -> web.Response:
    return web.json_response({"version": OLLAMA_VERSION})


async def _tags(request: web.Request) -> web.Response:
    return web.json_response({"models": request.app[EMULATOR_KEY].tags()})


async def _ps(request: web.Request) -> web.Response:
    return web.json_response({"models": request.app[EMULATOR_KEY].ps()})


async def _show(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR_KEY]
    body = await _body(request)
    name = body.get("model") or body.get("name")
    if not name:
        raise ApiError(400, "model is required")
    entry = emu.present(name)
    model = emu.catalog.ollama_model(name)
    if entry is None or model is None:
        raise ApiError(404, f"model '{name}' not found")
    arch = model.family
    return web.json_response(
        {
            "license": f"License of {model.name} (emulated)",
            "modelfile": (
                f'# Modelfile generated by "ollama show"\nFROM {model.name}\nTEMPLATE """{{{{ .Prompt }}}}"""\n'
            ),
            "parameters": 'stop                           "<|im_end|>"',
            "template": "{{ .Prompt }}",
            "details": model.details,
            "model_info": {
                "general.architecture": arch,
                "general.parameter_count": _param_count(model.parameter_size),
                "general.file_type": 15,
                "general.quantization_version": 2,
                f"{arch}.context_length": model.context_length,
            },
            "capabilities": list(model.capabilities),
            "modified_at": entry["modified_at"],
        }
    )


async def _delete(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR_KEY]
    body = await _body(request)
    name = body.get("model") or body.get("name")
    if not name:
        raise ApiError(400, "model is required")
    emu.delete(name)
    return web.Response(status=200)


async def _ndjson_start(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    return response


async def _write_line(response: web.StreamResponse, obj: dict) -> None:
    await response.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")


async def _pull(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR_KEY]
    body = await _body(request)
    name = body.get("model") or body.get("name")
    if not name:
        raise ApiError(400, "model is required")
    if body.get("stream", True) is False:
        try:
            async with contextlib.aclosing(emu.pull(name)) as lines:
                async for _line in lines:
                    pass
        except ApiError as exc:
            return _error(exc.status, exc.message)
        return web.json_response({"status": "success"})
    response = await _ndjson_start(request)
    try:
        async with contextlib.aclosing(emu.pull(name)) as lines:
            async for line in lines:
                await _write_line(response, line)
    except ApiError as exc:
        await _write_line(response, {"error": exc.message})
    except ConnectionError:  # the client went away: completed bytes stay in the store, a new pull resumes
        return response
    await response.write_eof()
    return response


def _split(text: str, parts: int) -> list[str]:
    if not text:
        return []
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _stats(answer: Answer | None, started: float, load_s: float, scale: float) -> dict:
    stats = {
        "total_duration": int((time.monotonic() - started) * 1e9),
        "load_duration": int(load_s * 1e9),
    }
    if answer is not None:
        stats.update(
            {
                "prompt_eval_count": answer.prompt_tokens,
                "prompt_eval_duration": int(answer.prompt_eval_s * scale * 1e9),
                "eval_count": answer.completion_tokens,
                "eval_duration": int(answer.eval_s * scale * 1e9),
            }
        )
    return stats


async def _infer(  # noqa: C901 - Ollama's load, stream and error paths of one request, in its order
    request: web.Request, req: _Request, endpoint: str
) -> web.StreamResponse:
    """Run one chat/generate request: queue, load, answer (streamed or not)."""
    emu = request.app[EMULATOR_KEY]
    started = time.monotonic()
    model_field = {"model": req.name}

    def payload(content: str, thinking: str | None, done: bool) -> dict:
        out: dict[str, Any] = {**model_field, "created_at": _now_iso()}
        if endpoint == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            out["message"] = message
        else:
            out["response"] = content
            if thinking:
                out["thinking"] = thinking
        out["done"] = done
        return out

    if not req.messages or not any(m.get("content") for m in req.messages if m.get("role") == "user"):
        # Empty prompt: load (or with keep_alive 0 unload) the model only.
        if req.keep_alive is not None and parse_keep_alive(req.keep_alive) == 0:
            emu.runners.pop(req.model.name, None)
            return web.json_response({**payload("", None, True), "done_reason": "unload"})
        runner, load_s = await emu.acquire(req.model)
        emu.release(runner, req.keep_alive)
        return web.json_response({**payload("", None, True), "done_reason": "load", **_stats(None, started, load_s, 0)})

    failure = emu.faults.ollama_chat(req.model.name) if emu.faults is not None else None
    if failure:  # the twin's fault ollama-chat-error: the model's runner crashed on this request
        raise ApiError(500, failure)
    if emu.pending >= emu.max_queue:
        raise ApiError(503, "server busy, please try again.  maximum pending requests exceeded")
    emu.pending += 1
    emu.requests += 1
    try:
        runner, load_s = await emu.acquire(req.model)
    finally:
        emu.pending -= 1
    try:
        async with runner.slots:
            answer, done_reason = _limit(
                generate(
                    req.model.behaviour,
                    req.model.name,
                    req.messages,
                    req.constrained,
                    req.thinks,
                    req.inline,
                    schema=req.schema,
                ),
                req.num_predict,
            )
            scale = emu.time_scale
            if not req.stream:
                await emu.sleep_real(answer.latency_s)
                final = payload(answer.content, answer.thinking, True)
                return web.json_response(
                    {**final, "done_reason": done_reason, **_stats(answer, started, load_s, scale)}
                )
            response = await _ndjson_start(request)
            await emu.sleep_real(answer.prompt_eval_s)
            pieces = [("thinking", p) for p in _split(answer.thinking or "", STREAM_CHUNKS)]
            pieces += [("content", p) for p in _split(answer.content, STREAM_CHUNKS)]
            for kind, piece in pieces:
                await emu.sleep_real(answer.eval_s / max(1, len(pieces)))
                if kind == "thinking":
                    await _write_line(response, payload("", piece, False))
                else:
                    await _write_line(response, payload(piece, None, False))
            final = {**payload("", None, True), "done_reason": done_reason, **_stats(answer, started, load_s, scale)}
            await _write_line(response, final)
            await response.write_eof()
            return response
    finally:
        emu.release(runner, req.keep_alive)


def _request_common(emu: OllamaEmulator, body: dict, messages: list[dict]) -> _Request:
    name = body.get("model")
    model = emu.resolve(name)
    thinks, inline = emu.thinking_mode(model, body.get("think"))
    keep_alive = body.get("keep_alive")
    if keep_alive is not None:
        try:
            parse_keep_alive(keep_alive)
        except ValueError as exc:
            raise ApiError(400, f"invalid keep_alive: {exc}") from exc
    return _Request(
        model=model,
        name=str(name),
        messages=messages,
        constrained=emu.constrained(body.get("format")),
        thinks=thinks,
        inline=inline,
        keep_alive=keep_alive,
        stream=body.get("stream", True) is not False,
        num_predict=_num_predict(body.get("options")),
        schema=body.get("format") if isinstance(body.get("format"), dict) else None,
    )


def _num_predict(options: Any) -> int | None:
    """``options.num_predict`` (an int; -1 or absent: no limit), or a 400 like Ollama's for a wrong type."""
    value = (options or {}).get("num_predict") if isinstance(options, dict) else None
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, f'option "num_predict" must be of type integer: {value!r}') from exc


async def _chat(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR_KEY]
    body = await _body(request)
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "messages must be a list of objects")
    return await _infer(request, _request_common(emu, body, messages), "chat")


async def _generate(request: web.Request) -> web.StreamResponse:
    emu = request.app[EMULATOR_KEY]
    body = await _body(request)
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": str(body["system"])})
    if body.get("prompt"):
        messages.extend(unflatten_prompt(str(body["prompt"])))
    return await _infer(request, _request_common(emu, body, messages), "generate")


def make_ollama_app(emulator: OllamaEmulator) -> web.Application:
    """The aiohttp app of the emulated Ollama API (listen on 127.0.0.1; the runtime maps the Service port)."""
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024**2)
    app[EMULATOR_KEY] = emulator
    app.router.add_get("/", _root)
    app.router.add_get("/api/version", _version)
    app.router.add_get("/api/tags", _tags)
    app.router.add_get("/api/ps", _ps)
    app.router.add_post("/api/show", _show)
    app.router.add_delete("/api/delete", _delete)
    app.router.add_post("/api/pull", _pull)
    app.router.add_post("/api/chat", _chat)
    app.router.add_post("/api/generate", _generate)
    return app
