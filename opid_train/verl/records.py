"""The per-step record a verl training row carries (`extra_fields["opid"]`), and back.

A row is one env step. Its record holds what the local collector keeps on a `Step` (observation,
prompt pieces, response text, action, validity) plus its trajectory's identity and outcome, so the
advantage step can rebuild `Trajectory` objects for the shared algorithm core and the analyzers.
"""

from __future__ import annotations

from typing import Any

import torch

from opid_train.types import Step, Trajectory
from wrappers.prompt import PromptContext

TRAJ_FIELDS = ("env_id", "split", "task", "task_id", "task_type", "score", "won")


def step_to_record(step: Step, traj: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly record of one step; `traj` holds TRAJ_FIELDS plus `uid` (the task draw) and `session`."""
    ctx = step.context
    return {
        "t": step.t, "observation": step.observation, "prompt": step.prompt, "response": step.response,
        "action": step.action, "reward": float(step.reward), "format_valid": bool(step.format_valid),
        "action_valid": bool(step.action_valid),
        "context": {"task": ctx.task, "history": [list(pair) for pair in ctx.history], "observation": ctx.observation,
                    "admissible_actions": None if ctx.admissible_actions is None else list(ctx.admissible_actions),
                    "step": ctx.step},
        "traj": dict(traj),
    }


def record_to_step(record: dict[str, Any], prompt_ids: list[int], response_ids: list[int],
                   old_logprobs: list[float]) -> Step:
    c = record["context"]
    actions = c["admissible_actions"]
    context = PromptContext(task=c["task"], history=tuple(tuple(pair) for pair in c["history"]),
                            observation=c["observation"], admissible_actions=None if actions is None else tuple(actions),
                            step=int(c["step"]))
    return Step(t=int(record["t"]), observation=record["observation"], context=context, prompt=record["prompt"],
                response=record["response"], action=record["action"], reward=float(record["reward"]),
                format_valid=bool(record["format_valid"]), action_valid=bool(record["action_valid"]),
                prompt_ids=list(prompt_ids), response_ids=list(response_ids), old_logprobs=list(old_logprobs))


def trajectories_from_records(records: list[dict[str, Any]], prompt_ids: list[list[int]], response_ids: torch.Tensor,
                              response_mask: torch.Tensor, old_logp: torch.Tensor
                              ) -> tuple[list[Trajectory], list[tuple[int, int]]]:
    """Trajectories rebuilt from step rows in any order, and `rows[i] = (trajectory, step index)` of row i.

    Rows of one (uid, session) form a trajectory; trajectories of one uid form a group. Every step
    0..n-1 of a trajectory must be present (verl keeps or drops whole groups).
    """
    trajs: dict[tuple[str, int], Trajectory] = {}
    groups: dict[str, int] = {}
    where: list[tuple[tuple[str, int], int]] = []
    for i, rec in enumerate(records):
        info = rec["traj"]
        key = (str(info["uid"]), int(info["session"]))
        if key not in trajs:
            group = groups.setdefault(key[0], len(groups))
            trajs[key] = Trajectory(**{f: info[f] for f in TRAJ_FIELDS if f not in ("score", "won")},
                                    group_id=group, traj_id=len(trajs), score=float(info["score"]), won=bool(info["won"]),
                                    final_observation=info.get("final_observation"))
        n = int(response_mask[i].sum())
        step = record_to_step(rec, prompt_ids[i], response_ids[i, :n].tolist(), old_logp[i, :n].tolist())
        trajs[key].steps.append(step)
        where.append((key, step.t))
    for key, traj in trajs.items():
        traj.steps.sort(key=lambda s: s.t)
        if [s.t for s in traj.steps] != list(range(len(traj.steps))):
            raise ValueError(f"trajectory {key} has steps {[s.t for s in traj.steps]}: a step row is missing "
                             f"or repeated in the batch")
    position = {key: i for i, key in enumerate(trajs)}
    return list(trajs.values()), [(position[key], t) for key, t in where]
