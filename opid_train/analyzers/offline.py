"""A hindsight analyzer that needs no LLM, so OPID runs on the embedded default.

It reads the same evidence an LLM analyzer is shown and writes the same three fields, by rules:

- critical steps come from evidence in the trajectory itself:
    invalid     the response was format-invalid or the env rejected the action;
    repeat      the same action from the same observation as an earlier step (a wasted step);
    revisit     (failures) the step led back to an observation already seen (a loop);
    progress    (successes) a valid action on something the task names that changed the
                observation, and the final, rewarded action;
- successes give a workflow skill (the key actions in order) and "do this" step skills;
- failures give avoidance rules and "don't do this" step skills.

Pure and deterministic: the same trajectory always gives the same analysis.
"""

from __future__ import annotations

import re

from opid_train.analyzers.base import Analysis, Analyzer
from opid_train.types import Step, Trajectory

_STOPWORDS = frozenset(
    "a an the to and or in into on onto of at by for from with it its is are be your you this that "
    "then them some any one two".split()
)
_MAX_LISTED = 8  # actions listed in a workflow skill


FORMAT_SKILL = "Answer in the required format: exactly one action block holding one admissible action."


def do_skill(action: str, final: bool = False) -> str:
    """A step skill that endorses `action` (decisive steps of successes)."""
    return f"Do '{action}' now: it {'completes the task' if final else 'moves the task forward'}."


def avoid_skill(kind: str, action: str) -> str:
    """A step skill that rejects `action`: kind is invalid | repeat | revisit. It opens with "Avoid",
    never with "Do", so that even a tiny model can tell a rejection from an endorsement."""
    if kind == "invalid":
        return f"Avoid '{action}' here: it is not possible; choose one of the admissible actions."
    if kind == "repeat":
        return f"Avoid repeating '{action}': you already did it in this same situation and it changed nothing."
    return f"Avoid '{action}' here: it leads back to a situation you have already been in."


def workflow_skill(task: str, actions: list[str]) -> str:
    """An episode skill: the actions that solved the task, in order."""
    return (f"To {task.rstrip('.')}: " + ", then ".join(f"'{a}'" for a in actions) +
            ". Act on the objects the task names as soon as you find them.")


def avoidance_skill(task: str, *, bad_format: bool = False, invalid=(), repeated=(), looped: bool = False,
                    tried=()) -> str:
    """An episode skill of a failure: rules against the mistakes it shows."""
    rules = []
    if bad_format:
        rules.append("always answer in the required format")
    if invalid:
        rules.append("use only admissible actions (" + ", ".join(f"'{a}'" for a in invalid) + " were not possible)")
    if repeated:
        rules.append("do not repeat an action that changed nothing (" + ", ".join(f"'{a}'" for a in repeated) + ")")
    if looped:
        rules.append("do not go back to situations you have already been in; try places and actions you have not tried")
    if not rules:
        rules.append("the approach taken (" + ", ".join(f"'{a}'" for a in tried) +
                     ") did not work; try a different one and act directly on what the task names")
    return f"To {task.rstrip('.')}, avoid these mistakes: " + "; ".join(rules) + "."


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOPWORDS}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _said(step: Step) -> str:
    """The action as the agent took it (the clipped response when it was format-invalid)."""
    return step.action if step.action is not None else " ".join(step.response.split())[:80]


