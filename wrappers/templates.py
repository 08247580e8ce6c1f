"""Named prompt templates: the OPID reference's per env, and our compact ones for the tiny policy.

    prompt_template("alfworld-reference")        # the reference's ALFWorld prompt, 5 steps of history
    prompt_template("webshop-compact", 3)        # ours, 3 steps of history

`*-reference` render the reference's templates (jinyangwu/OPID, verl-agent's env managers) from the
same `PromptContext` as ours:
- the first step uses the template without history, later steps the one with the step count and
  the last k steps;
- history: ALFWorld and WebShop `[Observation n: '...', Action n: '...']` (the observation each
  action was taken in), joined by newlines; search `Step n:<search>q</search> <information>...`
  (each action with the result it got), lines separated by blank lines;
- ALFWorld's admissible actions quoted and joined by newline + space, without `help`; WebShop's
  page parts after the instruction quoted (`'Back to Search' [SEP] ...`) and its actions as
  `'click[...]',` lines;
- skills go where the reference's teacher puts them: a "**Episode-Level Skill**" section after the
  task line and a "**Critical-Step Skill**" section before "Now it's your turn", each body in
  brackets, sections separated by blank lines (the prompt is stripped first, as there).
What the wrappers hand over still differs from the reference in two places: the action shown for a
format-invalid response (its first 200 characters; the reference shows its last 20-30, lower-cased,
or nothing for search) and the observation after one (ours prefixes the parse error).

`*-compact` are our `PromptTemplate`s: a short intro, plain "Observation: / Action:" history lines,
observations clipped to 2,000 characters: fewer tokens, which the tiny from-scratch policy needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from wrappers.parsing import SEARCH_FORMAT
from wrappers.prompt import PromptContext, PromptTemplate

# -- the reference's templates --------------------------------------------------------------------
_THINK_ACTION = (
    "You should first reason step-by-step about the current situation. This reasoning process MUST be "
    "enclosed within <think> </think> tags.{space}\n"
    "Once you've finished your reasoning, you should choose an admissible action for current step and "
    "present it within <action> </action> tags.\n")
_TURN = "Now it's your turn to"

ALFWORLD_FIRST = (
    "\nYou are an expert agent operating in the ALFRED Embodied Environment.\n"
    "Your current observation is: {observation}\n"
    "Your admissible actions of the current situation are: [{actions}].\n\n"
    "Now it's your turn to take an action.\n" + _THINK_ACTION.replace("{space}", " "))
ALFWORLD_LATER = (
    "\nYou are an expert agent operating in the ALFRED Embodied Environment. Your task is to: {task}\n"
    "Prior to this step, you have already taken {step_count} step(s). Below are the most recent {k} "
    "observations and the corresponding actions you took: {history}\n"
    "You are now at step {current_step} and your current observation is: {observation}\n"
    "Your admissible actions of the current situation are: [{actions}].\n\n"
    "Now it's your turn to take an action.\n" + _THINK_ACTION.replace("{space}", ""))

_SHOP_INTRO = "\nYou are an expert autonomous agent operating in the WebShop e\u2011commerce environment."
_SHOP_TURN = (
    "Now it's your turn to take one action for the current step.\n"
    "You should first reason step-by-step about the current situation, then think carefully which "
    "admissible action best advances the shopping goal. This reasoning process MUST be enclosed within "
    "<think> </think> tags.{space}\n"
    "Once you've finished your reasoning, you should choose an admissible action for current step and "
    "present it within <action> </action> tags.\n")
WEBSHOP_FIRST = (
    _SHOP_INTRO + " \nYour task is to: {task}.\n"
    "Your current observation is: {observation}.\n"
    "Your admissible actions of the current situation are: \n[\n{actions}\n].\n\n"
    + _SHOP_TURN.replace("{space}", " "))
WEBSHOP_LATER = (
    _SHOP_INTRO + "\nYour task is to: {task}.\n"
    "Prior to this step, you have already taken {step_count} step(s). Below are the most recent {k} "
    "observations and the corresponding actions you took: {history}\n"
    "You are now at step {current_step} and your current observation is: {observation}.\n"
    "Your admissible actions of the current situation are:\n[\n{actions}\n].\n\n"
    + _SHOP_TURN.replace("{space}", ""))
WEBSHOP_MAX_CHARS = 20_000  # longer prompts fall back to the first-step template, as the reference

_SEARCH_TURN = (
    "Now it's your turn to respond for the current step.\n"
    "You should first conduct reasoning process. This process MUST be enclosed within <think> </think> tags. \n"
    "After completing your reasoning, choose only one of the following actions (do not perform both):\n"
    "(1) If you find you lack some knowledge, you can call a search engine to get more external information "
    "using format: <search> your query </search>.\n"
    "(2) If you have enough knowledge to answer the question confidently, provide your final answer within "
    "<answer> </answer> tags, without detailed illustrations. For example, <answer>Beijing</answer>.\n")
SEARCH_FIRST = (
    "\nYou are an expert agent tasked with answering the given question step-by-step.\n"
    "Your question: {task}\n\n" + _SEARCH_TURN)
SEARCH_LATER = (
    "\nYou are an expert agent tasked with answering the given question step-by-step.\n"
    "Your question: {task}\n\n"
    "Prior to this step, you have already taken {step_count} step(s). Below is the interaction history "
    "where <search> </search> wrapped your past search queries and <information> </information> wrapped "
    "the corresponding search results returned by the external search engine. History:\n"
    "{history}\n\n" + _SEARCH_TURN)

_TASK_LINE = re.compile(r"^.*\b(?:Your task is to:|Your current task is:|Your task is:|Your question:)\s*.*(?:\n|$)",
                        flags=re.MULTILINE)
_TAGGED = re.compile(r"<(search|answer)>\s*(.*?)\s*</\1>", flags=re.S)


def _tight(match: re.Match) -> str:
    """`<search> q </search>` as the reference's projection writes it: `<search>q</search>`."""
    return f"<{match.group(1)}>{match.group(2)}</{match.group(1)}>"


