"""The twin's Paperless-ngx: its REST API (token auth, Django REST Framework paging) over a corpus of its own."""

from lab.paperless.corpus import CORPUS_SEED, Corpus, generate_corpus
from lab.paperless.server import make_paperless_app

__all__ = ["CORPUS_SEED", "Corpus", "generate_corpus", "make_paperless_app"]
