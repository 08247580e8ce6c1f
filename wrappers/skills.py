"""Skill injection and critical-first routing (OPID, arXiv 2606.26790).

Skills are text written from hindsight. They reach only the *teacher* prompts that re-score a
sampled response during training; the policy acts from the plain prompt.

- an episode-level skill goes in a block right after the task line;
- a critical-step skill goes in a block right before the final instruction.
"""

from __future__ import annotations

EPISODE_SKILL_HEADER = "[Episode-Level Skill]"
STEP_SKILL_HEADER = "[Critical-Step Skill]"
ROUTING_MODES = ("route", "additive", "episode_only", "step_only")


def inject_skills(
    prompt: str,
    task_line: str,
    instruction: str,
    episode_skill: str | None = None,
    step_skill: str | None = None,
) -> str:
    """Insert skill blocks into a rendered prompt; deterministic, and a no-op without skills.

    `task_line` is the line that states the task (its first occurrence is used) and
    `instruction` the final instruction (its last occurrence is used).
    """
    if episode_skill:
        at = prompt.find(task_line)
        if at < 0:
            raise ValueError("the task line is not in the prompt")
        end = prompt.find("\n", at + len(task_line))
        end = len(prompt) if end < 0 else end
        prompt = f"{prompt[:end]}\n{EPISODE_SKILL_HEADER}\n{episode_skill.strip()}{prompt[end:]}"
    if step_skill:
        at = prompt.rfind(instruction)
        if at < 0:
            raise ValueError("the final instruction is not in the prompt")
        prompt = f"{prompt[:at]}{STEP_SKILL_HEADER}\n{step_skill.strip()}\n{prompt[at:]}"
    return prompt


def route_skills(
    mode: str,
    step: int,
    episode_skill: str | None,
    step_skills: dict[int, str],
) -> dict[str, str]:
    """Which skill-augmented teacher prompts score step `step`: {"episode"|"step": skill text}.

    - route (default): the step skill at a critical step, the episode skill everywhere else;
    - additive (the paper's "no routing" ablation): at critical steps both, each scored apart;
    - episode_only / step_only: one level of skills only.
    """
    if mode not in ROUTING_MODES:
        raise ValueError(f"unknown routing mode {mode!r}; choose one of {ROUTING_MODES}")
    step_skill = step_skills.get(step)
    routed: dict[str, str] = {}
    if episode_skill and (mode in ("episode_only", "additive") or (mode == "route" and not step_skill)):
        routed["episode"] = episode_skill
    if step_skill and mode in ("route", "additive", "step_only"):
        routed["step"] = step_skill
    return routed
