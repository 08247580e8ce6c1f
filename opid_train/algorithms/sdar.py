"""SDAR: self-distilled agentic RL, on-policy self-distillation as a gated auxiliary loss.

The RL backbone is GRPO, its advantage untouched. The self-teacher is the same weights (the old
policy) reading privileged skills; the student is the current policy on the plain prompt:
    T_t     = log pi_old(y_t | h+, y_<t)        teacher log-prob (prepared once per update, detached)
    D_t     = T_t - log pi_theta(y_t | h, y_<t)  the teacher-student gap
    L_SDAR  = coef * token_mean( g_t * D_t )     over the loss's tokens, 0 on rows without a teacher
    L       = L_GRPO + L_SDAR                    coef 0.01
with the gate g_t detached (a confidence weight, never optimised through). Gates (`--sdar.gate`):
    sigmoid   g = sigmoid(beta * D)                      gap gate: teacher-endorsed tokens count most,
                                                         negative teacher rejections fade (beta 5)
    entropy   g = 1 - pi_theta(y_t)                      student uncertainty; one-sample estimate whose
                                                         expectation is the order-2 (Tsallis) entropy
                                                         1 - sum_v pi(v)^2, in [0, 1)
    soft_or   g = 1 - (1 - g_sigmoid) * (1 - g_entropy)  either signal opens the gate

Teacher context (`--sdar.teacher-context`):
    routed (default)  OPID's skill injection: the same analyzer and critical-first routing as OPID,
                      so OPID and SDAR differ only in how the teacher's signal is used, and a tiny
                      policy warm-started on skill-injected prompts reads them where it learned to;
    prefix            the SDAR reference's "[Privileged Skill Information]\\n<skill>\\n\\n" in front of the
                      plain prompt (the routed skill; both skills for routing "additive").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from opid_train.algorithms.base import Algorithm, PrepareContext
from opid_train.algorithms.grpo import GRPO, masked_mean
from opid_train.algorithms.opid import SkillTeacher, analysis_metrics, dump_skills, score_teacher
from opid_train.types import Batch

GATES = ("sigmoid", "entropy", "soft_or")
TEACHER_CONTEXTS = ("routed", "prefix")
PRIVILEGED_PREFIX = "[Privileged Skill Information]\n{skill}\n\n"


def sdar_gate(gap: torch.Tensor, logp: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
    """g_t, detached."""
    gap, logp = gap.detach(), logp.detach()
    g_gap = torch.sigmoid(beta * gap)
    g_entropy = 1 - logp.exp()
    if kind == "sigmoid":
        return g_gap
    if kind == "entropy":
        return g_entropy
    if kind == "soft_or":
        return 1 - (1 - g_gap) * (1 - g_entropy)
    raise ValueError(f"unknown SDAR gate {kind!r}; choose one of {GATES}")


# SDAR's diagnostics as token shares (summed like the loss) -> the means an update logs
TEACHER_SHARE = "sdar/teacher_share"
MEANS = {"sdar/gate_share": "sdar/gate_mean", "sdar/gate_active_share": "sdar/gate_active_ratio",
         "sdar/gap_share": "sdar/gap_mean"}


def sdar_loss(logp: torch.Tensor, teacher_logp: torch.Tensor, teacher_mask: torch.Tensor, token_weight: torch.Tensor,
              coef: float, beta: float, gate: str) -> tuple[torch.Tensor, dict[str, float]]:
    """coef * sum(w * m * g * (T - logp)) / sum(w): the gated gap on the tokens that have a teacher (m),
    averaged over all the loss's tokens (w: the PPO loss's token weights). A row without a teacher adds
    nothing and still counts, as in the reference's token mean when every row has a teacher, so a
    minibatch's term does not depend on how it is cut into micro-batches (a mean over each micro-batch's
    teacher tokens did). The diagnostics are shares of the same tokens, which add up over micro-batches
    and ranks as the loss does; `share_means` turns them into means over the teacher's tokens."""
    gap = teacher_logp - logp
    g = sdar_gate(gap, logp, gate, beta)
    total = token_weight.sum().clamp(min=1e-8)
    on = teacher_mask * token_weight
    loss = coef * (g * gap * on).sum() / total
    with torch.no_grad():
        metrics = {"sdar/loss": loss.item(), TEACHER_SHARE: (on.sum() / total).item(),
                   **{share: ((value * on).sum() / total).item()
                      for share, value in (("sdar/gate_share", g), ("sdar/gate_active_share", (g > 0.5).to(g)),
                                           ("sdar/gap_share", gap))}}
    return loss, metrics


