"""The reference's prompt templates, written out by hand from its documented layout."""

import pytest

import opid_envs  # noqa: F401  (registers the OPID env ids)

from wrappers import PromptContext, PromptTemplate, make_agent_env
from wrappers.templates import COMPACT_TEMPLATES, inject_reference_skills, prompt_template, webshop_page

THINK = ("You should first reason step-by-step about the current situation. This reasoning process MUST be "
         "enclosed within <think> </think> tags.")
ACT = ("Once you've finished your reasoning, you should choose an admissible action for current step and "
       "present it within <action> </action> tags.\n")


def ctx(**kw):
    base = dict(task="put a mug in the sink.", history=(), observation="You see a mug 1.",
                admissible_actions=("go to sink 1", "take mug 1", "help"), step=0)
    return PromptContext(**{**base, **kw})


def test_alfworld_first_step():
    want = ("\nYou are an expert agent operating in the ALFRED Embodied Environment.\n"
            "Your current observation is: You see a mug 1.\n"
            "Your admissible actions of the current situation are: ['go to sink 1'\n 'take mug 1'].\n\n"
            "Now it's your turn to take an action.\n" + THINK + " \n" + ACT)
    assert prompt_template("alfworld-reference").render(ctx()) == want


def test_alfworld_later_step_numbers_the_window():
    c = ctx(history=(("You arrive at cabinet 1.", "go to sink 1"), ("You arrive at sink 1.", "take mug 1")), step=3)
    want = ("\nYou are an expert agent operating in the ALFRED Embodied Environment. Your task is to: "
            "put a mug in the sink.\n"
            "Prior to this step, you have already taken 3 step(s). Below are the most recent 2 observations and "
            "the corresponding actions you took: [Observation 2: 'You arrive at cabinet 1.', Action 2: 'go to sink 1']\n"
            "[Observation 3: 'You arrive at sink 1.', Action 3: 'take mug 1']\n"
            "You are now at step 4 and your current observation is: You see a mug 1.\n"
            "Your admissible actions of the current situation are: ['go to sink 1'\n 'take mug 1'].\n\n"
            "Now it's your turn to take an action.\n" + THINK + "\n" + ACT)
    assert prompt_template("alfworld-reference").render(c) == want


def test_webshop_page_parts_and_actions():
    task = "i need a red lipstick"
    page = f"WebShop [SEP] Instruction: [SEP] {task} [SEP] Back to Search [SEP] B01 [SEP] Red Lipstick"
    assert webshop_page(page, task) == "'Back to Search' [SEP] 'B01' [SEP] 'Red Lipstick'"
    c = ctx(task=task, observation=page, admissible_actions=("click[back to search]", "click[b01]"),
            history=((f"WebShop [SEP] Instruction: [SEP] {task} [SEP] Search", "search[red lipstick]"),), step=1)
    text = prompt_template("webshop-reference").render(c)
    assert text.startswith("\nYou are an expert autonomous agent operating in the WebShop e\u2011commerce environment.\n"
                           f"Your task is to: {task}.\nPrior to this step, you have already taken 1 step(s).")
    assert "the corresponding actions you took: [Observation 1: ''Search'', Action 1: 'search[red lipstick]']\n" in text
    assert ("You are now at step 2 and your current observation is: 'Back to Search' [SEP] 'B01' [SEP] "
            "'Red Lipstick'.\nYour admissible actions of the current situation are:\n[\n'click[back to search]',\n"
            "'click[b01]',\n].\n\n") in text


def test_search_history_pairs_each_action_with_its_result():
    c = PromptContext(task="Who founded Pouva?", observation="<information>B</information>", admissible_actions=None,
                      history=(("Question: Who founded Pouva?", "<search> pouva </search>"),
                               ("<information>A</information>", "<search> pouva founder </search>")), step=2)
    text = prompt_template("searchqa-reference").render(c)
    assert ("History:\nStep 1:<search>pouva</search> <information>A</information>\n\n"
            "Step 2:<search>pouva founder</search> <information>B</information>\n\n\n"
            "Now it's your turn to respond for the current step.\n") in text
    assert text.startswith("\nYou are an expert agent tasked with answering the given question step-by-step.\n"
                           "Your question: Who founded Pouva?\n\nPrior to this step, you have already taken 2 step(s).")
    first = prompt_template("searchqa-reference").render(PromptContext("Q?", (), "Question: Q?", None, 0))
    assert "History" not in first and first.endswith("For example, <answer>Beijing</answer>.\n")


def test_reference_skill_injection_places_sections_like_the_reference_teacher():
    c = ctx(history=(("You arrive at cabinet 1.", "go to sink 1"),), step=1)
    plain = prompt_template("alfworld-reference").render(c)
    taught = prompt_template("alfworld-reference").render(c, episode_skill="Find the mug first.",
                                                          step_skill="Take the mug now.")
    episode = ("**Episode-Level Skill**\nRefer to this episode-level skill when deciding what action to take in the "
               "current episode:\n[Find the mug first.]")
    step = "**Critical-Step Skill**\nUse this current-step skill for this decision only:\n[Take the mug now.]"
    task_line = "Your task is to: put a mug in the sink.\n"
    head, rest = plain.strip().split(task_line)
    body, turn = rest.split("Now it's your turn to")
    assert taught == f"{head}{task_line.strip()}\n\n{episode}\n\n{body.strip()}\n\n{step}\n\nNow it's your turn to{turn.rstrip()}"
    assert inject_reference_skills(plain) == plain  # no skill: unchanged (not even stripped)
    # the first ALFWorld step has no task line in the template: the one in the observation is used
    first = prompt_template("alfworld-reference").render(ctx(observation="Welcome!\n\nYour task is to: put a mug."),
                                                         episode_skill="s")
    assert "Your task is to: put a mug.\n\n**Episode-Level Skill**" in first


def test_agent_env_takes_a_named_template_and_history():
    env = make_agent_env("OPID/SearchQA-v0", prompt="searchqa-reference", history_k=1)
    prompt, info = env.reset(seed=0, options={"split": "test", "task_id": 0})
    assert prompt.startswith("\nYou are an expert agent tasked") and info["task"] in prompt
    env.step("<think>x</think><search> Pouva Observatory </search>")
    prompt, *_ = env.step("<think>x</think><search> Koupaem Dretuk </search>")
    assert "Step 1:" not in prompt and "Step 2:<search>Koupaem Dretuk</search> <information>Doc 1(Title: " in prompt
    assert isinstance(make_agent_env("OPID/SearchQA-v0").template, PromptTemplate)  # the registered default: ours


def test_named_templates_and_errors():
    assert prompt_template("alfworld-reference").history_k == 5
    assert prompt_template("alfworld-reference", 2).history_k == 2
    assert prompt_template("searchqa-compact") is COMPACT_TEMPLATES["searchqa-compact"]
    with pytest.raises(ValueError, match="unknown prompt template"):
        prompt_template("alfworld")
    with pytest.raises(ValueError, match="history_k"):
        prompt_template("alfworld-reference", -1)
