"""The Paperless-ngx client (plugins/module_utils/paperless_client.py) against the twin's Paperless-ngx API
(lab/paperless): pages, filters, token authentication, and the gate's reproducible draw of documents."""

from __future__ import annotations

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.paperless_client import (
    PaperlessClient,
    PaperlessError,
    sample_documents,
)

from lab.paperless import generate_corpus, make_paperless_app
from lab.paperless.corpus import DOCUMENT_TYPES

TOKEN = "paperless-token-0123456789abcdef"
CLASSES = ("invoice", "letter", "receipt")
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
    port = servers.serve(lambda: make_paperless_app(CORPUS, TOKEN))
    yield {"url": f"http://127.0.0.1:{port}", "port": port}
    servers.stop(port)


def test_the_client_follows_pages_and_filters(paperless):
    with PaperlessClient(paperless["url"], TOKEN) as client:
        typed = client.list("documents", {"document_type__isnull": "false", "fields": "id,document_type"})
        assert len(typed) == sum(1 for d in CORPUS.documents if d["document_type"]) > 100, "two pages of 100"
        assert set(typed[0]) == {"id", "document_type"}
        assert [d["id"] for d in client.documents([5, 3, 99999])] == [5, 3], "an id that is not there is left out"
        assert client.names("document_types")[7] == "Vertrag"
    with PaperlessClient(paperless["url"], "wrong") as client, pytest.raises(PaperlessError, match="HTTP 401: Inv"):
        client.names("document_types")


def test_documents_are_drawn_reproducibly_from_the_mapped_types(paperless):
    with PaperlessClient(paperless["url"], TOKEN) as client:
        documents, drawn = sample_documents(client, TYPE_MAP, CLASSES, 30, seed=7)
        again, _ = sample_documents(client, TYPE_MAP, CLASSES, 30, seed=7)
        other, _ = sample_documents(client, TYPE_MAP, CLASSES, 30, seed=8)
    assert len(documents) == 30 and drawn["candidates"] == len(MAPPED) == 100 and drawn["seed"] == 7
    assert drawn["unmapped"] == ["Vertrag"] and drawn["types"]["Rechnung"] == "invoice"
    assert [d["id"] for d in again] == [d["id"] for d in documents] != [d["id"] for d in other]
    by_id = {f"paperless-{d['id']}": d for d in MAPPED}
    for doc in documents:
        source = by_id[doc["id"]]
        assert doc["document_type"] == DOCUMENT_TYPES[source["document_type"]][1] and doc["text"] == source["content"]
        assert doc["correspondent"] == CORPUS.correspondents[source["correspondent"]]
    contents = [d["content"] for d in MAPPED]
    assert any("Sehr geehrte" in c for c in contents) and any("Dear" in c for c in contents), "German and English"


def test_a_map_that_names_no_type_is_an_error_that_says_which_types_there_are(paperless):
    with PaperlessClient(paperless["url"], TOKEN) as client, pytest.raises(PaperlessError) as error:
        sample_documents(client, {"Vertrag": "contract"}, CLASSES, 10)
    assert "no document has a document type that the type map (type_map) maps to" in str(error.value)
    assert "Brief, Invoice, Kassenbon, Letter, Receipt, Rechnung, Vertrag" in str(error.value)
