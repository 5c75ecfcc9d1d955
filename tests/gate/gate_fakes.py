"""In-process fake LLM backends for the gate tests: Ollama ``/api/chat`` and OpenAI ``/v1/chat/completions``.

The servers are aiohttp apps on 127.0.0.1 (ephemeral ports) in one asyncio loop running in a background thread,
so the synchronous Ansible modules (which use httpx in worker threads) can call them. Responses have the shape of
the real APIs (Ollama 0.12 non-streaming chat, vLLM/OpenAI chat completions).

A fake model is a function ``behaviour(doc, body) -> Reply``: ``doc`` is the gate document the user message
belongs to (found by its text), or None for other prompts such as the warm-up; ``body`` is the request JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS_DIR = ROOT / "roles" / "llm_gate" / "files" / "documents"


@dataclass
class Reply:
    """What a fake model answers: content, optional thinking, how long it takes (s), tokens generated."""

    content: str
    thinking: str | None = None
    delay: float = 0.0
    eval_count: int = 40
    eval_seconds: float = 1.0
    load_seconds: float = 0.0
    status: int = 200
    error: str | None = None


def answer_json(doc: dict, document_type: str | None = None, **override) -> str:
    """A correct classification answer for ``doc`` as the JSON text a good model would produce."""
    obj = {
        "title": f"{doc['document_type'].title()} {doc['id']}",
        "correspondent": doc["correspondent"],
        "document_type": document_type or doc["document_type"],
        "tags": [doc["document_type"], "gate"],
    }
    obj.update(override)
    return json.dumps(obj, ensure_ascii=False)


def good(delay: float = 0.0) -> Callable:
    def behaviour(doc, body):
        if doc is None:
            return Reply("OK", delay=delay)
        return Reply(answer_json(doc), delay=delay)

    return behaviour


@dataclass
class Recorder:
    """Requests seen by a fake server and the most requests it had in flight at once."""

    requests: list = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def classification_requests(self) -> list:
        return [b for b in self.requests if _doc_text(b) is not None and _is_classification(b)]


def _doc_text(body: dict) -> str | None:
    for message in body.get("messages") or []:
        if message.get("role") == "user":
            return message.get("content")
    return None


def _is_classification(body: dict) -> bool:
    return any(m.get("role") == "system" for m in body.get("messages") or [])


class DocumentIndex:
    """Finds the gate document a user message belongs to (the text is sent verbatim)."""

    def __init__(self, documents: list[dict]):
        self.by_text = {d["text"]: d for d in documents}

    def find(self, body: dict) -> dict | None:
        return self.by_text.get(_doc_text(body) or "")


class FakeBackend:
    """One fake server with named models. ``kind`` is ``ollama`` or ``openai``."""

    def __init__(self, kind: str, models: dict[str, Callable], index: DocumentIndex, api_key: str | None = None):
        self.kind = kind
        self.models = models
        self.index = index
        self.api_key = api_key
        self.rec = Recorder()
        # Ollama's /api/tags digests: model -> hex digest (default: SHA-256 of the name); a test changes one to
        # stand for other weights under the same tag
        self.digests: dict[str, str] = {}

    def app(self) -> web.Application:
        app = web.Application()
        if self.kind == "ollama":
            app.router.add_post("/api/chat", self._ollama_chat)
            app.router.add_get("/api/version", self._ollama_version)
            app.router.add_get("/api/tags", self._ollama_tags)
        else:
            app.router.add_post("/v1/chat/completions", self._openai_chat)
            app.router.add_get("/v1/models", self._openai_models)
        return app

    async def _run(self, body: dict) -> Reply | None:
        behaviour = self.models.get(body.get("model"))
        if behaviour is None:
            return None
        reply = behaviour(self.index.find(body), body)
        self.rec.in_flight += 1
        self.rec.max_in_flight = max(self.rec.max_in_flight, self.rec.in_flight)
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
        finally:
            self.rec.in_flight -= 1
        return reply

    async def _ollama_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.6"})

    async def _ollama_tags(self, request: web.Request) -> web.Response:
        models = [
            {"name": name, "model": name, "digest": self.digests.get(name) or hashlib.sha256(name.encode()).hexdigest()}
            for name in self.models
        ]
        return web.json_response({"models": models})

    async def _ollama_chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.rec.requests.append(body)
        reply = await self._run(body)
        if reply is None:
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        if reply.status != 200:
            return web.json_response({"error": reply.error or "error"}, status=reply.status)
        message = {"role": "assistant", "content": reply.content}
        if reply.thinking:
            message["thinking"] = reply.thinking
        eval_ns = int(reply.eval_seconds * 1e9)
        load_ns = int(reply.load_seconds * 1e9)
        return web.json_response(
            {
                "model": body["model"],
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
                "message": message,
                "done": True,
                "done_reason": "stop",
                "total_duration": eval_ns + load_ns + 120_000_000,
                "load_duration": load_ns,
                "prompt_eval_count": 412,
                "prompt_eval_duration": 120_000_000,
                "eval_count": reply.eval_count,
                "eval_duration": eval_ns,
            }
        )

    async def _openai_models(self, request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model", "owned_by": "vllm", "max_model_len": 8192} for name in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _openai_chat(self, request: web.Request) -> web.Response:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "code": 401}},
                status=401,
            )
        body = await request.json()
        self.rec.requests.append(body)
        reply = await self._run(body)
        if reply is None:  # vLLM's answer for a model name it does not serve
            return web.json_response(
                {
                    "object": "error",
                    "message": f"The model `{body.get('model')}` does not exist.",
                    "type": "NotFoundError",
                    "param": None,
                    "code": 404,
                },
                status=404,
            )
        if reply.status != 200:
            return web.json_response(
                {"object": "error", "message": reply.error or "error", "type": "InternalServerError", "code": 500},
                status=reply.status,
            )
        message = {"role": "assistant", "content": reply.content, "tool_calls": []}
        if reply.thinking:
            message["reasoning_content"] = reply.thinking
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.rec.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 412, "completion_tokens": reply.eval_count, "total_tokens": 412 + 40},
            }
        )


class ServerThread:
    """An asyncio loop in a daemon thread hosting aiohttp apps on 127.0.0.1."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gate-fakes", daemon=True)
        self.thread.start()
        self.runners: dict[int, web.AppRunner] = {}
        self.apps: dict[int, Callable[[], web.Application]] = {}

    def _call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, factory: Callable[[], web.Application], port: int) -> int:
        runner = web.AppRunner(factory(), shutdown_timeout=0.5, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1]
        self.runners[bound] = runner
        self.apps[bound] = factory
        return bound

    def serve(self, factory: Callable[[], web.Application], port: int = 0) -> int:
        """Start an app (``factory()`` builds it); returns the port."""
        return self._call(self._start(factory, port))

    def stop(self, port: int) -> None:
        """Stop the server on ``port`` (connections are refused afterwards, like a pod scaled to 0)."""
        runner = self.runners.pop(port, None)
        if runner is not None:
            self._call(runner.cleanup())

    def start_again(self, port: int) -> None:
        """Start the app that was served on ``port`` again, on the same port."""
        if port not in self.runners:
            self._call(self._start(self.apps[port], port))

    def close(self) -> None:
        for port in list(self.runners):
            self.stop(port)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
