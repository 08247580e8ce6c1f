"""Evaluation: success and score per split and per task type (WebShop: score and success; search
QA: exact match per data source, which the env reports as its task type or `data_source`)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence

from opid_train.rollout import collect, derive_seed, spread_task_ids
from opid_train.types import Trajectory


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
    """{"all": {...}, "by_type": {type: {...}}} with episodes, success, score, steps, invalid-format rate,
    and "won": {task_id: [won per episode]}."""
    def stats(ts):
        steps = [s for t in ts for s in t.steps]
        return {"episodes": len(ts), "success": sum(t.won for t in ts) / max(1, len(ts)),
                "score": sum(t.score for t in ts) / max(1, len(ts)),
                "mean_steps": len(steps) / max(1, len(ts)),
                "format_invalid_rate": sum(not s.format_valid for s in steps) / max(1, len(steps))}

    by_type = defaultdict(list)
    won = defaultdict(list)  # per task, so two policies' results can be paired episode by episode
    for t in trajs:
        by_type[t.task_type].append(t)
        won[str(t.task_id)].append(bool(t.won))
    return {"all": stats(trajs), "by_type": {k: stats(v) for k, v in sorted(by_type.items())}, "won": dict(won)}


def paired_episodes(pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[list[bool], list[bool]]:
    """Flatten (before, after) pairs of `summarize` results of the same tasks into two aligned lists
    of episode outcomes, ready for `paired_test`."""
    before, after = [], []
    for first, second in pairs:
        for task_id, won in sorted(first["won"].items()):
            before += won
            after += second["won"][task_id]
    return before, after


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


def format_table(results: dict[str, dict[str, Any]], title: str = "") -> str:
    """results: {split: summarize(...)} -> a plain-text table, one line per split and task type."""
    lines = [title] if title else []
    lines.append(f"{'split':<14} {'task type':<34} {'episodes':>8} {'success':>8} {'score':>7} {'steps':>6}")
    for split, summary in results.items():
        rows = [("ALL", summary["all"])] + list(summary["by_type"].items())
        for name, s in rows:
            lines.append(f"{split:<14} {name:<34} {s['episodes']:>8d} {100 * s['success']:>7.1f}% "
                         f"{s['score']:>7.3f} {s['mean_steps']:>6.1f}")
    return "\n".join(lines)
