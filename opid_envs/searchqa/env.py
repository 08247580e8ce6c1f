"""OPID/SearchQA-v0: answer a question by searching a corpus, Search-R1 style.

An action is one tagged block: `<search> query </search>` returns the top documents as
`<information>Doc 1(Title: "T") ...\\nDoc 2(Title: "T2") ...</information>` (Search-R1's text; see
`format_hits` for the OPID reference env's and ours); `<answer> text </answer>` ends the episode
and scores exact match after normalization (F1 is reported in info). A full model response is
accepted too (a `<think>` block and free text around it are ignored), but it must hold exactly one
search or answer block, else the step is invalid and the observation says why. Four turns by
default, as in Search-R1.
"""

from __future__ import annotations

import json
import random
import string

from opid_envs.core import Outcome, Task, TextEnv, tagged_blocks
from opid_envs.searchqa.datasets import QADataset, QAItem, load_dataset
from opid_envs.searchqa.retrieval import MAX_QUERY_CHARS, Hit, Retriever, make_retriever
from opid_envs.searchqa.scoring import contains_answer, exact_match, f1_score, normalize_answer

FORMAT_HINT = "Write exactly one <search> query </search> or <answer> answer </answer>."
_shared_retrievers: dict[tuple[str, str, str], Retriever] = {}


def shared_retriever(backend: str, dataset: QADataset) -> Retriever:
    """One retriever per (backend, corpus) in a process: a group of envs shares an index."""
    key = (backend, dataset.corpus.name, dataset.corpus.fingerprint)
    if key not in _shared_retrievers:
        _shared_retrievers[key] = make_retriever(backend, dataset.corpus)
    return _shared_retrievers[key]


def parse_action(action: str) -> tuple[str | None, str, str | None]:
    """(kind, content, error): kind is 'search' or 'answer', or None with the reason the action is invalid.

    Linear in the action's length (one scan over the tags), so a hostile action costs no more than
    reading it.
    """
    blocks, opens, closes = tagged_blocks(action, ("search", "answer"))
    tags = sum(opens.values()) + sum(closes.values())
    if not tags:
        return None, "", "no <search> or <answer> block found"
    if len(blocks) != 1 or tags != 2:
        if len(blocks) > 1:
            return None, "", f"expected exactly one <search> or <answer> block, found {len(blocks)}"
        return None, "", "unbalanced or nested <search>/<answer> tags"
    kind, content = blocks[0][0], " ".join(blocks[0][1].split())
    if not content:
        return None, "", f"the <{kind}> block is empty"
    return kind, content, None


RESULT_FORMATS = ("searchr1", "verl_agent", "compact")


def format_hits(hits: list[Hit], result_format: str = "searchr1") -> str:
    """The observation after a search, in one of three texts:

    searchr1 (default)  Search-R1's: `<information>Doc 1(Title: "T") text\nDoc 2(Title: "T2") text</information>`
                        (the title is the first line of the document's `"Title"\ntext` contents);
    verl_agent          the OPID reference env's (verl-agent, SkyRL's search tool): the passages as
                        `Doc 1: "T"\ntext\n...` inside a JSON object, `<information>{"result": "..."}</information>`;
    compact             ours: `<information>Doc 1: (Title: T) text\n...</information>`.
    """
    if result_format == "searchr1":
        docs = ""
        for i, h in enumerate(hits, 1):
            title, _, text = h.document.contents.partition("\n")
            docs += f"Doc {i}(Title: {title}) {text}\n"
        return f"<information>{docs.strip()}</information>"
    if result_format == "verl_agent":
        docs = "".join(f"Doc {i}: {h.document.contents.strip()}\n" for i, h in enumerate(hits, 1))
        return f"<information>{json.dumps({'result': docs if hits else 'No search results found.'})}</information>"
    if result_format == "compact":
        if not hits:
            return "<information>No document matches the query.</information>"
        docs = "".join(f"Doc {i}: (Title: {h.document.title}) {h.document.text}\n" for i, h in enumerate(hits, 1))
        return f"<information>{docs}</information>"
    raise ValueError(f"unknown result_format {result_format!r}; choose one of {RESULT_FORMATS}")


