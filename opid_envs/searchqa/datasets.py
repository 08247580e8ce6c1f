"""Question sets: a synthetic multi-hop set, real FanOutQA questions over Wikipedia summaries, Search-R1 files.

Every set is a `QADataset`: its corpus plus `train` and `test` splits of `QAItem`s. An item keeps
the gold search plan (`queries`), which the oracle solver follows; the env never shows it.

The synthetic set is generated from a fictional knowledge base (countries, cities, people,
organisations with invented names), so no answer can come from pretraining, and the number of
hops is set by construction: 1-hop lookups, bridge questions that chain two lookups, and
comparisons of two entities.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from opid_envs.searchqa.corpus import Corpus, Document, iter_jsonl, load_jsonl_corpus, load_wiki_summaries, package_file
from opid_envs.searchqa.scoring import contains_answer, normalize_answer

SYNTHETIC_SEED = 20260622


@dataclass(frozen=True)
class QAItem:
    question: str
    answers: tuple[str, ...]
    data_source: str
    task_type: str
    item_id: str
    queries: tuple[str, ...] = ()  # gold search plan: one query per hop, then fallbacks
    hops: int = 1  # searches the question needs before it can be answered


@dataclass(frozen=True)
class QADataset:
    name: str
    corpus: Corpus
    splits: dict[str, tuple[QAItem, ...]] = field(default_factory=dict)

    def split(self, name: str) -> tuple[QAItem, ...]:
        if name not in self.splits:
            raise ValueError(f"dataset {self.name!r} has splits {sorted(self.splits)}, not {name!r}")
        return self.splits[name]


def _stable_fraction(key: str) -> float:
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF


# -- synthetic knowledge base ---------------------------------------------------------------
_ONSETS = ["b", "br", "d", "dr", "f", "g", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "st", "t", "th", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "k", "x"]
_PROFESSIONS = ["cartographer", "glassblower", "astronomer", "violinist", "beekeeper", "shipwright",
                "botanist", "architect", "clockmaker", "linguist", "weaver", "surgeon"]
_ORG_KINDS = ["Guild", "Foundry", "Institute", "Company", "Observatory", "Archive", "Workshop", "Society"]
_RIVER_WORD = "River"


class _NameMaker:
    """Invented, unique, pronounceable names from a seeded generator."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def word(self, syllables: int) -> str:
        while True:
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
            name = ("".join(parts) + self.rng.choice(_CODAS)).capitalize()
            if name not in self.used and len(name) >= 4:
                self.used.add(name)
                return name


@dataclass
class _KnowledgeBase:
    countries: list[dict]
    cities: list[dict]
    people: list[dict]
    orgs: list[dict]


