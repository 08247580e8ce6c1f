"""Parity: one batch through the local learner's advantage step and through the verl backend's gives the
same advantages (GRPO, OPID with its teacher pass, SDAR's teacher log-probs), and verl's PPO loss and KL
on them equal opid's, to float tolerance."""

from __future__ import annotations

import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it

import torch

from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.algorithms.grpo import low_var_kl, ppo_clip_loss
from opid_train.config import TrainConfig, with_overrides
from opid_train.learner import make_batch
from opid_train.learning_signal import rollout_metrics
from opid_train.verl.advantage import compute_advantages
from tests.train.toy_expert import EXPERT_ID
from tests.verl.conftest import verl_batch, verl_config
from wrappers import agent_config


def local_rows(trajectories, batch):
    """(uid, session, t) -> the local Batch row."""
    return {(f"group-{trajectories[i].group_id}", trajectories[i].traj_id, t): r for r, (i, t) in enumerate(batch.rows)}


CONFIGS = {
    "grpo": {"algo": "grpo", "grpo.invalid_action_penalty": 0.05},
    "grpo_mean_norm": {"algo": "grpo", "grpo.normalize_std": False},
    "opid": {"algo": "opid", "opid.w_ep": 0.1, "opid.w_step": 0.1},
    "sdar": {"algo": "sdar"},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_verl_advantage_step_equals_the_local_learners(name, trajectories, tiny_policy, tmp_path):
    cfg = with_overrides(TrainConfig(), CONFIGS[name])
    template = agent_config(EXPERT_ID).template
    local = make_batch(trajectories)
    local_metrics = make_algorithm(cfg.algo, cfg).prepare(local, PrepareContext(tiny_policy, template,
                                                                                tmp_path / "local", 0))
    local_metrics.update(rollout_metrics(trajectories))  # what the local trainer adds for the update

    data = verl_batch(trajectories, tiny_policy.pad_id)
    advantages, metrics, extras, _ = compute_advantages(
        data, make_algorithm(cfg.algo, cfg), PrepareContext(tiny_policy, template, tmp_path / "verl", 0))

    where = local_rows(trajectories, local)
    checked = 0
    for i, rec in enumerate(data.non_tensor_batch["opid"]):
        if rec is None:
            assert advantages[i].abs().sum() == 0  # a padding row carries no advantage
            continue
        r = where[(rec["traj"]["uid"], rec["traj"]["session"], rec["t"])]
        n = int(local.response_mask[r].sum())
        torch.testing.assert_close(advantages[i, :n], local.advantages[r, :n], rtol=1e-6, atol=1e-7)
        assert advantages[i, n:].abs().sum() == 0
        for key, value in local.extras.items():
            torch.testing.assert_close(extras[key][i, :n] if value.dim() > 1 else extras[key][i],
                                       value[r, :n] if value.dim() > 1 else value[r], rtol=1e-6, atol=1e-7)
        checked += 1
    assert checked == len(local) and local.advantages.abs().sum() > 0
    assert metrics.keys() == local_metrics.keys()  # the same names in metrics.jsonl
    for key, value in local_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    if name == "opid":
        assert metrics["opid/teacher_active_token_ratio"] > 0  # the teacher pass ran on skill prompts


def test_verls_ppo_loss_and_kl_equal_opids(trajectories, tiny_policy, tmp_path):
    """The loss verl's actor minimises with these advantages is the local learner's (token-mean, clip 0.2,
    low_var_kl), so the two backends optimise the same objective."""
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla, kl_penalty
    from verl.utils.config import omega_conf_to_dataclass

    cfg = TrainConfig()
    batch = make_batch(trajectories)
    make_algorithm("grpo", cfg).prepare(batch, PrepareContext(tiny_policy, None, tmp_path, 0))
    gen = torch.Generator().manual_seed(0)
    logp = batch.old_logp + 0.1 * torch.randn(batch.old_logp.shape, generator=gen) * batch.response_mask
    ref = batch.old_logp + 0.1 * torch.randn(batch.old_logp.shape, generator=gen) * batch.response_mask
    local_loss, _ = ppo_clip_loss(logp, batch.old_logp, batch.advantages, batch.response_mask, cfg.grpo.clip_eps)

    actor = omega_conf_to_dataclass(verl_config().actor_rollout_ref.actor)
    assert actor.clip_ratio == cfg.grpo.clip_eps and actor.kl_loss_coef == cfg.grpo.kl_coef
    verl_loss, _ = compute_policy_loss_vanilla(batch.old_logp, logp, batch.advantages, batch.response_mask,
                                               loss_agg_mode=actor.loss_agg_mode, config=actor)
    torch.testing.assert_close(verl_loss, local_loss, rtol=1e-6, atol=1e-7)
    verl_kl = kl_penalty(logp, ref, actor.kl_loss_type)
    torch.testing.assert_close(verl_kl * batch.response_mask, low_var_kl(logp, ref) * batch.response_mask)


def test_dual_clip_equals_verls_compute_policy_loss_vanilla():
    """Dual-clip PPO as the reference runs it (the preset's actor.clip_ratio_c 3.0): verl's loss, gradient
    and clip shares equal the local learner's, on ratios far above 3 and log-ratios past verl's clamp at 20."""
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla
    from verl.utils.config import omega_conf_to_dataclass

    actor = omega_conf_to_dataclass(verl_config().actor_rollout_ref.actor)
    assert actor.clip_ratio_c == 3.0
    gen = torch.Generator().manual_seed(1)
    old = torch.randn(6, 9, generator=gen)
    log_ratio = 1.5 * torch.randn(6, 9, generator=gen)
    log_ratio[0, :2] = torch.tensor([25.0, -25.0])  # past the clamp
    adv, mask = torch.randn(6, 9, generator=gen), (torch.rand(6, 9, generator=gen) > 0.2).float()
    adv[0, :2] = -1.0
    assert ((log_ratio.exp() > 3) & (adv < 0) & (mask > 0)).sum() >= 5
    logp = (old + log_ratio).requires_grad_()
    verl_loss, verl_metrics = compute_policy_loss_vanilla(old, logp, adv, mask, loss_agg_mode=actor.loss_agg_mode,
                                                          config=actor)
    (verl_grad,) = torch.autograd.grad(verl_loss, logp)
    local_loss, local_metrics = ppo_clip_loss(logp, old, adv, mask, actor.clip_ratio, actor.clip_ratio_c)
    (local_grad,) = torch.autograd.grad(local_loss, logp)
    torch.testing.assert_close(local_loss, verl_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(local_grad, verl_grad, rtol=1e-6, atol=1e-7)
    assert local_metrics["pg_clipfrac_lower"] == pytest.approx(verl_metrics["actor/pg_clipfrac_lower"])
    assert local_metrics["pg_clipfrac_lower"] > 0
    assert local_metrics["pg_clipfrac"] == pytest.approx(verl_metrics["actor/pg_clipfrac"])
    off_loss, _ = ppo_clip_loss(logp, old, adv, mask, actor.clip_ratio)
    assert off_loss.item() > verl_loss.item() + 0.1  # without dual clip these inputs' loss is not verl's


def test_verls_padding_rows_carry_a_copied_record_that_the_advantage_step_drops(trajectories, tiny_policy, tmp_path):
    """verl pads a batch to a multiple of the GPUs with copies of its first row, extra_fields included;
    read naively, that copy is a repeated step and the advantage step refuses the batch."""
    import numpy as np
    from verl.trainer.ppo.padding_utils import construct_minimal_padding_template

    from opid_train.verl.advantage import step_records

    data = verl_batch(trajectories, tiny_policy.pad_id)
    assert data.non_tensor_batch["opid"][-1] is None and data.batch["response_mask"][-1].sum() == 0
    first = {"prompts": data.batch["prompts"][0], "responses": data.batch["responses"][0],
             "extra_fields": {"opid": data.non_tensor_batch["opid"][0]}}
    pad, pad_tag = construct_minimal_padding_template(first, {}, tiny_policy.pad_id)
    assert pad["extra_fields"] == first["extra_fields"] and pad_tag["is_padding"]
    assert step_records([first["extra_fields"], pad["extra_fields"]], [{}, pad_tag]) == [first["extra_fields"]["opid"], None]
    naive = np.empty(len(data), dtype=object)
    naive[:] = [*data.non_tensor_batch["opid"][:-1], pad["extra_fields"]["opid"]]
    data.non_tensor_batch["opid"] = naive
    cfg = TrainConfig()
    with pytest.raises(ValueError, match="missing or repeated"):
        compute_advantages(data, make_algorithm("grpo", cfg),
                           PrepareContext(tiny_policy, agent_config(EXPERT_ID).template, tmp_path, 0))