class OfflineAnalyzer(Analyzer):
    name = "offline"

    def __init__(self, max_step_skills: int = 5):
        self.max_step_skills = max_step_skills

    def identity(self) -> str:
        return f"{self.name}|K={self.max_step_skills}"

    # -- evidence ---------------------------------------------------------------------------
    @staticmethod
    def states(trajectory: Trajectory) -> list[str]:
        """The situation each step starts from: its observation, except that an invalid step changes
        nothing, so the step after it starts from the same situation (not from the error message)."""
        out: list[str] = []
        for i, step in enumerate(trajectory.steps):
            previous = trajectory.steps[i - 1] if i else None
            invalid_before = previous is not None and not (previous.format_valid and previous.action_valid)
            out.append(out[-1] if invalid_before else _norm(step.observation))
        return out

    def evidence(self, trajectory: Trajectory) -> list[tuple[str, int]]:
        """(kind, step index) for every step that stands out."""
        steps = trajectory.steps
        states = self.states(trajectory)
        task_words = _words(trajectory.task)
        seen_pairs: set[tuple[str, str]] = set()
        found = []
        for i, step in enumerate(steps):
            state = states[i]
            outcome = states[i + 1] if i + 1 < len(steps) else None
            if not (step.format_valid and step.action_valid):
                found.append(("invalid", i))
                continue
            pair = (state, _norm(step.action or ""))
            if pair in seen_pairs:
                found.append(("repeat", i))
            elif trajectory.won and (step.reward > 0 or i == len(steps) - 1):
                found.append(("progress", i))
            elif trajectory.won and outcome not in (None, state) and _words(step.action or "") & task_words:
                found.append(("progress", i))
            elif not trajectory.won and outcome not in (None, state) and outcome in states[: i + 1]:
                found.append(("revisit", i))
            seen_pairs.add(pair)
        return found

    def _pick(self, trajectory: Trajectory, found: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """At most K critical steps: most telling kinds first, one per distinct (kind, action) before repeats."""
        order = ("progress", "invalid", "repeat", "revisit") if trajectory.won else ("invalid", "repeat", "revisit")
        ranked = sorted((e for e in found if e[0] in order), key=lambda e: (order.index(e[0]), e[1]))
        if trajectory.won:  # the decisive final action first
            ranked.sort(key=lambda e: e[1] != len(trajectory.steps) - 1 or e[0] != "progress")
        picked, kinds_seen = [], set()
        for first_pass in (True, False):
            for e in ranked:
                key = (e[0], _norm(_said(trajectory.steps[e[1]])))
                if e in picked or (first_pass and key in kinds_seen) or len(picked) >= self.max_step_skills:
                    continue
                picked.append(e)
                kinds_seen.add(key)
        return sorted(picked, key=lambda e: e[1])

    # -- skills -----------------------------------------------------------------------------
    @staticmethod
    def _step_skill(trajectory: Trajectory, kind: str, t: int) -> str:
        step = trajectory.steps[t]
        if kind == "invalid" and not step.format_valid:
            return FORMAT_SKILL
        if kind == "progress":
            return do_skill(step.action, final=t == len(trajectory.steps) - 1)
        return avoid_skill(kind, step.action)

    @staticmethod
    def _workflow(trajectory: Trajectory, found) -> str:
        def distinct_actions(indices) -> list[str]:
            out: list[str] = []
            for t in indices:
                step = trajectory.steps[t]
                if step.action and step.format_valid and step.action_valid and step.action not in out:
                    out.append(step.action)
            return out

        # a short success is its own workflow; a long one is summarised by its key actions
        actions = distinct_actions(range(len(trajectory.steps)))
        if len(actions) > _MAX_LISTED:
            actions = distinct_actions(t for kind, t in found if kind == "progress")
        if len(actions) > _MAX_LISTED:
            actions = actions[: _MAX_LISTED - 1] + actions[-1:]
        return workflow_skill(trajectory.task, actions)

    @staticmethod
    def _avoidance(trajectory: Trajectory, found) -> str:
        def distinct(kind: str) -> list[str]:
            out = []
            for k, t in found:
                said = _said(trajectory.steps[t])
                if k == kind and trajectory.steps[t].format_valid and said not in out:
                    out.append(said)
            return out[:2]

        return avoidance_skill(
            trajectory.task, bad_format=any(k == "invalid" and not trajectory.steps[t].format_valid for k, t in found),
            invalid=distinct("invalid"), repeated=distinct("repeat"), looped=bool(distinct("revisit")),
            tried=[s.action for s in trajectory.steps[:4] if s.action])

    def analyze(self, trajectory: Trajectory) -> Analysis | None:
        if not trajectory.steps:
            return None
        found = self.evidence(trajectory)
        counts = {k: sum(e[0] == k for e in found) for k in ("invalid", "repeat", "revisit")}
        outcome = "Succeeded" if trajectory.won else f"Failed (score {trajectory.score:.2f})"
        summary = (f"{outcome} after {len(trajectory.steps)} steps: {counts['invalid']} invalid, "
                   f"{counts['repeat']} repeated and {counts['revisit']} looping actions.")
        skill = self._workflow(trajectory, found) if trajectory.won else self._avoidance(trajectory, found)
        steps = {t: self._step_skill(trajectory, kind, t) for kind, t in self._pick(trajectory, found)}
        return Analysis(summary, skill, steps)