class SearchQAEnv(TextEnv):
    """Question answering with a search tool over an embedded corpus.

    dataset: 'synthetic' (default: fictional multi-hop facts), 'synthetic-1hop', 'fanoutqa'
        (real questions over Wikipedia summaries) or a `QADataset` (e.g. `load_searchr1(...)`).
    retriever: 'bm25' (default), 'dense', 'pyserini', a `/retrieve` server URL, or a `Retriever`.
    result_format: 'searchr1' (default), 'verl_agent' (the OPID reference env's JSON) or 'compact'
        (ours); see `format_hits`.
    drop_zero_score_hits: leave out documents that share no term with the query (ours), so a search
        can show fewer than topk; off by default: always topk, as Search-R1's servers.
    """

    splits = ("train", "test")

    def __init__(self, dataset: str | QADataset = "synthetic", retriever: str | Retriever = "bm25", topk: int = 3,
                 split: str | None = None, max_steps: int = 4, render_mode: str | None = None,
                 result_format: str = "searchr1", drop_zero_score_hits: bool = False):
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        if result_format not in RESULT_FORMATS:
            raise ValueError(f"unknown result_format {result_format!r}; choose one of {RESULT_FORMATS}")
        self.result_format, self.drop_zero_score_hits = result_format, bool(drop_zero_score_hits)
        self.dataset = load_dataset(dataset) if isinstance(dataset, str) else dataset
        self.retriever = shared_retriever(retriever, self.dataset) if isinstance(retriever, str) else retriever
        self.topk = topk
        self._item: QAItem | None = None
        self._queries: list[str] = []
        self._seen: list[str] = []

    def num_tasks(self, split: str) -> int:
        return len(self.dataset.splits.get(split, ()))

    def _start(self, split: str, task_id: int) -> Task:
        self._item = self.dataset.split(split)[task_id]
        self._queries, self._seen = [], []
        return Task(observation=f"Question: {self._item.question}", instruction=self._item.question,
                    task_type=self._item.task_type, admissible_actions=None,
                    info={"data_source": self._item.data_source, "em": 0.0, "f1": 0.0, "searches": 0})

    def _act(self, action: str) -> Outcome:
        kind, content, error = parse_action(action)
        if error:
            return Outcome(f"Invalid action: {error}. {FORMAT_HINT}", valid=False)
        if kind == "search":
            hits = self.retriever.search(content[:MAX_QUERY_CHARS], self.topk)
            if self.drop_zero_score_hits:
                hits = [h for h in hits if h.score > 0]
            self._queries.append(content)
            self._seen.extend(h.document.contents for h in hits)
            return Outcome(format_hits(hits, self.result_format), info={"searches": len(self._queries)})
        golds = self._item.answers
        em = exact_match(content, golds)
        return Outcome(f"Your answer: {content}. " + ("Correct." if em else "Incorrect."), done=True, score=em,
                       won=em == 1.0, info={"em": em, "f1": f1_score(content, golds), "answer": content,
                                            "gold_answers": list(golds)})

    # -- helpers for agents -------------------------------------------------------------------
    def expert_action(self) -> str:
        """An oracle's next action: follow the gold search plan, then answer in the words of the retrieved text.

        It searches each hop's query, falls back to further plan queries (then the question) while
        the answer has not appeared, and answers once every hop is searched and the answer was
        seen, or when only one turn is left.
        """
        item = self._item
        if item is None or self._finished:
            raise RuntimeError("expert_action() needs an episode in progress; call reset() first")
        seen = "\n".join(self._seen)
        turns_left = self.max_steps - self._steps
        done_hops = len(self._queries) >= item.hops
        if turns_left <= 1 or (done_hops and contains_answer(seen, item.answers)):
            found = [a for a in item.answers if contains_answer(seen, [a])]
            return f"<answer> {(found or list(item.answers))[0]} </answer>"
        plan = [q for q in item.queries if q not in self._queries] or [item.question]
        return f"<search> {plan[0]} </search>"

    def random_action(self, rng: random.Random) -> str:
        """A random agent: searches with words of the question, or answers a word of what it has read."""
        question = self._item.question if self._item else "question"
        words = [w.strip(string.punctuation) for w in question.split()] or ["question"]
        words = [w for w in words if w] or ["question"]
        if rng.random() < 0.6:
            return f"<search> {' '.join(rng.sample(words, min(len(words), rng.randint(1, 3))))} </search>"
        pool = [w.strip(string.punctuation) for w in " ".join(self._seen).split()] or words
        pool = [w for w in pool if normalize_answer(w)] or words
        return f"<answer> {rng.choice(pool)} </answer>"