def _make_knowledge_base(seed: int, n_countries=8, n_cities=40, n_people=160, n_orgs=40) -> _KnowledgeBase:
    rng = random.Random(seed)
    names = _NameMaker(rng)
    countries = [{"name": names.word(3), "currency": names.word(2).lower()} for _ in range(n_countries)]
    cities = []
    for i in range(n_cities):
        country = countries[i % n_countries]
        cities.append({"name": names.word(rng.choice([2, 3])), "country": country["name"],
                       "founded": rng.randrange(820, 1890), "population": rng.randrange(4, 900) * 1000 + rng.randrange(1000),
                       "river": f"{names.word(2)} {_RIVER_WORD}"})
    for i, country in enumerate(countries):
        country["capital"] = cities[i]["name"]  # city i lies in country i
    people = []
    for _ in range(n_people):
        people.append({"name": f"{names.word(2)} {names.word(2)}", "born_in": rng.choice(cities)["name"],
                       "born": rng.randrange(1780, 2001), "profession": rng.choice(_PROFESSIONS)})
    orgs = []
    for i in range(n_orgs):
        founder = people[i]
        orgs.append({"name": f"{names.word(2)} {rng.choice(_ORG_KINDS)}", "founder": founder["name"],
                     "founded": min(founder["born"] + rng.randrange(22, 60), 2024), "hq": rng.choice(cities)["name"]})
    for person in people:
        person["employer"] = rng.choice(orgs)["name"]
    return _KnowledgeBase(countries, cities, people, orgs)


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _passages(kb: _KnowledgeBase, rng: random.Random) -> list[Document]:
    docs = []
    for c in kb.countries:
        docs.append(Document(c["name"], rng.choice([
            f"{c['name']} is a country whose capital is {c['capital']}. Its currency is the {c['currency']}.",
            f"The capital of {c['name']} is {c['capital']}, and people there pay in the {c['currency']}.",
        ])))
    for c in kb.cities:
        docs.append(Document(c["name"], rng.choice([
            f"{c['name']} is a city in {c['country']}, founded in {c['founded']}. The {c['river']} flows through "
            f"{c['name']}, which has a population of {c['population']:,}.",
            f"Founded in {c['founded']}, {c['name']} lies on the {c['river']} in {c['country']}. "
            f"About {c['population']:,} people live in {c['name']}.",
        ])))
    for p in kb.people:
        docs.append(Document(p["name"], rng.choice([
            f"{p['name']} is {_a(p['profession'])} born in {p['born']} in the city of {p['born_in']}. "
            f"{p['name']} works for the {p['employer']}.",
            f"Born in {p['born_in']} in {p['born']}, {p['name']} became {_a(p['profession'])} and "
            f"joined the {p['employer']}.",
        ])))
    for o in kb.orgs:
        docs.append(Document(o["name"], rng.choice([
            f"The {o['name']} was founded in {o['founded']} by {o['founder']}. It is headquartered in {o['hq']}.",
            f"{o['founder']} founded the {o['name']} in {o['founded']}; its headquarters are in {o['hq']}.",
        ])))
    return docs


def _synthetic_items(kb: _KnowledgeBase, rng: random.Random) -> list[QAItem]:
    city = {c["name"]: c for c in kb.cities}
    person = {p["name"]: p for p in kb.people}
    org = {o["name"]: o for o in kb.orgs}
    items: list[tuple[str, str, str, tuple[str, ...]]] = []  # question, answer, hop type, plan

    for p in kb.people:
        n = p["name"]
        items += [(f"In which city was {n} born?", p["born_in"], "1-hop", (n,)),
                  (f"In what year was {n} born?", str(p["born"]), "1-hop", (n,)),
                  (f"What is the profession of {n}?", p["profession"], "1-hop", (n,)),
                  (f"Which organization does {n} work for?", p["employer"], "1-hop", (n,)),
                  (f"In which country was {n} born?", city[p["born_in"]]["country"], "bridge", (n, p["born_in"])),
                  (f"In what year was the organization that {n} works for founded?",
                   str(org[p["employer"]]["founded"]), "bridge", (n, p["employer"])),
                  (f"Which river flows through the city where {n} was born?", city[p["born_in"]]["river"],
                   "bridge", (n, p["born_in"]))]
    for c in kb.cities:
        n = c["name"]
        items += [(f"In which country is the city of {n}?", c["country"], "1-hop", (n,)),
                  (f"Which river flows through {n}?", c["river"], "1-hop", (n,)),
                  (f"In what year was the city of {n} founded?", str(c["founded"]), "1-hop", (n,))]
    for k in kb.countries:
        items.append((f"What is the capital of {k['name']}?", k["capital"], "1-hop", (k["name"],)))
        items.append((f"Which river flows through the capital of {k['name']}?", city[k["capital"]]["river"],
                      "bridge", (k["name"], k["capital"])))
    for o in kb.orgs:
        n, f = o["name"], o["founder"]
        items += [(f"Who founded the {n}?", f, "1-hop", (n,)),
                  (f"In what year was the {n} founded?", str(o["founded"]), "1-hop", (n,)),
                  (f"In which city is the {n} headquartered?", o["hq"], "1-hop", (n,)),
                  (f"In which city was the founder of the {n} born?", person[f]["born_in"], "bridge", (n, f)),
                  (f"In which country is the {n} headquartered?", city[o["hq"]]["country"], "bridge", (n, o["hq"])),
                  (f"What is the profession of the founder of the {n}?", person[f]["profession"], "bridge", (n, f))]
    for _ in range(400):
        a, b = rng.sample(kb.people, 2)
        if a["born"] != b["born"]:
            first = a if a["born"] < b["born"] else b
            items.append((f"Who was born first, {a['name']} or {b['name']}?", first["name"], "comparison",
                          (a["name"], b["name"])))
    for _ in range(150):
        a, b = rng.sample(kb.cities, 2)
        bigger = a if a["population"] > b["population"] else b
        items.append((f"Which city has more inhabitants, {a['name']} or {b['name']}?", bigger["name"],
                      "comparison", (a["name"], b["name"])))
    for _ in range(150):
        a, b = rng.sample(kb.orgs, 2)
        if a["founded"] != b["founded"]:
            older = a if a["founded"] < b["founded"] else b
            items.append((f"Which was founded earlier, the {a['name']} or the {b['name']}?", older["name"],
                          "comparison", (a["name"], b["name"])))
    unique = list(dict.fromkeys(items))
    return [QAItem(q, (a,), "synthetic", hop, f"synthetic-{i}", plan, len(plan))
            for i, (q, a, hop, plan) in enumerate(unique)]