def _section(title: str, instruction: str, body: str | None) -> str:
    body = (body or "").strip()
    return f"**{title}**\n{instruction}:\n[{body}]" if body else ""


def _insert(prompt: str, at: int, block: str) -> str:
    before, after = prompt[:at].rstrip(), prompt[at:].lstrip()
    return "\n\n".join(p for p in (before, block, after) if p)


def inject_reference_skills(prompt: str, episode_skill: str | None = None, step_skill: str | None = None) -> str:
    """The reference teacher's prompt: the episode skill after the task line (else before
    "Now it's your turn"), the step skill before "Now it's your turn" (else at the end)."""
    if not (episode_skill or "").strip() and not (step_skill or "").strip():
        return prompt
    prompt = prompt.strip()
    episode = _section("Episode-Level Skill",
                       "Refer to this episode-level skill when deciding what action to take in the current episode",
                       episode_skill)
    step = _section("Critical-Step Skill", "Use this current-step skill for this decision only", step_skill)
    for block, after_task in ((episode, True), (step, False)):
        if not block:
            continue
        task = _TASK_LINE.search(prompt) if after_task else None
        turn = prompt.find(_TURN)
        at = task.end() if task else (turn if turn >= 0 else len(prompt))
        prompt = _insert(prompt, at, block)
    return prompt


def _numbered(ctx: PromptContext) -> list[tuple[int, str, str]]:
    """(step number, observation, action) of the history window; steps count from 1."""
    first = ctx.step - len(ctx.history) + 1
    return [(first + j, obs, act) for j, (obs, act) in enumerate(ctx.history)]


def webshop_page(observation: str, task: str) -> str:
    """The reference's WebShop observation: the page's parts after the instruction, each quoted."""
    parts = observation.split(" [SEP] ")
    if task not in parts:
        return observation
    return " [SEP] ".join(f"'{p}'" for p in parts[parts.index(task) + 1:])


