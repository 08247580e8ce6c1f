"""The policy interface the collector and the learner use, whatever runs the model.

A backend turns a batch of plain prompts into responses with per-token log-probs (one call for
the whole batch), scores given responses under given prompts, and exposes the log-probs with
gradient so the learner can take a training step. `hf.HFPolicy` (transformers, CPU or GPU) is
the reference backend; a vLLM generator can implement `generate` alone and sync weights from an
`HFPolicy` that keeps `logprobs`/`score` for training.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Generation:
    text: str  # decoded response, special tokens dropped
    prompt_ids: list[int]
    response_ids: list[int]  # sampled tokens, the end-of-sequence token included when it was sampled
    logprobs: list[float]  # log-prob of each response token under the sampling policy (temperature applied)


class Policy:
    """What a policy backend provides; see `hf.HFPolicy`."""

    temperature: float = 1.0

    @contextmanager
    def at_temperature(self, temperature: float | None):
        """Sample and score at `temperature` inside the block (None: unchanged), then restore."""
        own = self.temperature
        if temperature is not None:
            self.temperature = temperature
        try:
            yield self
        finally:
            self.temperature = own

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a plain prompt, chat template applied as for generation."""
        raise NotImplementedError

    def generate(self, prompts: list[str], *, max_new_tokens: int, greedy: bool = False,
                 seed: int | None = None) -> list[Generation]:
        """One batched generation for all prompts; `seed` makes sampling reproducible."""
        raise NotImplementedError

    def logprobs(self, prompt_ids: list[list[int]], response_ids: torch.Tensor,
                 response_mask: torch.Tensor) -> torch.Tensor:
        """Per-token log-probs [R, T] of the responses, with gradient (0 at pads)."""
        raise NotImplementedError

    @torch.no_grad()
    def score(self, prompt_ids: list[list[int]], response_ids: torch.Tensor,
              response_mask: torch.Tensor) -> torch.Tensor:
        """`logprobs` without gradient (the algorithms' teacher and reference scoring)."""
        return self.logprobs(prompt_ids, response_ids, response_mask).detach()

    def parameters(self):
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError
