"""Build (or check) the cached retrieval indexes ahead of time, with a progress bar.

    python -m opid_envs.searchqa.index --dataset fanoutqa --backend bm25 dense
    python -m opid_envs.searchqa.index --corpus wiki-18.jsonl --backend bm25

Indexes go to `$OPID_CACHE/searchqa/<corpus>-<content hash>/<backend>` (default
`~/.cache/opid`); a second run finds them and returns at once.
"""

from __future__ import annotations

import argparse
import time

from opid_envs.searchqa.corpus import load_jsonl_corpus
from opid_envs.searchqa.datasets import DATASETS, load_dataset
from opid_envs.searchqa.retrieval import BACKENDS, index_dir, make_retriever


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build cached retrieval indexes for SearchQA corpora.")
    parser.add_argument("--dataset", default="synthetic", choices=sorted(DATASETS))
    parser.add_argument("--corpus", help="a wiki-18 style JSONL corpus (overrides --dataset)")
    parser.add_argument("--corpus-limit", type=int, help="index only the first N documents")
    parser.add_argument("--backend", nargs="+", default=["bm25"], choices=BACKENDS)
    args = parser.parse_args(argv)
    try:
        corpus = (load_jsonl_corpus(args.corpus, limit=args.corpus_limit) if args.corpus
                  else load_dataset(args.dataset).corpus)
    except (OSError, ValueError) as exc:  # missing or malformed file, missing data package
        parser.error(str(exc))
    print(f"corpus {corpus.name}: {len(corpus)} documents, fingerprint {corpus.fingerprint}")
    for backend in args.backend:
        start = time.perf_counter()
        make_retriever(backend, corpus, progress=True)
        print(f"{backend}: ready in {time.perf_counter() - start:.1f} s under {index_dir(corpus, backend).parent}")


if __name__ == "__main__":
    main()
