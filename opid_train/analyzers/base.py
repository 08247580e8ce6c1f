"""The analyzer interface: a finished trajectory in, hindsight skills out (OPID, arXiv 2606.26790).

    Analysis = analyzer.analyze(trajectory)
        episode_summary  what happened, in a sentence or two
        episode_skill    success: a reusable workflow; failure: avoidance rules
        step_skills      {step index: one imperative sentence} at <= K critical steps

`None` means the analysis failed: that trajectory simply gets no teacher signal.
The prompt and the lenient parser live here so every LLM backend (API or local) shares them.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import asdict, dataclass, field

from opid_envs.core import clean_text
from opid_train.types import Trajectory

PROMPT_VERSION = "opid-analyzer-v1"  # part of the cache key: change it when the prompt changes


@dataclass
class Analysis:
    episode_summary: str
    episode_skill: str
    step_skills: dict[int, str] = field(default_factory=dict)

    def __post_init__(self):  # text from a model or a file: safe for the cache, a tokenizer and skills.jsonl
        self.episode_summary, self.episode_skill = clean_text(self.episode_summary), clean_text(self.episode_skill)
        self.step_skills = {t: clean_text(s) for t, s in self.step_skills.items()}

    def to_json(self) -> dict:
        return {**asdict(self), "step_skills": {str(k): v for k, v in sorted(self.step_skills.items())}}

    @classmethod
    def from_json(cls, data: dict) -> "Analysis":
        return cls(str(data["episode_summary"]), str(data["episode_skill"]),
                   {int(k): str(v) for k, v in data["step_skills"].items()})


class AnalysisError(ValueError):
    """A reply that cannot be turned into an Analysis; the message is fed back to the LLM."""


class Analyzer:
    """Base class; backends implement `analyze` (and may override `analyze_many` to run concurrently)."""

    name = "base"

    def identity(self) -> str:
        """What the cache key must change with: backend, model, prompt, K."""
        return self.name

    def analyze(self, trajectory: Trajectory) -> Analysis | None:
        raise NotImplementedError

    def analyze_many(self, trajectories: list[Trajectory]) -> list[Analysis | None]:
        return [self.analyze(t) for t in trajectories]


# -- the prompt ---------------------------------------------------------------------------------

SYSTEM_PROMPT = """You analyse one finished episode of an agent acting in a text environment, in hindsight, \
to write skills that would have helped the agent. Reply with one JSON object and nothing else:
{"episode_summary": "<what happened, 1-2 sentences>",
 "episode_skill": "<success: the reusable workflow that solved the task; failure: rules to avoid the mistakes>",
 "step_skills": {"<step index>": "<one short imperative sentence for the agent at that step>"}}
Give step skills only for the critical steps (decisive actions, mistakes, invalid actions, loops), \
at most {k} of them, keyed by the step indices shown. Skills must be general enough to reuse: \
refer to objects and places, not to this episode's step numbers."""


def _clip(text: str, limit: int) -> str:
    text = " ".join(clean_text(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_messages(trajectory: Trajectory, max_step_skills: int, gamma: float, max_chars: int) -> list[dict]:
    """Chat messages asking for the analysis of one trajectory (task, outcome, every step)."""
    outcome = "SUCCESS" if trajectory.won else f"FAILURE (score {trajectory.score:.2f})"
    lines = [f"Task: {clean_text(trajectory.task)}", f"Outcome: {outcome}", f"Steps: {len(trajectory.steps)}", ""]
    for step, ret in zip(trajectory.steps, trajectory.returns_to_go(gamma)):
        flags = "" if step.format_valid and step.action_valid else (
            " [invalid format]" if not step.format_valid else " [invalid action]")
        lines += [f"Step {step.t}:{flags}", f"  observation: {_clip(step.observation, max_chars)}",
                  f"  response: {_clip(step.response, max_chars)}", f"  return-to-go: {ret:.3f}"]
    system = SYSTEM_PROMPT.replace("{k}", str(max_step_skills))
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


def feedback_message(error: str) -> dict:
    return {"role": "user", "content": f"Your reply could not be used: {error}. "
                                       "Reply again with only the JSON object in the format asked for."}


# -- lenient parsing ----------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_JSON_WORDS = {"true": True, "false": False, "null": None}


def _outer_object(text: str) -> str:
    """The first balanced {...} in the text (quotes respected), so prose around it is ignored."""
    start = text.find("{")
    if start < 0:
        raise AnalysisError("no JSON object found in the reply")
    depth, quote, escaped = 0, None, False
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = None
            continue
        if c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    raise AnalysisError("the JSON object is not closed")


def _python_literal(text: str):
    """Python's literal syntax accepts single quotes and trailing commas; map JSON's words on top."""
    tree = ast.parse(text, mode="eval")
    for node in ast.walk(tree):
        for name, child in ast.iter_fields(node):
            if isinstance(child, ast.Name) and child.id in _JSON_WORDS:
                setattr(node, name, ast.Constant(_JSON_WORDS[child.id]))
            elif isinstance(child, list):
                child[:] = [ast.Constant(_JSON_WORDS[c.id]) if isinstance(c, ast.Name) and c.id in _JSON_WORDS else c
                            for c in child]
    return ast.literal_eval(tree)


def loads_lenient(text: str) -> dict:
    """Parse an LLM's JSON reply: code fences, prose around it, trailing commas, single quotes."""
    if not text or not text.strip():
        raise AnalysisError("the reply is empty")
    fenced = _FENCE.search(text)
    candidate = _outer_object(fenced.group(1) if fenced and "{" in fenced.group(1) else text)
    try:
        value = json.loads(candidate, strict=False)
    except (json.JSONDecodeError, RecursionError) as json_error:
        where = (f"{json_error.msg} at line {json_error.lineno} column {json_error.colno}"
                 if isinstance(json_error, json.JSONDecodeError) else "nested too deeply")
        try:
            value = _python_literal(candidate)
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
            raise AnalysisError(f"invalid JSON ({where})") from None
    if not isinstance(value, dict):
        raise AnalysisError("the reply is not a JSON object")
    return value


def _step_index(key) -> int | None:
    try:
        return int(str(key).strip())
    except ValueError:
        return None


def parse_analysis(text: str, num_steps: int, max_step_skills: int) -> Analysis:
    """Reply text -> Analysis. Missing fields raise; bad or out-of-range step keys are dropped."""
    data = loads_lenient(text)
    missing = [k for k in ("episode_summary", "episode_skill") if not isinstance(data.get(k), str)]
    if missing:
        raise AnalysisError(f"missing or non-text field(s) {missing}; keys found: {sorted(map(str, data))}")
    if not data["episode_skill"].strip():
        raise AnalysisError("episode_skill is empty")
    raw_steps = data.get("step_skills") or {}
    if not isinstance(raw_steps, dict):
        raise AnalysisError("step_skills must be an object mapping step indices to text")
    step_skills: dict[int, str] = {}
    for key, skill in raw_steps.items():
        t = _step_index(key)
        if t is None or not 0 <= t < num_steps or not isinstance(skill, str) or not skill.strip():
            continue  # invalid or out-of-range step: dropped, the rest is kept
        if t not in step_skills and len(step_skills) < max_step_skills:
            step_skills[t] = skill.strip()
    return Analysis(data["episode_summary"].strip(), data["episode_skill"].strip(), step_skills)
