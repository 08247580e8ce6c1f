"""Lenient parsing of analyzer replies: what LLMs really send back."""

import pytest

from opid_train.analyzers.base import AnalysisError, build_messages, loads_lenient, parse_analysis
from tests.train.test_opid_advantages import make_trajectory

GOOD = '{"episode_summary": "won", "episode_skill": "go right", "step_skills": {"1": "open the door"}}'


@pytest.mark.parametrize("reply", [
    GOOD,
    f"```json\n{GOOD}\n```",
    f"Here is my analysis:\n```\n{GOOD}\n```\nHope it helps!",
    f"Sure! {GOOD} Let me know if you need more.",
    '{"episode_summary": "won", "episode_skill": "go right", "step_skills": {"1": "open the door",},}',
    "{'episode_summary': 'won', 'episode_skill': 'go right', 'step_skills': {'1': 'open the door'}}",
    "{'episode_summary': 'won', 'episode_skill': 'go right', 'step_skills': {1: 'open the door',},}",
    '{"episode_summary": "won", "episode_skill": "go right", "step_skills": {"1": "open the door"}, "confident": true}',
])
def test_malformed_but_readable_replies_parse(reply):
    a = parse_analysis(reply, num_steps=3, max_step_skills=5)
    assert (a.episode_summary, a.episode_skill, a.step_skills) == ("won", "go right", {1: "open the door"})


def test_braces_and_quotes_inside_strings_do_not_confuse_the_scanner():
    reply = 'prefix {"episode_summary": "it said \\"}\\" twice", "episode_skill": "use {x}", "step_skills": {}} suffix {'
    a = parse_analysis(reply, 3, 5)
    assert a.episode_summary == 'it said "}" twice' and a.episode_skill == "use {x}"


@pytest.mark.parametrize("reply, message", [
    ("", "empty"),
    ("   \n", "empty"),
    ("I cannot analyse this episode.", "no JSON object"),
    ('{"episode_summary": "won", "episode_skill": "go', "not closed"),
    ('{"episode_summary": "won" "episode_skill": "x"}', "invalid JSON"),
    ('{"summary": "won", "skill": "go right", "steps": {}}', "missing"),
    ('{"episode_summary": "won", "episode_skill": "   ", "step_skills": {}}', "empty"),
    ('{"episode_summary": "won", "episode_skill": "x", "step_skills": ["open the door"]}', "step_skills"),
    ('["episode_summary", "episode_skill"]', "no JSON object"),
])
def test_unusable_replies_raise_a_message_for_the_llm(reply, message):
    with pytest.raises(AnalysisError, match=message):
        parse_analysis(reply, 3, 5)


def test_bad_and_out_of_range_step_keys_are_dropped_and_k_is_enforced():
    reply = ('{"episode_summary": "s", "episode_skill": "e", "step_skills": {"step 2": "a", "-1": "b", "3": "c", '
             '"7": "d", "0": "e", "1": "", "2": 5, " 2 ": "f", "x": "g"}}')
    assert parse_analysis(reply, num_steps=4, max_step_skills=5).step_skills == {3: "c", 0: "e", 2: "f"}
    assert parse_analysis(reply, num_steps=4, max_step_skills=2).step_skills == {3: "c", 0: "e"}


def test_missing_step_skills_means_none():
    assert parse_analysis('{"episode_summary": "s", "episode_skill": "e"}', 2, 5).step_skills == {}


def test_json_words_map_inside_python_style_replies():
    assert loads_lenient("{'a': true, 'b': null, 'c': [false,],}") == {"a": True, "b": None, "c": [False]}


def test_prompt_shows_every_step_with_return_to_go_and_k():
    traj = make_trajectory(0, 0, 3, True)
    traj.steps[1].action_valid = False
    system, user = build_messages(traj, max_step_skills=2, gamma=0.5, max_chars=20)
    assert "at most 2" in system["content"]
    text = user["content"]
    assert "Outcome: SUCCESS" in text and "Step 1: [invalid action]" in text
    assert "return-to-go: 0.250" in text and "return-to-go: 1.000" in text  # gamma^2, then the final reward