@lru_cache(maxsize=4)
def build_synthetic(seed: int = SYNTHETIC_SEED, test_fraction: float = 0.15) -> QADataset:
    """The fictional multi-hop set: ~360 passages, ~2,300 questions; same seed, same set."""
    rng = random.Random(seed)
    kb = _make_knowledge_base(seed)
    corpus = Corpus(f"synthetic-{seed}", tuple(_passages(kb, rng)))
    items = _synthetic_items(kb, rng)
    rng.shuffle(items)
    n_test = int(len(items) * test_fraction)
    return QADataset("synthetic", corpus, {"train": tuple(items[n_test:]), "test": tuple(items[:n_test])})


def build_synthetic_1hop() -> QADataset:
    """The synthetic set restricted to single lookups: the easiest level, for tiny policies."""
    full = build_synthetic()
    return QADataset("synthetic-1hop", full.corpus, {
        split: tuple(it for it in items if it.task_type == "1-hop") for split, items in full.splits.items()})


# -- FanOutQA sub-questions over the shipped Wikipedia summaries ----------------------------
@lru_cache(maxsize=1)
def build_fanoutqa(test_fraction: float = 0.3) -> QADataset:
    """FanOutQA dev sub-questions with one scalar answer that the cited article's summary states.

    FanOutQA decomposes each question into single-hop sub-questions, each citing a Wikipedia
    article. A sub-question survives when that article is in the corpus and its lead summary
    contains the normalized answer; a sub-question asked again under another parent is kept
    once. Splits follow the parent question, so sibling sub-questions never straddle train and test.
    """
    corpus = load_wiki_summaries()
    with open(package_file("fanoutqa", "data/fanout-final-dev.json"), encoding="utf-8") as f:
        questions = json.load(f)
    splits: dict[str, list[QAItem]] = {"train": [], "test": []}
    seen: set[str] = set()

    def walk(node, root_id):
        for sub in node.get("decomposition") or []:
            walk(sub, root_id)
            answer = sub.get("answer")
            if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
                continue
            answer, title = str(answer).strip(), (sub.get("evidence") or {}).get("title")
            doc_id = corpus.title_index.get(title)
            if not answer or doc_id is None or not contains_answer(corpus[doc_id].text, [answer]):
                continue
            if normalize_answer(sub["question"]) in seen:  # the same sub-question recurs under other parents
                continue
            seen.add(normalize_answer(sub["question"]))
            split = "test" if _stable_fraction(root_id) < test_fraction else "train"
            splits[split].append(QAItem(sub["question"].strip(), (answer,), "fanoutqa", "fanoutqa",
                                        f"fanoutqa-{sub['id']}", (sub["question"].strip(), title)))

    for question in questions:
        walk(question, question["id"])
    return QADataset("fanoutqa", corpus, {k: tuple(v) for k, v in splits.items()})


