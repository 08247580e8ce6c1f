"""verl needs orjson, and bm25s then writes its index with orjson: the SearchQA BM25 cache must still save."""

import pytest

from opid_envs.searchqa.datasets import build_synthetic
from opid_envs.searchqa.retrieval import BM25Retriever

pytest.importorskip("orjson", reason="orjson comes with the verl extra")


def test_bm25_index_saves_and_reloads_with_orjson_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("OPID_CACHE", str(tmp_path))
    data = build_synthetic()
    first = BM25Retriever(data.corpus)  # builds and saves the index (orjson refused its int keys)
    second = BM25Retriever(data.corpus)  # loads it
    queries = ["Pouva Observatory founded", "river city"]
    assert first.batch_search(queries, 5) == second.batch_search(queries, 5)
