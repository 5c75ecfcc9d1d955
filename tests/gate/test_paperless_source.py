"""The gate's Paperless-ngx document source: llm_validate against the twin's Paperless-ngx API (lab/paperless) and a
fake Ollama; the shipped documents stand in when the API cannot be used, and the result says why."""

from __future__ import annotations

import json

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.paperless_client import (
    PaperlessClient,
    PaperlessError,
)
from ansible_collections.homelab.inference.plugins.modules import llm_validate
from gate_fakes import DOCUMENTS_DIR, FakeBackend, good

from lab.paperless import generate_corpus, make_paperless_app
from lab.paperless.corpus import DOCUMENT_TYPES

TOKEN = "paperless-token-0123456789abcdef"
TYPE_MAP = {
    "Rechnung": "invoice",
    "invoice": "invoice",
    "Brief": "letter",
    "Letter": "letter",
    "KASSENBON": "receipt",
    "Receipt": "receipt",
}  # names are matched case-insensitively
CORPUS = generate_corpus()
MAPPED = [d for d in CORPUS.documents if d["document_type"] and DOCUMENT_TYPES[d["document_type"]][1]]


@pytest.fixture
def paperless(servers):
    apps = []

    def factory():
        apps.append(make_paperless_app(CORPUS, TOKEN))
        return apps[-1]

    port = servers.serve(factory)
    yield {"url": f"http://127.0.0.1:{port}", "port": port, "apps": apps}
    servers.stop(port)


@pytest.fixture
def ollama(servers, doc_index):
    backend = FakeBackend("ollama", {"m": good()}, doc_index)
    for doc in MAPPED:  # the fake answers a Paperless document by its text, as it does a shipped one
        backend.index.by_text[doc["content"]] = {
            "id": f"paperless-{doc['id']}",
            "document_type": DOCUMENT_TYPES[doc["document_type"]][1],
            "correspondent": CORPUS.correspondents[doc["correspondent"]],
            "text": doc["content"],
        }
    port = servers.serve(backend.app)
    backend.url = f"http://127.0.0.1:{port}"
    yield backend
    servers.stop(port)


def gate(ollama, paperless_url, token=TOKEN, **source):
    return {
        "api": "ollama",
        "api_url": ollama.url,
        "model": "m",
        "documents_dir": str(DOCUMENTS_DIR),
        "sample_size": 10,
        "max_documents": 10,
        "request_timeout": 5,
        "warmup_timeout": 5,
        "max_p95_latency": 2,
        "on_inconclusive": "pass",
        "paperless": {"url": paperless_url, "token": token, "type_map": TYPE_MAP, "max_documents": 30, **source},
    }


def test_documents_are_drawn_from_paperless_reproducibly(module_runner, ollama, paperless):
    result = module_runner(llm_validate, gate(ollama, paperless["url"], seed=7))
    assert not result.failed, result["msg"]
    source = result["document_source"]
    assert source["source"] == "paperless" and source["documents"] == 30 and source["seed"] == 7
    assert source["candidates"] == len(MAPPED) == 100, "typed documents whose type the map names"
    assert source["unmapped"] == ["Vertrag"] and source["types"]["Rechnung"] == "invoice"
    sent = [d["id"] for d in result["per_document"]]
    assert len(sent) == 10 and all(i.startswith("paperless-") for i in sent)
    by_id = {f"paperless-{d['id']}": DOCUMENT_TYPES[d["document_type"]][1] for d in MAPPED}
    assert all(d["expected"] == by_id[d["id"]] for d in result["per_document"]), "the type's class is the answer"
    assert {d["expected"] for d in result["per_document"]} == {"invoice", "letter", "receipt"}
    assert TOKEN not in json.dumps(result), "the token is no_log"
    again = module_runner(llm_validate, gate(ollama, paperless["url"], seed=7))
    other = module_runner(llm_validate, gate(ollama, paperless["url"], seed=8))
    assert [d["id"] for d in again["per_document"]] == sent, "the same seed draws the same documents"
    assert [d["id"] for d in other["per_document"]] != sent
    # German and English, as in the lab's Paperless, and none of the shipped gate documents
    contents = [d["content"] for d in MAPPED]
    assert any("Sehr geehrte" in c for c in contents) and any("Dear" in c for c in contents)
    shipped = {d["text"] for d in ollama.index.by_text.values() if not d["id"].startswith("paperless-")}
    assert shipped and not shipped & set(contents)


def test_the_client_follows_pages_and_filters(paperless):
    with PaperlessClient(paperless["url"], TOKEN) as client:
        typed = client.list("documents", {"document_type__isnull": "false", "fields": "id,document_type"})
        assert len(typed) == sum(1 for d in CORPUS.documents if d["document_type"]) > 100, "two pages of 100"
        assert set(typed[0]) == {"id", "document_type"}
        assert [d["id"] for d in client.documents([5, 3, 99999])] == [5, 3], "an id that is not there is left out"
        assert client.names("document_types")[7] == "Vertrag"
    with PaperlessClient(paperless["url"], "wrong") as client, pytest.raises(PaperlessError, match="HTTP 401: Inv"):
        client.names("document_types")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong token", "returned HTTP 401: Invalid token."),
        ("unreachable", "failed: ConnectError"),
        ("nothing mapped", "no document has a document type that the type map (type_map) maps to"),
    ],
)
def test_the_shipped_documents_stand_in_and_the_result_says_why(
    module_runner, ollama, paperless, servers, case, reason
):
    args = gate(ollama, paperless["url"], token="wrong" if case == "wrong token" else TOKEN)
    if case == "nothing mapped":
        args["paperless"]["type_map"] = {"Vertrag": "letter-of-intent"}
    if case == "unreachable":
        servers.stop(paperless["port"])
    result = module_runner(llm_validate, args)
    assert not result.failed, result["msg"]
    source = result["document_source"]
    assert source["source"] == "shipped" and reason in source["reason"], source
    assert source["reason"].startswith(f"Paperless-ngx at {paperless['url']} could not be used: ")
    assert not any(d["id"].startswith("paperless-") for d in result["per_document"])
    assert "wrong" not in json.dumps(source) or case != "wrong token" or "token" not in source


def test_without_a_source_the_shipped_documents_are_used(module_runner, ollama):
    args = gate(ollama, "http://unused")
    del args["paperless"]
    result = module_runner(llm_validate, args)
    assert result["document_source"] == {"source": "shipped", "reason": "no Paperless-ngx source configured"}
