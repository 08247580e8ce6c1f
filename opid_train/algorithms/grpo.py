"""GRPO (Shao et al., 2024) for multi-turn episodes, as in verl-agent.

Every step (row) of a trajectory gets its episode's group-relative advantage, broadcast over the
row's response tokens. The outcome of trajectory i is R_i = reward_scale * (score_i or won_i).
Two ways to take the group statistics (`grpo.outcome_advantage`):

verl_agent (the OPID reference; verl's compute_grpo_outcome_advantage with
compute_mean_std_cross_steps=True, as its trainer calls it). Each row r carries its episode's outcome
minus its own penalties, and the group's mean and std are taken over the group's rows:
    s_r    = R_traj(r) - invalid_format_penalty * [r format-invalid] - invalid_action_penalty * [r not carried out]
    A(r)   = (s_r - mean_g(s)) / (std_g(s) + eps)          std: unbiased (n - 1), eps 1e-6
             s_r - mean_g(s)                               without "/ std" ("mean_norm")
    a group of a single row has mean 0 and std 1, so A(r) = s_r / (1 + eps).
  A trajectory of 4 steps counts 4 times in its group's mean and std.

per_trajectory_population_std (ours, the tiny policy's): one value per trajectory, population std,
penalties after normalization:
    A_ep(i) = (R_i - mean_g(R)) / (std_g(R) + eps)          std: population (n); a group of one: 0
    A(r)    = A_ep(traj(r)) - invalid_format_penalty * [...] - invalid_action_penalty * [...]

The learner minimises the token-level PPO loss
    l      = max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)),  ratio = exp(logp - logp_old)
    L_pg   = token_mean(l)
with dual clip (Ye et al. 2020; `grpo.clip_ratio_c` = c > 1, the reference's 3.0; verl's
compute_policy_loss_vanilla) a token with A < 0 loses at most -A * c, and the log-ratio is clamped to
[-20, 20] before exp:
    l      = min(l, -A * c)  where A < 0
plus kl_coef * token_mean(k3), the low-variance KL estimate to the reference policy
    k3 = exp(logp_ref - logp) - (logp_ref - logp) - 1.
With `loss_agg="traj-mean"` the means weight every trajectory equally instead of every token
(the learner passes those weights as the mask).
"""

from __future__ import annotations

from typing import Any

import torch

from opid_train.algorithms.base import Algorithm, PrepareContext
from opid_train.algorithms.config import OUTCOME_ADVANTAGES, PARITY_FIELDS, REWARDS
from opid_train.types import Batch


def group_advantages(scores: torch.Tensor, group_ids: torch.Tensor, normalize_std: bool = True,
                     eps: float = 1e-6) -> torch.Tensor:
    """Ours: per-trajectory A_ep from outcome scores [n] and group ids [n], population std (n in
    the denominator); a group of one trajectory gets 0."""
    adv = torch.zeros_like(scores, dtype=torch.float32)
    for g in group_ids.unique():
        members = group_ids == g
        r = scores[members].float()
        centred = r - r.mean()
        if normalize_std:
            centred = centred / (r.std(unbiased=False) + eps) if len(r) > 1 else centred * 0
        adv[members] = centred
    return adv


