"""The vocabulary every part of opid_train speaks: steps, trajectories, and the token batch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from wrappers.prompt import PromptContext


@dataclass
class Step:
    """One turn of one rollout: what the policy saw, what it said, what happened."""

    t: int
    observation: str  # raw env observation the step started from (the analyzer reads it)
    context: PromptContext  # pieces of the prompt; re-render with skills via template.render(...)
    prompt: str  # the plain prompt text (before any chat template)
    response: str
    action: str | None  # parsed action, None when the response was format-invalid
    reward: float
    format_valid: bool
    action_valid: bool
    prompt_ids: list[int] = field(default_factory=list)
    response_ids: list[int] = field(default_factory=list)
    old_logprobs: list[float] = field(default_factory=list)  # per response token, sampling policy


@dataclass
class Trajectory:
    """One finished episode; trajectories with the same group_id share a task (a GRPO group)."""

    env_id: str
    split: str
    task: str
    task_id: int
    task_type: str
    group_id: int
    traj_id: int
    steps: list[Step] = field(default_factory=list)
    score: float = 0.0  # the outcome score in [0, 1] (the final step's reward)
    won: bool = False
    final_observation: str | None = None  # what the env said after the last action

    def returns_to_go(self, gamma: float = 0.95) -> list[float]:
        """Discounted return from each step on (the analyzer's evidence of progress)."""
        out, g = [], 0.0
        for step in reversed(self.steps):
            g = step.reward + gamma * g
            out.append(g)
        return out[::-1]


@dataclass
class Batch:
    """One row per step (a prompt/response pair), responses right-padded to T tokens.

    `rows[i] = (trajectory index, step index)` links a row back to `trajectories`.
    Algorithms fill `advantages` in `prepare` and may keep tensors of their own in `extras`.
    """

    trajectories: list[Trajectory]
    rows: list[tuple[int, int]]
    prompt_ids: list[list[int]]
    response_ids: torch.Tensor  # [R, T] long, pad positions hold any id
    response_mask: torch.Tensor  # [R, T] float, 1 on real response tokens
    old_logp: torch.Tensor  # [R, T] float
    group_ids: torch.Tensor  # [R] long
    format_valid: torch.Tensor  # [R] bool
    ref_logp: torch.Tensor | None = None  # [R, T] reference policy, for the KL term
    advantages: torch.Tensor | None = None  # [R, T]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def step(self, row: int) -> Step:
        traj, t = self.rows[row]
        return self.trajectories[traj].steps[t]

    def select(self, index: list[int] | torch.Tensor) -> "Batch":
        """A minibatch of rows (tensors indexed, lists picked; trajectories shared)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return replace(
            self,
            rows=[self.rows[i] for i in idx.tolist()],
            prompt_ids=[self.prompt_ids[i] for i in idx.tolist()],
            response_ids=self.response_ids[idx],
            response_mask=self.response_mask[idx],
            old_logp=self.old_logp[idx],
            group_ids=self.group_ids[idx],
            format_valid=self.format_valid[idx],
            ref_logp=pick(self.ref_logp),
            advantages=pick(self.advantages),
            extras={k: v[idx] for k, v in self.extras.items()},
        )
