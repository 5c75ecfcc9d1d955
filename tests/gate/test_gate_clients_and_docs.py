"""OpenAIClient error handling, and the module documentation matching the argument specs."""

from __future__ import annotations

import json
import subprocess

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.openai_client import (
    OpenAIClient,
    OpenAIError,
    OpenAITimeout,
    verify_from_params,
)
from ansible_collections.homelab.inference.plugins.modules import litellm_route_check, llm_validate
from gate_fakes import ROOT, FakeBackend, Reply, good


@pytest.fixture
def vllm(servers, doc_index):
    backend = FakeBackend("openai", {"served": good()}, doc_index)
    port = servers.serve(backend.app)
    backend.url = f"http://127.0.0.1:{port}/v1"
    backend.port = port
    yield backend
    servers.stop(port)


def test_models_and_chat(vllm):
    with OpenAIClient(vllm.url, timeout=5) as client:
        assert [m["id"] for m in client.models()] == ["served"]
        data, headers = client.chat(
            "served", [{"role": "user", "content": "hi"}], response_format={"type": "json_object"}
        )
    assert data["choices"][0]["message"]["content"] == "OK"
    assert headers["content-type"].startswith("application/json")
    assert vllm.rec.requests[-1] == {
        "model": "served",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "response_format": {"type": "json_object"},
    }


def test_errors_carry_status_and_the_servers_message(vllm, servers):
    with OpenAIClient(vllm.url, timeout=5) as client:
        with pytest.raises(OpenAIError) as err:
            client.chat("Qwen/Qwen2.5-7B-Instruct-AWQ", [{"role": "user", "content": "hi"}])
        assert err.value.status == 404
        assert "The model `Qwen/Qwen2.5-7B-Instruct-AWQ` does not exist." in str(err.value)
        assert err.value.body["type"] == "NotFoundError"

        vllm.models["slow"] = lambda doc, body: Reply("late", delay=2)
        with pytest.raises(OpenAITimeout, match=r"timed out after 0\.2 s"):
            client.chat("slow", [{"role": "user", "content": "hi"}], timeout=0.2)

    servers.stop(vllm.port)
    with OpenAIClient(vllm.url, timeout=5) as client:
        with pytest.raises(OpenAIError) as err:
            client.models()
    assert err.value.status is None and "ConnectError" in str(err.value)


def test_bearer_key():
    secret = "sk-abc"
    client = OpenAIClient("http://127.0.0.1:9/v1", api_key=secret)
    try:
        assert client._client.headers["Authorization"] == f"Bearer {secret}"
    finally:
        client.close()


def test_verify_from_params():
    assert verify_from_params({"validate_certs": True, "ca_path": "/x/ca.pem"}) == "/x/ca.pem"
    assert verify_from_params({"validate_certs": False, "ca_path": "/x/ca.pem"}) is False
    assert verify_from_params({"validate_certs": True, "ca_path": None}) is True


class _Captured(Exception):
    pass


def _argument_spec(module, monkeypatch) -> dict:
    captured = {}

    def fake(**kwargs):
        captured.update(kwargs)
        raise _Captured

    monkeypatch.setattr(module, "AnsibleModule", fake)
    with pytest.raises(_Captured):
        module.main()
    return captured["argument_spec"]


FQCN = "homelab.inference."


@pytest.fixture(scope="module")
def ansible_doc() -> dict:
    out = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "ansible-doc"),
            "-t",
            "module",
            "--json",
            *(FQCN + n for n in ("llm_validate", "litellm_route_check")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return {name.removeprefix(FQCN): doc for name, doc in json.loads(out).items()}


@pytest.mark.parametrize("module", [llm_validate, litellm_route_check], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_documentation_matches_argument_spec(module, monkeypatch, ansible_doc):
    spec = _argument_spec(module, monkeypatch)
    options = ansible_doc[module.__name__.rsplit(".", 1)[-1]]["doc"]["options"]
    assert set(options) == set(spec)
    for name, option in spec.items():
        doc = options[name]
        assert doc.get("type", "str") == option.get("type", "str"), name
        assert bool(doc.get("required", False)) == bool(option.get("required", False)), name
        if "default" in option:
            assert doc.get("default") == option["default"], name
        else:
            assert doc.get("default") is None, name
        if option.get("choices"):
            assert doc["choices"] == option["choices"], name
    assert spec["api_key"]["no_log"] is True
    assert ansible_doc[module.__name__.rsplit(".", 1)[-1]]["examples"]
    assert ansible_doc[module.__name__.rsplit(".", 1)[-1]]["return"]