def share_means(metrics: dict[str, Any]) -> dict[str, Any]:
    """An update's summed SDAR shares as means over the teacher's tokens (sdar/gate_mean, ...)."""
    teacher = metrics.pop(TEACHER_SHARE, None)
    for share, mean in MEANS.items():
        value = metrics.pop(share, None)
        if value is not None and teacher:
            metrics[mean] = value / teacher
    return metrics


class SDAR(Algorithm):
    name = "sdar"
    has_extra_loss = True

    def __init__(self, config):
        self.cfg = config.sdar
        if self.cfg.gate not in GATES:
            raise ValueError(f"unknown SDAR gate {self.cfg.gate!r}; choose one of {GATES}")
        if self.cfg.teacher_context not in TEACHER_CONTEXTS:
            raise ValueError(f"unknown teacher context {self.cfg.teacher_context!r}; choose one of {TEACHER_CONTEXTS}")
        self.grpo = GRPO(config)
        self.teacher = SkillTeacher(config.analyzer, self.cfg.routing)

    def _teacher_prompt(self, batch: Batch, ctx: PrepareContext, row: int, skills: dict[str, str]) -> str:
        step = batch.step(row)
        if self.cfg.teacher_context == "prefix":
            skill = "\n".join(skills[c] for c in ("episode", "step") if c in skills)
            return PRIVILEGED_PREFIX.format(skill=skill) + step.prompt
        return ctx.template.render(step.context, episode_skill=skills.get("episode"), step_skill=skills.get("step"))

    def prepare(self, batch: Batch, ctx: PrepareContext) -> dict[str, Any]:
        metrics = self.grpo.prepare(batch, ctx)  # the GRPO advantage, unchanged
        analyses, routed = self.teacher.skills(batch, ctx)
        prompts = [(row, "teacher", self._teacher_prompt(batch, ctx, row, skills))
                   for row, skills in enumerate(routed) if skills]
        teacher = score_teacher(batch, ctx, prompts, self.cfg.score_chunk_rows)
        batch.extras["teacher_logp"] = teacher.get("teacher", torch.zeros_like(batch.old_logp))
        batch.extras["teacher_rows"] = torch.tensor([bool(s) for s in routed], dtype=batch.response_mask.dtype)
        metrics.update(analysis_metrics(batch, analyses, routed, "sdar"))
        active = batch.extras["teacher_rows"][:, None] * batch.response_mask
        ctx.details.update(analyses=analyses, routed=routed,
                           teacher_terms={"teacher": (batch.extras["teacher_logp"] - batch.old_logp) * active})
        metrics["sdar/teacher_active_token_ratio"] = (active.sum() / batch.response_mask.sum().clamp(min=1)).item()
        dump_skills(Path(ctx.run_dir) / "skills.jsonl", ctx.update, batch, analyses, routed)
        return metrics

    def extra_loss(self, batch: Batch, logp: torch.Tensor) -> tuple[torch.Tensor | None, dict[str, float]]:
        mask = batch.extras["teacher_rows"].to(logp)[:, None] * batch.response_mask.to(logp)
        if mask.sum() == 0:
            return None, {}
        weight = batch.extras.get("token_weight", batch.response_mask)  # the learner's loss weights (token mean: the mask)
        return sdar_loss(logp, batch.extras["teacher_logp"].to(logp), mask, weight.to(logp), self.cfg.coef,
                         self.cfg.beta, self.cfg.gate)

    def finish_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return share_means(metrics)
