"""Parity: one batch through the local learner's advantage step and through the verl backend's gives the
same advantages (GRPO, OPID with its teacher pass, SDAR's teacher log-probs), and verl's PPO loss and KL
on them equal opid's, to float tolerance."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it

import torch

from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.algorithms.grpo import low_var_kl, ppo_clip_loss
from opid_train.config import TrainConfig, with_overrides
from opid_train.learner import make_batch
from opid_train.rollout import EnvPool, collect
from opid_train.verl.advantage import compute_advantages
from opid_train.verl.agent_loop import step_output
from tests.train.toy_expert import EXPERT_ID
from tests.verl.conftest import verl_config
from wrappers import agent_config


@pytest.fixture(scope="module")
def trajectories(tiny_policy):
    pool = EnvPool(EXPERT_ID, 8, {"max_steps": 4})
    try:
        return collect(tiny_policy, pool, [("train", 0), ("train", 1)], 4, seed=5, max_new_tokens=12, progress=False)
    finally:
        pool.close()


def traj_info(traj) -> dict:
    return {"env_id": traj.env_id, "split": traj.split, "task": traj.task, "task_id": traj.task_id,
            "task_type": traj.task_type, "score": traj.score, "won": traj.won,
            "uid": f"group-{traj.group_id}", "session": traj.traj_id}


def verl_batch(trajectories, pad_id: int, seed: int = 0):
    """The rows as verl's v1 trainer holds them: one AgentLoopOutput per step (the agent loop's own
    `step_output`) through verl's `as_dict`, prompts left- and responses right-padded, rows shuffled,
    plus one padding row without a record (verl adds such rows to divide a batch over GPUs)."""
    from tensordict import TensorDict
    from verl.protocol import DataProto

    rows = [step_output(step, traj_info(traj)).as_dict() for traj in trajectories for step in traj.steps]
    random.Random(seed).shuffle(rows)
    rows.append({**rows[0], "extra_fields": {"opid": None}})
    P = max(len(r["prompts"]) for r in rows)
    T = max(len(r["responses"]) for r in rows)
    n = len(rows)
    prompts, attention = torch.full((n, P + T), pad_id), torch.zeros((n, P + T), dtype=torch.long)
    responses, mask, logp = torch.full((n, T), pad_id), torch.zeros((n, T), dtype=torch.long), torch.zeros((n, T))
    for i, r in enumerate(rows):
        p, k = len(r["prompts"]), len(r["responses"])
        prompts[i, P - p:P] = r["prompts"]
        attention[i, P - p:P + k] = 1
        responses[i, :k], mask[i, :k], logp[i, :k] = r["responses"], r["response_mask"], r["rollout_log_probs"]
    records = np.empty(n, dtype=object)
    records[:] = [r["extra_fields"]["opid"] for r in rows]
    batch = TensorDict({"prompts": prompts[:, :P], "responses": responses, "response_mask": mask,
                        "attention_mask": attention, "rollout_log_probs": logp}, batch_size=n)
    return DataProto(batch=batch, non_tensor_batch={"opid": records})


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
    make_algorithm(cfg.algo, cfg).prepare(local, PrepareContext(tiny_policy, template, tmp_path / "local", 0))

    data = verl_batch(trajectories, tiny_policy.pad_id)
    advantages, metrics, extras = compute_advantages(
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
