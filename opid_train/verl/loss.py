"""SDAR's gated loss inside verl's actor update: verl's own PPO loss plus opid's `sdar_loss`.

verl's policy-loss registry (`register_policy_loss`) is not enough for SDAR: a registered policy
loss is called with old/new log-probs, advantages, mask and config only, never with other batch
fields, and SDAR needs the teacher's log-probs. The seam that sees the whole micro-batch is the
actor worker's loss function (`ActorRolloutRefWorker.set_loss_fn`, the one verl's own distillation
loss uses): `SdarPPOLoss` calls verl's `ppo_loss` (clipped surrogate, KL, entropy as configured) and
adds coef * token_mean(g * (T - logp)) over the loss's tokens (0 on rows without a teacher), from the fields the
advantage step wrote next to the advantages (`sdar_fields`).

verl sums micro-batch losses and averages over data-parallel ranks; the SDAR term of a micro-batch
is scaled by the micro-batch's share of the mini-batch under verl's own aggregation (`agg_loss` of
ones), which is how the local learner weighs each micro-batch's loss, so both backends take the same
gradient step (`tests/verl/test_verl_fsdp_engine_cpu.py` runs it in verl's FSDP engine, and
`test_verl_fsdp_engine_two_ranks.py` on two ranks). The sdar/* metrics are shares of the same tokens,
weighed the same way; the trainer turns them into the local learner's means (`sdar.share_means`).
"""

from __future__ import annotations

import torch

from opid_train.algorithms.config import SDARConfig
from opid_train.algorithms.sdar import sdar_loss

TEACHER_LOGP = "opid_teacher_log_probs"  # T_t per response token (0 where no teacher)
TEACHER_MASK = "opid_teacher_mask"  # 1 on response tokens of rows that had a teacher


def sdar_fields(extras: dict[str, torch.Tensor], response_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-token fields the actor's SDAR loss reads, from the SDAR advantage step's per-row extras
    (`teacher_logp` [R, T], `teacher_rows` [R]) on verl's padded rows."""
    mask = response_mask.float()
    return {TEACHER_LOGP: extras["teacher_logp"].float() * mask,
            TEACHER_MASK: extras["teacher_rows"].float()[:, None] * mask}


class SdarPPOLoss:
    """verl's `ppo_loss` + SDAR's gated term; picklable, so the trainer can hand it to the actor workers."""

    def __init__(self, actor_config, sdar: SDARConfig):
        self.config, self.sdar = actor_config, sdar

    def __call__(self, model_output, data, dp_group=None):
        from verl.trainer.ppo.core_algos import agg_loss
        from verl.utils.metric import AggregationType, Metric
        from verl.workers.utils.losses import ppo_loss
        from verl.workers.utils.padding import no_padding_2_padding

        loss, metrics = ppo_loss(self.config, model_output, data, dp_group)  # sets config.global_batch_info
        fields = data.select("response_mask", TEACHER_LOGP, TEACHER_MASK).to_padded_tensor()
        log_prob = no_padding_2_padding(model_output["log_probs"], data)
        # a micro-batch without teacher rows gives a zero term and zero metrics: it still reports them, as verl
        # aggregates each metric over the data-parallel ranks position by position (lists of one length)
        term, sdar_metrics = sdar_loss(log_prob, fields[TEACHER_LOGP].to(log_prob.dtype),
                                       fields[TEACHER_MASK].to(log_prob.dtype), fields["response_mask"].to(log_prob.dtype),
                                       self.sdar.coef, self.sdar.beta, self.sdar.gate)
        share = agg_loss(loss_mat=torch.ones_like(log_prob), loss_mask=fields["response_mask"].bool(),
                         loss_agg_mode=self.config.loss_agg_mode, **self.config.global_batch_info)
        # weighed by the share and summed, as verl reports its pg_loss: the local learner's token-weighted means
        metrics.update(Metric.from_dict({k: v * float(share) for k, v in sdar_metrics.items()},
                                        aggregation=AggregationType.SUM))
        return loss + term * share, metrics
