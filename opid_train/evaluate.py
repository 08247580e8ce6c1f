"""Evaluation: success and score per split and per task type (WebShop: score and success; search
QA: exact match per hop type on the synthetic set, per data source on the official ones: the env's task types)."""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import NormalDist
from typing import Any, Iterable, Sequence

import numpy as np

from opid_train.rollout import collect, derive_seed, spread_task_ids
from opid_train.types import Trajectory

DETECTION_ALPHA, DETECTION_POWER = 0.05, 0.8  # what `task_level_test` reports as a detectable change


def evaluate(policy, pool, split: str, *, episodes: int = 0, greedy: bool = True, samples: int = 1,
             temperature: float | None = None, seed: int = 0, max_new_tokens: int = 24,
             progress: bool = True) -> list[Trajectory]:
    """Play `episodes` tasks of `split` (all when 0; a subset spread over the split's task ids),
    `samples` times each when sampling, at `temperature` (None: the policy's own)."""
    task_ids = spread_task_ids(pool.num_tasks(split), episodes)
    per_task = 1 if greedy else samples
    chunk = max(1, pool.size // per_task)
    trajs: list[Trajectory] = []
    with policy.at_temperature(None if greedy else temperature):
        for start in range(0, len(task_ids), chunk):
            tasks = [(split, t) for t in task_ids[start:start + chunk]]
            trajs += collect(policy, pool, tasks, per_task, seed=derive_seed(seed, 4242, start), greedy=greedy,
                             max_new_tokens=max_new_tokens, group_offset=start, progress=progress, desc=f"eval {split}")
    return trajs


def summarize(trajs: Sequence[Trajectory]) -> dict[str, Any]:
    """{"all": {...}, "by_type": {type: {...}}} with episodes, success, score, steps, the share of
    malformed responses and the share of steps that did nothing (malformed, or an action the env
    rejected), and "won": {task_id: [won per episode]}."""
    def stats(ts):
        steps = [s for t in ts for s in t.steps]
        return {"episodes": len(ts), "success": sum(t.won for t in ts) / max(1, len(ts)),
                "score": sum(t.score for t in ts) / max(1, len(ts)),
                "mean_steps": len(steps) / max(1, len(ts)),
                "format_invalid_rate": sum(not s.format_valid for s in steps) / max(1, len(steps)),
                "action_invalid_rate": sum(not s.action_valid for s in steps) / max(1, len(steps))}

    by_type = defaultdict(list)
    won = defaultdict(list)  # per task, so two policies' results can be paired episode by episode
    for t in trajs:
        by_type[t.task_type].append(t)
        won[str(t.task_id)].append(bool(t.won))
    return {"all": stats(trajs), "by_type": {k: stats(v) for k, v in sorted(by_type.items())}, "won": dict(won)}


def paired_tasks(pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> list[tuple[list[bool], list[bool]]]:
    """(before, after) episode outcomes of each task, over (before, after) pairs of `summarize`
    results of the same tasks."""
    return [(first["won"][task_id], second["won"][task_id])
            for first, second in pairs for task_id in sorted(first["won"])]


def paired_comparison(pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """Two policies on the same tasks ((before, after) pairs of `summarize` results): the
    episode-level `paired_test`, with the task-level test (the sounder one) under "task_level"."""
    tasks = paired_tasks(pairs)
    episodes = paired_test([w for before, _ in tasks for w in before], [w for _, after in tasks for w in after])
    return {**episodes, "task_level": task_level_test(tasks)}


def paired_test(before: Sequence[bool], after: Sequence[bool]) -> dict[str, Any]:
    """Exact McNemar test on paired episodes (the same tasks played by two policies).

    Only discordant pairs carry evidence: `gained` (lost before, won after) and `lost`. Under "no
    difference" each is a fair coin flip, so p_one_sided = P(Binomial(gained + lost, 1/2) >= gained)
    is the chance of a gain at least this large from noise alone."""
    if len(before) != len(after):
        raise ValueError(f"paired_test needs the same episodes: {len(before)} vs {len(after)}")
    gained = sum(1 for b, a in zip(before, after) if a and not b)
    lost = sum(1 for b, a in zip(before, after) if b and not a)
    n = gained + lost
    p = sum(math.comb(n, k) for k in range(gained, n + 1)) / 2 ** n
    return {"episodes": len(before), "before": sum(map(bool, before)) / max(1, len(before)),
            "after": sum(map(bool, after)) / max(1, len(after)), "gained": gained, "lost": lost,
            "p_one_sided": p}


def task_level_test(tasks: Sequence[tuple[Sequence[bool], Sequence[bool]]], rounds: int = 20_000,
                    seed: int = 0) -> dict[str, Any]:
    """One-sided paired randomization test with the task as the unit.

    Episodes of one task share its difficulty (at a low temperature they mostly repeat each other),
    so they are not independent evidence and an episode-level test overstates it. Here d_i is the
    change in task i's success rate; under "no difference" each d_i is as likely negative as
    positive, so p = the share of random sign flips of the d_i whose sum reaches the observed sum
    (Monte Carlo with a fixed seed, counted as (k + 1) / (rounds + 1)).

    `detectable_change` says what an evaluation of this size can see: the mean change per task that
    this test would find with 80 % power at alpha 0.05, from the spread of the observed d_i (normal
    approximation; 0 when fewer than two tasks or no task changed)."""
    d = np.array([np.mean(after) - np.mean(before) for before, after in tasks if len(before) and len(after)])
    changed = d[d != 0]
    p = 1.0
    if len(changed) and changed.sum() > 0:
        rng = np.random.default_rng(seed)
        hits = 0
        for start in range(0, rounds, 1000):
            signs = rng.choice([-1.0, 1.0], size=(min(1000, rounds - start), len(changed)))
            hits += int(((signs @ changed) >= changed.sum() - 1e-9).sum())
        p = (hits + 1) / (rounds + 1)
    z = NormalDist().inv_cdf(1 - DETECTION_ALPHA) + NormalDist().inv_cdf(DETECTION_POWER)
    detectable = float(z * d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    return {"tasks": len(d), "improved": int((d > 0).sum()), "worsened": int((d < 0).sum()),
            "mean_change": float(d.mean()) if len(d) else 0.0, "p_one_sided": p, "detectable_change": detectable}


def format_table(results: dict[str, dict[str, Any]], title: str = "") -> str:
    """results: {split: summarize(...)} -> a plain-text table, one line per split and task type."""
    lines = [title] if title else []
    lines.append(f"{'split':<14} {'task type':<34} {'episodes':>8} {'success':>8} {'score':>7} {'steps':>6} "
                 f"{'invalid':>8}")
    for split, summary in results.items():
        rows = [("ALL", summary["all"])] + list(summary["by_type"].items())
        for name, s in rows:
            lines.append(f"{split:<14} {name:<34} {s['episodes']:>8d} {100 * s['success']:>7.1f}% "
                         f"{s['score']:>7.3f} {s['mean_steps']:>6.1f} " + (
                             f"{100 * s['action_invalid_rate']:>7.1f}%" if "action_invalid_rate" in s else f"{'-':>8}"))
    return "\n".join(lines)