# -- official Search-R1 data, for users who have it -----------------------------------------
SEARCH_R1_TEST_SOURCES = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")


def _answers_of(row: dict) -> list[str] | None:
    for key in ("golden_answers", "answers", "answer"):
        value = row.get(key)
        if value is not None:
            break
    else:
        target = ((row.get("reward_model") or {}).get("ground_truth") or {}).get("target")
        value = target
    if isinstance(value, str):
        value = [value]
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, list) or not value or not all(isinstance(v, (str, int, float)) for v in value):
        return None
    return [str(v) for v in value]


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        from opid_envs.core import require

        parquet = require("pyarrow.parquet", "searchr1")
        try:
            return parquet.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ValueError(f"{path}: not a readable parquet file ({exc})") from None
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of questions")
        return data
    return [row for _, row in iter_jsonl(path)]


def load_searchr1_questions(path: str | os.PathLike, data_source: str | None = None) -> tuple[QAItem, ...]:
    """Questions in Search-R1's formats: its parquet files, or FlashRAG JSONL (`question`, `golden_answers`).

    `data_source` comes from each row (Search-R1's parquet carries it), else from the argument, else
    from the file name (`nq.jsonl` -> "nq").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file not found: {path}")
    if path.suffix not in (".parquet", ".jsonl", ".json"):
        raise ValueError(f"{path}: expected a .parquet, .jsonl or .json file")
    items = []
    for i, row in enumerate(_read_rows(path)):
        where = f"{path} row {i}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where}: missing a non-empty 'question'")
        answers = _answers_of(row)
        if answers is None:
            raise ValueError(f"{where}: missing gold answers ('golden_answers' or reward_model.ground_truth.target)")
        source = str(row.get("data_source") or data_source or path.stem.split("_")[0])  # nq_test.jsonl -> nq
        question = question.strip()
        items.append(QAItem(question, tuple(answers), source, source, f"{source}-{row.get('id', i)}", (question,)))
    if not items:
        raise ValueError(f"{path}: no questions")
    return tuple(items)


def searchr1_test_files(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """The seven evaluation sources in a FlashRAG-style folder (`<root>/<source>/test.jsonl`, or
    `dev.jsonl` where the source has no public test answers), as (path, data_source) pairs."""
    root, found = Path(root), []
    for source in SEARCH_R1_TEST_SOURCES:
        for split in ("test", "dev"):
            if (root / source / f"{split}.jsonl").is_file():
                found.append((root / source / f"{split}.jsonl", source))
                break
    if not found:
        raise FileNotFoundError(f"none of {list(SEARCH_R1_TEST_SOURCES)} found as <source>/test.jsonl under {root}")
    return found


def load_searchr1(corpus_path: str | os.PathLike, train_files=(), test_files=(), corpus_limit: int | None = None) -> QADataset:
    """A dataset from the official files: a wiki-18 style JSONL corpus plus train / test question
    files, each a path or a (path, data_source) pair (e.g. from `searchr1_test_files`)."""
    corpus = load_jsonl_corpus(corpus_path, limit=corpus_limit)

    def load(entry):
        path, source = entry if isinstance(entry, tuple) else (entry, None)
        return load_searchr1_questions(path, data_source=source)

    splits = {split: tuple(it for entry in files for it in load(entry))
              for split, files in (("train", train_files), ("test", test_files))}
    if not any(splits.values()):
        raise ValueError("give at least one train or test question file")
    return QADataset("search-r1", corpus, splits)


DATASETS = {"synthetic": build_synthetic, "synthetic-1hop": build_synthetic_1hop, "fanoutqa": build_fanoutqa}


def load_dataset(name: str) -> QADataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)} or pass a QADataset")
    return DATASETS[name]()
