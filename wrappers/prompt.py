"""What the model sees: the task, a window of recent (observation, action) pairs, the current
observation, the admissible actions, and the answer-format instruction.

The wrapper's observation *is* this prompt (plain text; chat templates belong to the policy).
The whole episode's history stays on the wrapper (`.history`), and the pieces of the latest
prompt on `.context`, so a trainer can re-render the same prompt with skills injected without
anything heavy travelling through `info`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym

from opid_envs.core import clean_text
from wrappers.parsing import ACTION_FORMAT, TagFormat
from wrappers.skills import inject_skills


@dataclass(frozen=True)
class PromptContext:
    """The pieces one prompt is rendered from."""

    task: str
    history: tuple[tuple[str, str], ...]
    observation: str
    admissible_actions: tuple[str, ...] | None
    step: int


@dataclass(frozen=True)
class PromptTemplate:
    history_k: int = 2
    max_observation_chars: int = 2000
    max_admissible: int = 50
    intro: str = "You are an agent acting in a text environment."
    task_line: str = "Your task is to: {task}"
    history_line: str = "Observation: {observation}\nAction: {action}"
    current_line: str = "Current observation: {observation}"
    admissible_line: str = "Admissible actions: {actions}"
    instruction: str = ACTION_FORMAT.instruction

    def _clip(self, text: str) -> str:
        n = self.max_observation_chars
        return text if len(text) <= n else text[: n - 3] + "..."

    def render(self, ctx: PromptContext, episode_skill: str | None = None, step_skill: str | None = None) -> str:
        task_line = self.task_line.format(task=ctx.task)
        parts = [self.intro, task_line]
        if ctx.history:
            parts.append(f"Your last {len(ctx.history)} steps:")
            parts += [self.history_line.format(observation=self._clip(o), action=a) for o, a in ctx.history]
        parts.append(self.current_line.format(observation=self._clip(ctx.observation)))
        if ctx.admissible_actions:
            shown = ctx.admissible_actions[: self.max_admissible]
            parts.append(self.admissible_line.format(actions=", ".join(shown)))
        parts.append(self.instruction)
        prompt = "\n".join(parts)
        return inject_skills(prompt, task_line, self.instruction, episode_skill, step_skill)


class AgentPrompt(gym.Wrapper):
    """Turns raw observations into prompts. Put it outside `ParseResponse`.

    `history` holds every (observation, action) pair of the episode; the action is the parsed
    one, or the raw response (clipped) when the response was format-invalid.
    """

    def __init__(self, env: gym.Env, template: PromptTemplate | None = None):
        super().__init__(env)
        self.template = template or PromptTemplate()
        self.history: list[tuple[str, str]] = []
        self.context: PromptContext | None = None
        self._observation = ""
        self._task = ""

    def _render(self, observation: str, info: dict) -> str:
        self._observation = observation
        actions = info.get("admissible_actions")
        k = self.template.history_k
        self.context = PromptContext(
            task=self._task,
            history=tuple(self.history[-k:]) if k > 0 else (),
            observation=observation,
            admissible_actions=tuple(actions) if actions else None,
            step=len(self.history),
        )
        return self.template.render(self.context)

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self.history = []
        self._task = info.get("task", "")
        return self._render(observation, info), info

    def step(self, response):
        observation, reward, terminated, truncated, info = self.env.step(response)
        action = info.get("action")
        if action is None:
            action = clean_text(response[:200]) if isinstance(response, str) else repr(response)[:200]
        self.history.append((self._observation, action))
        return self._render(observation, info), reward, terminated, truncated, info


@dataclass(frozen=True)
class AgentConfig:
    """The agent interface of one environment id: prompt template and answer format."""

    template: PromptTemplate = field(default_factory=PromptTemplate)
    response_format: TagFormat = ACTION_FORMAT
