"""The emulated vLLM: startup checks from the container args, OpenAI API, thinking, 404 on a wrong name."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from aiohttp.test_utils import TestServer

from lab.ollama.catalog import GIB
from lab.vllm import VllmEmulator, VllmStartupError, make_vllm_app

RTX_3060 = 12 * GIB
QWEN3_ARGS = [
    "--model",
    "Qwen/Qwen3-8B-AWQ",
    "--served-model-name",
    "Qwen/Qwen3-8B-AWQ",
    "--max-model-len",
    "8192",
    "--gpu-memory-utilization",
    "0.90",
    "--quantization",
    "awq_marlin",
    "--port",
    "8000",
]
DOC = "Stadtwerke Musterstadt GmbH\nRechnung Nr. 2024-1\nGesamtbetrag 312,40 EUR zahlbar bis 26.03.2024"
SYSTEM = "Classify the document. Answer only with JSON: title, correspondent, document_type, tags."


def chat(model: str, **extra) -> dict:
    return {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": DOC}],
        **extra,
    }


async def serve(emulator: VllmEmulator, wait_ready: bool = True):
    server = TestServer(make_vllm_app(emulator), host="127.0.0.1")
    await server.start_server()
    if wait_ready:
        for _ in range(200):
            if emulator.ready:
                break
            await asyncio.sleep(0.01)
    return server, str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "Qwen/Qwen3-14B-AWQ"], "is not a local folder and is not a valid model identifier"),
        # Default max-model-len (40960) needs ~5.6 GiB of KV cache: more than 0.9 x 12 GiB leaves.
        (["--model", "Qwen/Qwen3-8B-AWQ"], "larger than the maximum number of tokens that can be stored in KV cache"),
        (["--model", "Qwen/Qwen3-8B-AWQ", "--gpu-memory-utilization", "0.5"], "No available memory for the cache"),
        (["--model", "Qwen/Qwen3-8B-AWQ", "--quantization", "gptq", "--max-model-len", "8192"], "does not match"),
        (["--model", "Qwen/Qwen3-8B-AWQ", "--max-model-len", "65536"], "greater than the derived max_model_len"),
        (["--model", "Qwen/Qwen3-8B-AWQ", "--quantization", "nope"], "invalid choice"),
        ([], "required"),
    ],
)
def test_startup_errors(catalog, args, message):
    with pytest.raises(VllmStartupError, match=message):
        VllmEmulator(catalog, args, RTX_3060, 0.001)


def test_startup_accepts_serve_form_and_reports_vram(catalog):
    emulator = VllmEmulator(
        catalog, ["serve", "Qwen/Qwen3-8B-AWQ", "--max-model-len", "8192", "--host", "127.0.0.1"], RTX_3060, 0.001
    )
    assert emulator.served_names == ["Qwen/Qwen3-8B-AWQ"]
    assert emulator.kv_cache_tokens >= 8192
    assert emulator.snapshot()["vram_used_bytes"] == int(0.9 * RTX_3060)
    # The same args do not fit a 8 GiB card.
    with pytest.raises(VllmStartupError):
        VllmEmulator(catalog, ["--model", "Qwen/Qwen3-8B-AWQ", "--max-model-len", "8192"], 8 * GIB, 0.001)


async def test_health_after_loading(catalog):
    emulator = VllmEmulator(catalog, QWEN3_ARGS, RTX_3060, 0.002)  # load 75 s -> 0.15 s
    server, url = await serve(emulator, wait_ready=False)
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/health")).status_code == 503
            assert (await client.get("/v1/models")).status_code == 503
            await asyncio.sleep(0.3)
            assert (await client.get("/health")).status_code == 200
            models = (await client.get("/v1/models")).json()
        assert models["object"] == "list"
        assert [m["id"] for m in models["data"]] == ["Qwen/Qwen3-8B-AWQ"]
        assert models["data"][0]["max_model_len"] == 8192
    finally:
        await server.close()


async def test_wrong_model_name_is_404_like_vllm(catalog):
    args = [*QWEN3_ARGS]
    args[3] = "vllm-qwen"  # --served-model-name vllm-qwen
    server, url = await serve(VllmEmulator(catalog, args, RTX_3060, 0.001))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            wrong = await client.post("/v1/chat/completions", json=chat("Qwen/Qwen3-8B-AWQ"))
            right = await client.post("/v1/chat/completions", json=chat("vllm-qwen"))
    finally:
        await server.close()
    assert wrong.status_code == 404
    assert wrong.json() == {
        "object": "error",
        "message": "The model `Qwen/Qwen3-8B-AWQ` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }
    assert right.status_code == 200 and right.json()["model"] == "vllm-qwen"


async def test_qwen3_thinks_unless_disabled(catalog):
    server, url = await serve(VllmEmulator(catalog, QWEN3_ARGS, RTX_3060, 0.001))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            thinking = (await client.post("/v1/chat/completions", json=chat("Qwen/Qwen3-8B-AWQ"))).json()
            plain = (
                await client.post(
                    "/v1/chat/completions",
                    json=chat("Qwen/Qwen3-8B-AWQ", chat_template_kwargs={"enable_thinking": False}),
                )
            ).json()
            forced = (
                await client.post(
                    "/v1/chat/completions",
                    json=chat(
                        "Qwen/Qwen3-8B-AWQ",
                        chat_template_kwargs={"enable_thinking": False},
                        response_format={"type": "json_object"},
                    ),
                )
            ).json()
    finally:
        await server.close()
    content = thinking["choices"][0]["message"]["content"]
    assert content.startswith("<think>") and "</think>" in content
    assert thinking["usage"]["completion_tokens"] > plain["usage"]["completion_tokens"] + 200
    assert not plain["choices"][0]["message"]["content"].startswith("<think>")
    answer = json.loads(forced["choices"][0]["message"]["content"])
    assert answer["document_type"] in ("invoice", "receipt", "letter")
    assert answer["correspondent"] == "Stadtwerke Musterstadt GmbH"
    usage = forced["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert forced["object"] == "chat.completion" and forced["choices"][0]["finish_reason"] == "stop"


async def test_qwen25_never_thinks_and_latency_is_scaled(catalog):
    import time

    args = ["--model", "Qwen/Qwen2.5-7B-Instruct-AWQ", "--quantization", "awq_marlin", "--max-model-len", "8192"]
    server, url = await serve(VllmEmulator(catalog, args, RTX_3060, 0.02))  # load 60 s -> 1.2 s
    try:
        for _ in range(400):
            async with httpx.AsyncClient(base_url=url) as client:
                if (await client.get("/health")).status_code == 200:
                    break
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            started = time.monotonic()
            reply = (await client.post("/v1/chat/completions", json=chat("Qwen/Qwen2.5-7B-Instruct-AWQ"))).json()
            elapsed = time.monotonic() - started
    finally:
        await server.close()
    assert "<think>" not in reply["choices"][0]["message"]["content"]
    assert 2.2 * 0.02 <= elapsed < 3.5 * 0.02 + 0.5  # 2.2-3.5 real-lab seconds


async def test_streaming_sse(catalog):
    server, url = await serve(VllmEmulator(catalog, QWEN3_ARGS, RTX_3060, 0.001))
    try:
        body = chat(
            "Qwen/Qwen3-8B-AWQ",
            stream=True,
            stream_options={"include_usage": True},
            chat_template_kwargs={"enable_thinking": False},
        )
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                events = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
            whole = await client.post("/v1/chat/completions", json={**body, "stream": False})
    finally:
        await server.close()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole.json()["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["completion_tokens"] > 0


async def test_context_length_is_enforced(catalog):
    server, url = await serve(VllmEmulator(catalog, QWEN3_ARGS, RTX_3060, 0.001))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            response = await client.post("/v1/chat/completions", json=chat("Qwen/Qwen3-8B-AWQ", max_tokens=9000))
    finally:
        await server.close()
    assert response.status_code == 400
    assert "maximum context length is 8192 tokens" in response.json()["message"]


async def test_a_json_schema_response_format_shapes_the_answer(catalog):
    schema = {
        "type": "object",
        "properties": {
            "document_type": {"type": "string", "enum": ["letter", "contract"]},
            "title": {"type": "string"},
        },
        "required": ["document_type", "title"],
    }
    server, url = await serve(VllmEmulator(catalog, QWEN3_ARGS, RTX_3060, 0.001))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            reply = (
                await client.post(
                    "/v1/chat/completions",
                    json=chat(
                        "Qwen/Qwen3-8B-AWQ",
                        chat_template_kwargs={"enable_thinking": False},
                        response_format={"type": "json_schema", "json_schema": {"name": "doc", "schema": schema}},
                    ),
                )
            ).json()
    finally:
        await server.close()
    answer = json.loads(reply["choices"][0]["message"]["content"])
    assert set(answer) == {"document_type", "title"} and answer["document_type"] in ("letter", "contract")