def step_row_advantages(row_scores: torch.Tensor, group_ids: torch.Tensor, normalize_std: bool = True,
                        eps: float = 1e-6) -> torch.Tensor:
    """The reference's (verl-agent's): A per step row from the rows' scores [R] and group ids [R],
    mean and unbiased std over the group's rows; a group of one row: mean 0, std 1."""
    adv = torch.zeros_like(row_scores, dtype=torch.float32)
    for g in group_ids.unique():
        members = group_ids == g
        s = row_scores[members].float()
        mean, std = (s.mean(), s.std(unbiased=True)) if len(s) > 1 else (torch.tensor(0.0), torch.tensor(1.0))
        adv[members] = (s - mean) / (std + eps) if normalize_std else s - mean
    return adv


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` under token weights `mask` (0/1, or traj-mean's fractions, which may sum below 1 in
    a micro-batch: only an all-zero mask is guarded)."""
    return (x * mask).sum() / mask.sum().clamp(min=1e-8)


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                  clip_eps: float, clip_ratio_c: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate averaged with `mask` as token weights (0/1: token-mean); returns the loss and
    its diagnostics (clip fraction, approx KL; with dual clip, `pg_clipfrac_lower`: the share of
    tokens its bound capped, as verl names it). `clip_ratio_c` 0 or None: no dual clip."""
    if clip_ratio_c and clip_ratio_c <= 1:
        raise ValueError(f"clip_ratio_c must be > 1 for dual-clip PPO (or 0/None for off), got {clip_ratio_c}")
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio.clamp(-20, 20) if clip_ratio_c else log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    token_loss = torch.maximum(unclipped, clipped)
    metrics = {}
    if clip_ratio_c:
        bound = -advantages * clip_ratio_c
        negative = advantages < 0
        with torch.no_grad():
            metrics["pg_clipfrac_lower"] = masked_mean((negative & (token_loss > bound)).float(), mask).item()
        token_loss = torch.where(negative, torch.minimum(token_loss, bound), token_loss)
    loss = masked_mean(token_loss, mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask).item()
        approx_kl = masked_mean(0.5 * (logp - old_logp) ** 2, mask).item()
    return loss, {"pg_clipfrac": clipfrac, "ppo_approx_kl": approx_kl, **metrics}


def low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(pi || pi_ref) per token (Schulman), clamped like verl's low_var_kl."""
    d = (ref_logp - logp).clamp(-20, 20)
    return (torch.exp(d) - d - 1).clamp(-10, 10)


def check_grpo_config(cfg):
    """A clear error for an unknown estimator or reward, or a dual-clip bound <= 1, before any work starts."""
    if cfg.outcome_advantage not in OUTCOME_ADVANTAGES:
        raise ValueError(f"unknown grpo.outcome_advantage {cfg.outcome_advantage!r}; "
                         f"choose one of {OUTCOME_ADVANTAGES}")
    if cfg.reward not in REWARDS:
        raise ValueError(f"unknown grpo.reward {cfg.reward!r}; choose one of {REWARDS}")
    if cfg.clip_ratio_c is not None and cfg.clip_ratio_c != 0 and not cfg.clip_ratio_c > 1:
        raise ValueError(f"grpo.clip_ratio_c {cfg.clip_ratio_c!r}: expected 0 (no dual clip) or a number > 1")
    return cfg


def outcome_rewards(batch: Batch, cfg) -> torch.Tensor:
    """R per trajectory: reward_scale * (the env's score, or 1 for a won episode)."""
    raw = [t.score if cfg.reward == "score" else float(t.won) for t in batch.trajectories]
    return cfg.reward_scale * torch.tensor(raw, dtype=torch.float32)


def episode_advantages(batch: Batch, cfg, penalties: torch.Tensor) -> torch.Tensor:
    """A for each row of the batch; `penalties` [R] are the rows' invalid-step penalties, inside the
    row's score (verl_agent) or subtracted after normalization (per_trajectory_population_std)."""
    per_traj = outcome_rewards(batch, cfg)
    traj_of_row = torch.tensor([traj for traj, _ in batch.rows], dtype=torch.long)
    if cfg.outcome_advantage == "verl_agent":
        return step_row_advantages(per_traj[traj_of_row] - penalties, batch.group_ids, cfg.normalize_std)
    if cfg.outcome_advantage == "per_trajectory_population_std":
        traj_groups = torch.tensor([t.group_id for t in batch.trajectories], dtype=torch.long)
        return group_advantages(per_traj, traj_groups, cfg.normalize_std)[traj_of_row] - penalties
    raise ValueError(f"unknown grpo.outcome_advantage {cfg.outcome_advantage!r}; choose one of {OUTCOME_ADVANTAGES}")


class GRPO(Algorithm):
    name = "grpo"

    def __init__(self, config):
        if any(getattr(config.grpo, f) is None for f in PARITY_FIELDS):
            from opid_train.presets import resolve_parity

            config = resolve_parity(config)
        self.cfg = check_grpo_config(config.grpo)  # the TrainConfig's GRPOConfig, parity fields resolved

    def prepare(self, batch: Batch, ctx: PrepareContext) -> dict[str, Any]:
        format_invalid = ~batch.format_valid
        not_carried_out = torch.tensor([not batch.step(r).action_valid for r in range(len(batch))]) | format_invalid
        action_invalid = not_carried_out & batch.format_valid  # well-formed, but the env could not carry it out
        # A malformed response is not carried out either, so it pays both penalties: were it cheaper than
        # an impossible action, RL would learn to write malformed text instead (seen in calibration).
        penalties = (self.cfg.invalid_format_penalty * format_invalid.float()
                     + self.cfg.invalid_action_penalty * not_carried_out.float())
        a_row = episode_advantages(batch, self.cfg, penalties)
        batch.advantages = a_row[:, None] * batch.response_mask
        return {"adv_ep_mean": a_row.mean().item(), "adv_ep_abs_mean": a_row.abs().mean().item(),
                "format_invalid_rate": format_invalid.float().mean().item(),
                "action_invalid_rate": action_invalid.float().mean().item()}
