"""Defaults that learn, and a run that says when it cannot.

A from-scratch tiny policy writes no well-formed response at first, so without a warm start every
rollout of a task scores the same, GRPO's groups carry no signal and the run learns nothing.
`with_learning_defaults` turns the warm start on when the env has an expert; `SignalWatch` tells
the user, in the console, when no group has carried signal for several updates and what to try.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import gymnasium as gym

from opid_envs.core import resolve_env_id

AUTO_WARMSTART_EPISODES = 100  # expert episodes of the default warm start (about a minute of BC on the tiny policy)
QUIET_UPDATES = 3  # updates without any group carrying signal before the warning


def env_has_expert(env_id: str) -> bool:
    """Whether the env's class offers `expert_action()`, read from its registration (no env is made)."""
    entry_point = gym.spec(env_id).entry_point
    if isinstance(entry_point, str):
        entry_point = gym.envs.registration.load_env_creator(entry_point)
    return callable(getattr(entry_point, "expert_action", None))


def with_learning_defaults(cfg, log: Callable[[str], None] = print):
    """The config with its automatic values filled in: `warmstart.episodes` None becomes
    AUTO_WARMSTART_EPISODES for the from-scratch tiny policy on an env with an expert, else 0."""
    resolve_env_id(cfg.env)  # import a "module:Id" env before anything is written
    if cfg.warmstart.episodes is not None:
        return cfg
    episodes = 0
    if cfg.policy == "tiny" and not cfg.init:
        if env_has_expert(cfg.env.split(":")[-1]):
            episodes = AUTO_WARMSTART_EPISODES
            log(f"warm start: {episodes} expert episodes by default for the from-scratch tiny policy "
                "(--warmstart.episodes 0 turns it off)")
        else:
            log("no warm start: the env has no expert_action(), and a from-scratch tiny policy rarely writes a "
                "well-formed response; expect a high format-invalid rate")
    return replace(cfg, warmstart=replace(cfg.warmstart, episodes=episodes))


def groups_with_signal(trajectories) -> float:
    """The share of rollout groups whose trajectories did not all score the same (GRPO learns only from those)."""
    groups: dict[int, set[float]] = {}
    for t in trajectories:
        groups.setdefault(t.group_id, set()).add(round(float(t.score), 6))
    return sum(len(scores) > 1 for scores in groups.values()) / max(1, len(groups))


def rollout_metrics(trajectories) -> dict[str, float]:
    """An update's rollout statistics, the same names on every backend: success, score, steps per
    episode, step rows, groups with mixed outcomes and with any signal, the malformed-step share."""
    import numpy as np

    won: dict[int, list[bool]] = {}
    for t in trajectories:
        won.setdefault(t.group_id, []).append(t.won)
    steps = [s for t in trajectories for s in t.steps]
    return {"success": float(np.mean([t.won for t in trajectories])),
            "score": float(np.mean([t.score for t in trajectories])),
            "mean_steps": len(steps) / len(trajectories), "rows": len(steps),
            "mixed_groups": sum(0 < sum(g) < len(g) for g in won.values()) / len(won),
            "signal_groups": groups_with_signal(trajectories),
            "format_invalid_rate": float(np.mean([not s.format_valid for s in steps]))}


class SignalWatch:
    """Counts consecutive updates in which no group carried signal; warns once per quiet stretch."""

    def __init__(self, quiet_updates: int = QUIET_UPDATES, warm_started: bool = False):
        self.quiet_updates, self.quiet, self.warm_started = quiet_updates, 0, warm_started

    def update(self, metrics: dict) -> str | None:
        self.quiet = self.quiet + 1 if metrics["signal_groups"] == 0 else 0
        if self.quiet != self.quiet_updates:
            return None
        invalid, success = metrics.get("format_invalid_rate", 0.0), metrics["success"]
        tips = []
        if invalid > 0.5 and self.warm_started:
            tips.append("a longer warm start (more --warmstart.epochs or --warmstart.episodes, until the BC loss "
                        "above is well under 0.5), or a pretrained policy (--policy smollm2-135m)")
        elif invalid > 0.5:
            tips.append("a warm start on expert demonstrations (--warmstart.episodes 100; the env needs "
                        "expert_action()), or a pretrained policy (--policy smollm2-135m)")
        if success >= 1.0:
            tips.append("harder tasks (every rollout wins)")
        elif success == 0.0:
            tips.append("easier tasks or more steps (--env-kwargs), since no rollout wins")
        tips.append("more rollouts per task (--group-size) or a higher --temperature")
        return (f"WARNING: no rollout group has carried a learning signal for {self.quiet} updates: every "
                f"rollout of each task scored the same (success {success:.2f}, format-invalid "
                f"{invalid:.2f}), so the policy is not learning. Try: " + "; ".join(tips) + ".")
