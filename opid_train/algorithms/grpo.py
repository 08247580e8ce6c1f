"""GRPO (Shao et al., 2024) for multi-turn episodes, as in verl-agent.

Every step of a trajectory gets its episode's group-relative advantage:
    A_ep(i) = (R_i - mean_group(R)) / (std_group(R) + eps)      (or without "/ std")
    A(row)  = A_ep(traj(row)) - invalid_format_penalty * [row's response is format-invalid]
                              - invalid_action_penalty * [well-formed, but the env could not carry it out]
broadcast over the row's response tokens. The learner minimises the token-level PPO loss
    L_pg = token_mean( max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)) ),  ratio = exp(logp - logp_old)
plus kl_coef * token_mean(k3), the low-variance KL estimate to the reference policy
    k3 = exp(logp_ref - logp) - (logp_ref - logp) - 1.
With `loss_agg="traj-mean"` the means weight every trajectory equally instead of every token
(the learner passes those weights as the mask).
"""

from __future__ import annotations

from typing import Any

import torch

from opid_train.algorithms.base import Algorithm, PrepareContext
from opid_train.types import Batch


def group_advantages(scores: torch.Tensor, group_ids: torch.Tensor, normalize_std: bool = True,
                     eps: float = 1e-6) -> torch.Tensor:
    """Per-trajectory A_ep from outcome scores [n] and group ids [n] (population std, as verl)."""
    adv = torch.zeros_like(scores, dtype=torch.float32)
    for g in group_ids.unique():
        members = group_ids == g
        r = scores[members].float()
        centred = r - r.mean()
        if normalize_std:
            centred = centred / (r.std(unbiased=False) + eps) if len(r) > 1 else centred * 0
        adv[members] = centred
    return adv


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                  clip_eps: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate averaged with `mask` as token weights (0/1: token-mean); returns the loss and
    its diagnostics (clip fraction, approx KL)."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask).item()
        approx_kl = masked_mean(0.5 * (logp - old_logp) ** 2, mask).item()
    return loss, {"pg_clipfrac": clipfrac, "ppo_approx_kl": approx_kl}


def low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(pi || pi_ref) per token (Schulman), clamped like verl's low_var_kl."""
    d = (ref_logp - logp).clamp(-20, 20)
    return (torch.exp(d) - d - 1).clamp(-10, 10)


def episode_advantages(batch: Batch, normalize_std: bool) -> torch.Tensor:
    """A_ep for each row of the batch (from its trajectory's score and group)."""
    traj_scores = torch.tensor([t.score for t in batch.trajectories], dtype=torch.float32)
    traj_groups = torch.tensor([t.group_id for t in batch.trajectories], dtype=torch.long)
    per_traj = group_advantages(traj_scores, traj_groups, normalize_std)
    return per_traj[torch.tensor([traj for traj, _ in batch.rows], dtype=torch.long)]


class GRPO(Algorithm):
    name = "grpo"

    def __init__(self, config):
        self.cfg = config.grpo  # the TrainConfig's GRPOConfig

    def prepare(self, batch: Batch, ctx: PrepareContext) -> dict[str, Any]:
        a_ep = episode_advantages(batch, self.cfg.normalize_std)
        action_invalid = torch.tensor([not batch.step(r).action_valid for r in range(len(batch))]) & batch.format_valid
        a_row = (a_ep - self.cfg.invalid_format_penalty * (~batch.format_valid).float()
                 - self.cfg.invalid_action_penalty * action_invalid.float())
        batch.advantages = a_row[:, None] * batch.response_mask
        return {"adv_ep_mean": a_ep.mean().item(), "adv_ep_abs_mean": a_ep.abs().mean().item(),
                "format_invalid_rate": (~batch.format_valid).float().mean().item(),
                "action_invalid_rate": action_invalid.float().mean().item()}