@dataclass(frozen=True)
class ReferenceTemplate:
    """One of the reference's templates; `env` is alfworld, webshop or searchqa."""

    env: str
    history_k: int

    def render(self, ctx: PromptContext, episode_skill: str | None = None, step_skill: str | None = None) -> str:
        render = {"alfworld": self._alfworld, "webshop": self._webshop, "searchqa": self._search}[self.env]
        return inject_reference_skills(render(ctx), episode_skill, step_skill)

    def _alfworld(self, ctx: PromptContext) -> str:
        actions = "\n ".join(f"'{a}'" for a in ctx.admissible_actions or () if a != "help")
        if ctx.step == 0 or not ctx.history:
            return ALFWORLD_FIRST.format(observation=ctx.observation, actions=actions)
        history = "\n".join(f"[Observation {n}: '{o}', Action {n}: '{a}']" for n, o, a in _numbered(ctx))
        return ALFWORLD_LATER.format(task=ctx.task, step_count=ctx.step, k=len(ctx.history), history=history,
                                     current_step=ctx.step + 1, observation=ctx.observation, actions=actions)

    def _webshop(self, ctx: PromptContext) -> str:
        actions = "\n".join(f"'{a}'," for a in ctx.admissible_actions or ())
        observation = webshop_page(ctx.observation, ctx.task)
        first = WEBSHOP_FIRST.format(task=ctx.task, observation=observation, actions=actions)
        if ctx.step == 0 or not ctx.history:
            return first
        history = "\n".join(f"[Observation {n}: '{webshop_page(o, ctx.task)}', Action {n}: '{a}']"
                            for n, o, a in _numbered(ctx))
        prompt = WEBSHOP_LATER.format(task=ctx.task, step_count=ctx.step, k=len(ctx.history), history=history,
                                      current_step=ctx.step + 1, observation=observation, actions=actions)
        return prompt if len(prompt) <= WEBSHOP_MAX_CHARS else first

    def _search(self, ctx: PromptContext) -> str:
        if ctx.step == 0 or not ctx.history:
            return SEARCH_FIRST.format(task=ctx.task)
        numbered = _numbered(ctx)
        results = [o for _, o, _ in numbered[1:]] + [ctx.observation]  # what each action got back
        lines = [f"Step {n}:{_TAGGED.sub(_tight, a)} {r}\n" for (n, _, a), r in zip(numbered, results)]
        return SEARCH_LATER.format(task=ctx.task, step_count=ctx.step, history="\n".join(lines))


# -- ours ----------------------------------------------------------------------------------------
COMPACT_TEMPLATES: dict[str, PromptTemplate] = {
    "alfworld-compact": PromptTemplate(
        history_k=2, intro="You are an expert agent operating in the ALFRED embodied household."),
    "webshop-compact": PromptTemplate(history_k=2, intro="You are an expert agent shopping in an online store."),
    "searchqa-compact": PromptTemplate(
        history_k=4,
        intro="Answer the question. You may search a knowledge base.",
        task_line="Question: {task}",
        history_line="Information: {observation}\nYou: {action}",
        current_line="Latest information: {observation}",
        instruction=SEARCH_FORMAT.instruction,
    ),
    "generic-compact": PromptTemplate(),
}
REFERENCE_TEMPLATES: dict[str, ReferenceTemplate] = {
    "alfworld-reference": ReferenceTemplate("alfworld", history_k=5),
    "webshop-reference": ReferenceTemplate("webshop", history_k=2),
    "searchqa-reference": ReferenceTemplate("searchqa", history_k=4),
}
TEMPLATES = {**REFERENCE_TEMPLATES, **COMPACT_TEMPLATES}


def prompt_template(name: str, history_k: int | None = None) -> PromptTemplate | ReferenceTemplate:
    """The template called `name`, with `history_k` steps of history when given."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; choose one of {sorted(TEMPLATES)}")
    if history_k is not None and history_k < 0:
        raise ValueError(f"history_k must be >= 0, got {history_k}")
    template = TEMPLATES[name]
    return template if history_k is None else replace(template, history_k=history_k)
