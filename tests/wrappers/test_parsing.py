import gymnasium as gym
import pytest

from wrappers import ACTION_FORMAT, SEARCH_FORMAT, make_agent_env
from wrappers.parsing import MAX_RESPONSE_CHARS


@pytest.mark.parametrize(
    "response, action",
    [
        ("<think>key first</think><action>take key</action>", "take key"),
        ("<action>  go\n right </action>", "go right"),
        ("<ACTION>go left</ACTION>", "go left"),
        ("<action>prenez la clé 🔑</action>", "prenez la clé 🔑"),
    ],
)
def test_action_format_extracts_the_action(response, action):
    assert ACTION_FORMAT.parse(response).action == action


@pytest.mark.parametrize(
    "response, reason",
    [
        (None, "must be text"),
        (b"<action>go</action>", "bytes"),
        ("x" * 1_000_000, "too long"),
        ("go right", "no <action>...</action> block"),
        ("<action>go right", "unbalanced"),
        ("<action>a</action><action>b</action>", "exactly one"),
        ("<action>go <action>left</action></action>", "unbalanced|nested|exactly one"),
        ("<action><think>x</think></action>", "nested"),
        ("<action>   </action>", "empty"),
        ("\udcff\x00<act", "no <action>"),
    ],
)
def test_bad_responses_are_invalid_with_a_reason(response, reason):
    parsed = ACTION_FORMAT.parse(response)
    assert not parsed.valid and parsed.action is None
    assert any(r in parsed.error for r in reason.split("|"))


@pytest.mark.parametrize("response", [
    "<action>go right</action><action>go right</action>",  # the same action twice
    "<think>x</think><action>take key</action>\n<think>y</think><action>go left</action>",
    "<action>take key</action> and then <ACTION>open door</ACTION>",
    "<action>a</action><action>b</action><action>c</action>",
])
def test_doubled_action_blocks_are_rejected(response):
    parsed = ACTION_FORMAT.parse(response)
    assert parsed.action is None and "expected exactly one <action>...</action> block, found" in parsed.error


def test_doubled_action_blocks_do_not_reach_the_env(toy_id):
    env = make_agent_env(toy_id)
    _, info = env.reset(options={"task_id": 0})  # the key lies in cell 0
    _, _, _, _, info = env.step("<action>take key</action><action>take key</action>")
    assert info["format_valid"] is False and info["action"] is None and info["action_valid"] is False
    assert "take key" in info["admissible_actions"]  # the key was not taken


def test_search_format_keeps_its_tag_and_needs_exactly_one_block():
    assert SEARCH_FORMAT.parse("<think>t</think><search> capital of France </search>").action == (
        "<search> capital of France </search>")
    assert SEARCH_FORMAT.parse("<answer>Paris</answer>").action == "<answer> Paris </answer>"
    assert not SEARCH_FORMAT.parse("<search>a</search><answer>b</answer>").valid


@pytest.mark.parametrize("response", [None, b"bytes", "x" * 1_000_000, "\u202e\u0000odd", "<action></action>"])
def test_invalid_response_steps_as_a_noop_with_a_clear_message(toy_id, response):
    env = make_agent_env(toy_id)
    env.reset(seed=0)
    prompt, reward, terminated, truncated, info = env.step(response)
    assert info["format_valid"] is False and info["action_valid"] is False and info["action"] is None
    assert "Invalid response:" in prompt
    assert reward == 0.0 and not terminated


def test_valid_response_reaches_the_env(toy_id):
    env = make_agent_env(toy_id)
    _, info = env.reset(options={"task_id": 0})
    _, _, _, _, info = env.step("<think>key is here</think><action>take key</action>")
    assert info["format_valid"] and info["action_valid"] and info["action"] == "take key"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("fmt", [ACTION_FORMAT, SEARCH_FORMAT], ids=lambda f: f.name)
def test_parsing_is_linear_in_the_response_length(fmt):
    """Hang guard: at the 64 KB bound a backreference regex took 10-12 s on `<think>` * 9000; now milliseconds."""
    from wrappers.parsing import MAX_RESPONSE_CHARS

    n = MAX_RESPONSE_CHARS
    for response in ("<think>" * (n // 7), "</action>" * (n // 18) + "<action>" * (n // 18),
                     "</search>" * (n // 18) + "<search>" * (n // 18), "<think>x</think>" * (n // 16)):
        parsed = fmt.parse(response)
        assert not parsed.valid and "block found" in parsed.error


@pytest.mark.parametrize("fmt, response, error", [
    (ACTION_FORMAT, b"<action>go</action>", "the response is bytes, not text"),
    (ACTION_FORMAT, 42, "the response must be text, got int"),
    (ACTION_FORMAT, "x" * (MAX_RESPONSE_CHARS + 1), f"the response is too long ({MAX_RESPONSE_CHARS + 1} characters)"),
    (ACTION_FORMAT, "<think>go</think> go right", "no <action>...</action> block found"),
    (SEARCH_FORMAT, "Paris", "no <search>...</search> or <answer>...</answer> block found"),
    (SEARCH_FORMAT, "<search>a</search><answer>b</answer>",
     "expected exactly one <search>...</search> or <answer>...</answer> block, found 2"),
    (ACTION_FORMAT, "<action>go <THINK>x</THINK></action>", "tags nested inside <action>"),
    (ACTION_FORMAT, "<action> \n </action>", "the <action> block is empty"),
    (ACTION_FORMAT, "<action>go</Action><action>", "unbalanced <action> tags"),
])
def test_each_bad_response_gets_its_exact_reason(fmt, response, error):
    parsed = fmt.parse(response)
    assert (parsed.action, parsed.error, parsed.valid) == (None, error, False)


def test_the_longest_allowed_response_is_parsed():
    response = "<action>go right</action>".ljust(MAX_RESPONSE_CHARS)
    assert ACTION_FORMAT.parse(response).action == "go right"


@pytest.mark.parametrize("response, think", [
    ("<think> the key\nis here </think><action>take key</action>", "the key\nis here"),
    ("<THINK>upper</THINK><action>x</action>", "upper"),
    ("<think>a</think><think>b</think><action>x</action>", None),  # two thoughts: none kept
    ("<action>x</action>", None),
    ("<think>why</think>", "why"),  # invalid answers keep the thought for the record
    ("<think>why</think><action>a</action><action>b</action>", "why"),
    ("<think>why</think><action>", "why"),
    ("<think>why</think><action><b>x</b></action>", "why"),
    ("<think>why</think><action> </action>", "why"),
])
def test_the_thought_is_kept(response, think):
    assert ACTION_FORMAT.parse(response).think == think


def test_wrapper_reports_the_reason_and_steps_the_env_with_the_empty_action(toy_id):
    env = make_agent_env(toy_id)
    env.reset(options={"task_id": 0})
    prompt, _, _, _, info = env.step("go right")
    assert info["format_error"] == "no <action>...</action> block found"
    assert "Invalid action: the action is empty" in prompt  # the env saw "", as the module documents
    _, _, _, _, info = env.step("<action>go right</action>")
    assert info["format_error"] is None and info["format_valid"] is True


def test_wrapper_takes_a_format_by_name(toy_id):
    from wrappers.parsing import ParseResponse

    assert ParseResponse(gym.make(toy_id), "search").response_format is SEARCH_FORMAT
    assert ParseResponse(gym.make(toy_id)).response_format is ACTION_FORMAT
