"""Fixtures for the gate tests: gate documents and in-process fake LLM servers (see gate_fakes.py)."""

from __future__ import annotations

import pytest
from ansible_collections.homelab.inference.plugins.module_utils.llm_gate import load_documents
from gate_fakes import DOCUMENTS_DIR, DocumentIndex, ServerThread


@pytest.fixture(scope="session")
def documents() -> list[dict]:
    return load_documents(DOCUMENTS_DIR)


@pytest.fixture(scope="session")
def doc_index(documents) -> DocumentIndex:
    return DocumentIndex(documents)


@pytest.fixture(scope="session")
def servers():
    thread = ServerThread()
    yield thread
    thread.close()
