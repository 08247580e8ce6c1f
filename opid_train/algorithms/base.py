"""The seam every algorithm plugs into (one module per algorithm: grpo.py, opid.py, sdar.py).

The learner calls, once per update and under no_grad with the old policy,
    metrics = algorithm.prepare(batch, ctx)        # must set batch.advantages [R, T]
and then, for every PPO minibatch, adds to the clipped PPO loss (+ KL)
    extra, metrics = algorithm.extra_loss(minibatch, logp)   # logp: [R, T] with grad
and logs `algorithm.finish_metrics(metrics)` of the update.

Construction: the registry in `opid_train.algorithms` maps a name to "module:Class" and builds
`Class(train_config)` with the whole `opid_train.config.TrainConfig`; a class reads its own section
(`train_config.grpo`, `train_config.opid`, ...). Modules are imported only when named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from opid_train.types import Batch
from wrappers.prompt import PromptTemplate


class ScoringPolicy(Protocol):
    """What an algorithm may ask of the policy while preparing a batch."""

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a plain prompt, chat template applied as for generation."""

    def score(self, prompt_ids: list[list[int]], response_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """Per-token log-probs [R, T] of the responses under the prompts, no grad (0 at pads)."""


@dataclass
class PrepareContext:
    policy: ScoringPolicy  # the old policy (weights before this update)
    template: PromptTemplate  # re-renders a step's prompt, e.g. with skills injected
    run_dir: Path  # caches and dumps (analyses, skills used per step)
    update: int  # index of this update (for schedules)
    # what the algorithm worked out per trajectory and row (analyses, routed skills, teacher terms),
    # left here for the run's records (`opid_train.records.add_teacher_details`)
    details: dict[str, Any] = field(default_factory=dict)


class Algorithm:
    """Base: subclasses compute advantages and optionally an extra loss term."""

    name = "base"
    has_extra_loss = False  # True when extra_loss can return a term (the learner may then skip no row)

    def prepare(self, batch: Batch, ctx: PrepareContext) -> dict[str, Any]:
        raise NotImplementedError

    def extra_loss(self, batch: Batch, logp: torch.Tensor) -> tuple[torch.Tensor | None, dict[str, float]]:
        return None, {}

    def finish_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """An update's metrics as logged, from the learner's token-weighted sums of the extra loss's."""
        return metrics
