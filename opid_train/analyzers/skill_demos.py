"""Skill-aware warm start: expert demonstrations whose prompts carry hindsight skills they follow.

A pretrained LLM reads natural-language skills; a tiny model trained here reads them only if its
warm start taught it to. The lesson must be consistent: a demonstration seen with a skill has to
follow that skill, or the model learns to ignore skills. So the skills come from the expert's own
episode, through the same offline analyzer and critical-first routing that OPID uses in RL:
- endorsing skills: the routed skill of the expert's trajectory (the workflow it carried out; at
  its decisive steps "Do '<the expert's action>' now"), the response being the expert's action;
  at the other steps half of the time the step-level "Do '<action>' now" instead of the workflow,
  so that every action is endorsed about as often as it is rejected;
- rejecting skills: "Avoid '<X>' ..." (step) or a failure's avoidance rules (episode) that name
  another admissible action X, the response still the expert's action, which is not X. Without
  the balance above, an action that is admissible everywhere ("go to sidetable 1") gets rejected
  far more often than endorsed and a tiny model learns "quoted -> not this" instead of reading the
  verb (measured: a correct "Do 'go to sidetable 1' now" then cost up to 10 nats).
RL then meets the same phrasings: endorsements on successes, rejections on failures.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Sequence

from opid_train.analyzers.offline import OfflineAnalyzer, avoid_skill, avoidance_skill, do_skill
from opid_train.types import Step, Trajectory
from wrappers import PromptTemplate, TagFormat
from wrappers.skills import route_skills

REJECTION_KINDS = ("invalid", "repeat", "revisit")


def expert_trajectories(demos: Sequence, response_format: TagFormat) -> list[tuple[Trajectory, list]]:
    """Group won expert demos (with `.context` and `.episode`) back into trajectories."""
    episodes: dict[int, list] = {}
    for demo in demos:
        if getattr(demo, "context", None) is None:
            raise ValueError("skill demos need demonstrations that carry their prompt context and episode")
        episodes.setdefault(demo.episode, []).append(demo)
    out = []
    for episode, items in episodes.items():
        steps = [Step(t=t, observation=d.context.observation, context=d.context, prompt=d.prompt, response=d.response,
                      action=response_format.parse(d.response).action, reward=float(t == len(items) - 1),
                      format_valid=True, action_valid=True) for t, d in enumerate(items)]
        task = items[0].context.task
        out.append((Trajectory(env_id="expert", split="train", task=task, task_id=episode, task_type="", group_id=episode,
                               traj_id=episode, steps=steps, score=1.0, won=True), items))
    return out


def rejection(rng: random.Random, task: str, other: str) -> dict[str, str]:
    """A skill (step- or episode-level) that rejects the action `other`."""
    if rng.random() < 0.5:
        return {"step_skill": avoid_skill(rng.choice(REJECTION_KINDS), other)}
    kind = rng.choice(REJECTION_KINDS)
    rules = {"invalid": {"invalid": [other]}, "repeat": {"repeated": [other]},
             "revisit": {"looped": True, "repeated": [other]}}[kind]
    return {"episode_skill": avoidance_skill(task, **rules)}


def skill_demos(demos: Sequence, template: PromptTemplate, response_format: TagFormat, *, share: float = 1.0,
                reject_share: float = 0.4, max_step_skills: int = 5, seed: int = 0) -> list:
    """Extra demonstrations with skills injected: `share` of the steps get a skill-carrying copy,
    `reject_share` of those a rejecting skill instead of the endorsing one. Deterministic per seed."""
    rng = random.Random(seed)
    analyzer = OfflineAnalyzer(max_step_skills)
    out = []
    for trajectory, items in expert_trajectories(demos, response_format):
        analysis = analyzer.analyze(trajectory)
        for step, demo in zip(trajectory.steps, items):
            if rng.random() >= share:
                continue
            others = [a for a in (step.context.admissible_actions or ()) if a != step.action]
            if others and rng.random() < reject_share:
                skills = rejection(rng, trajectory.task, rng.choice(others))
            else:
                routed = route_skills("route", step.t, analysis.episode_skill, analysis.step_skills)
                skills = {f"{c}_skill": text for c, text in routed.items()}
                if "step" not in routed and rng.random() < 0.5:
                    skills = {"step_skill": do_skill(step.action)}
            out.append(replace(demo, prompt=template.render(step.context, **skills)))
    return out
