"""Evaluation: success and score per split and per task type (WebShop: score and success; search
QA: exact match per data source, which the env reports as its task type or `data_source`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from opid_train.rollout import collect, derive_seed, spread_task_ids
from opid_train.types import Trajectory


def evaluate(policy, pool, split: str, *, episodes: int = 0, greedy: bool = True, samples: int = 1,
             seed: int = 0, max_new_tokens: int = 24, progress: bool = True) -> list[Trajectory]:
    """Play `episodes` tasks of `split` (all when 0; a subset spread over the split's task ids),
    `samples` times each when sampling."""
    task_ids = spread_task_ids(pool.num_tasks(split), episodes)
    per_task = 1 if greedy else samples
    chunk = max(1, pool.size // per_task)
    trajs: list[Trajectory] = []
    for start in range(0, len(task_ids), chunk):
        tasks = [(split, t) for t in task_ids[start:start + chunk]]
        trajs += collect(policy, pool, tasks, per_task, seed=derive_seed(seed, 4242, start), greedy=greedy,
                         max_new_tokens=max_new_tokens, group_offset=start, progress=progress, desc=f"eval {split}")
    return trajs


def summarize(trajs: Sequence[Trajectory]) -> dict[str, Any]:
    """{"all": {...}, "by_type": {type: {...}}} with episodes, success, score, steps, invalid-format rate."""
    def stats(ts):
        steps = [s for t in ts for s in t.steps]
        return {"episodes": len(ts), "success": sum(t.won for t in ts) / max(1, len(ts)),
                "score": sum(t.score for t in ts) / max(1, len(ts)),
                "mean_steps": len(steps) / max(1, len(ts)),
                "format_invalid_rate": sum(not s.format_valid for s in steps) / max(1, len(steps))}

    by_type = defaultdict(list)
    for t in trajs:
        by_type[t.task_type].append(t)
    return {"all": stats(trajs), "by_type": {k: stats(v) for k, v in sorted(by_type.items())}}


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
