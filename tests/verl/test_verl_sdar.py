"""SDAR on verl: the actor's loss function (verl's `ppo_loss` + opid's gated term, `SdarPPOLoss`) on a
micro-batch in verl's no-padding layout equals the local learner's GRPO + KL + SDAR loss on the same
rows, in value and in gradient, whole and split into micro-batches; and the rows verl pads a batch
with never reach the algorithm."""

from __future__ import annotations

import functools

import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it

import torch

from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.algorithms.grpo import low_var_kl, masked_mean, ppo_clip_loss
from opid_train.config import TrainConfig, with_overrides
from opid_train.learner import make_batch
from opid_train.verl.advantage import compute_advantages
from opid_train.verl.loss import TEACHER_LOGP, TEACHER_MASK, SdarPPOLoss, sdar_fields
from tests.train.toy_expert import EXPERT_ID
from tests.verl.conftest import verl_batch, verl_config
from wrappers import agent_config

# a teacher active on every row and a gate that is not saturated, so every term of the loss matters
SDAR = {"algo": "sdar", "sdar.coef": 0.5, "sdar.beta": 2.0}


@pytest.fixture(scope="module")
def prepared(trajectories, tiny_policy, tmp_path_factory):
    """(local Batch after SDAR's prepare, verl's DataProto, verl-row advantages, verl-row extras, config)."""
    cfg = with_overrides(TrainConfig(), SDAR)
    template = agent_config(EXPERT_ID).template
    tmp = tmp_path_factory.mktemp("sdar")
    local = make_batch(trajectories)
    make_algorithm("sdar", cfg).prepare(local, PrepareContext(tiny_policy, template, tmp / "local", 0))
    data = verl_batch(trajectories, tiny_policy.pad_id)
    advantages, _, extras, _ = compute_advantages(data, make_algorithm("sdar", cfg),
                                               PrepareContext(tiny_policy, template, tmp / "verl", 0))
    assert local.extras["teacher_rows"].sum() > 0  # the teacher pass ran
    return local, data, advantages, extras, cfg


def perturbed(base: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return base + 0.2 * torch.randn(base.shape, generator=gen) * mask


def local_loss(batch, rows, logp, ref, cfg, algorithm) -> torch.Tensor:
    """The local learner's loss on `rows` (one micro-batch): clipped surrogate + kl_coef * KL + SDAR."""
    micro = batch.select(rows)
    mask = micro.response_mask.float()
    loss, _ = ppo_clip_loss(logp[rows], micro.old_logp, micro.advantages, mask, cfg.grpo.clip_eps)
    loss = loss + cfg.grpo.kl_coef * masked_mean(low_var_kl(logp[rows], ref[rows]), mask)
    extra, _ = algorithm.extra_loss(micro, logp[rows])
    return loss + extra


def verl_micro_batch(data, rows, logp, ref, advantages, extras, batch_tokens: int, batch_rows: int):
    """verl's micro-batch as its FSDP engine hands it to the loss function: nested (no-padding) fields,
    log-probs over prompt + response shifted by one, the global batch info as non-tensor data."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    def nested(values):
        return torch.nested.as_nested_tensor(values, layout=torch.jagged)

    mask = data.batch["response_mask"]
    prompt_mask = data.batch["attention_mask"][:, : data.batch["prompts"].shape[1]]
    fields = {"advantages": advantages, "old_log_probs": data.batch["rollout_log_probs"], "ref_log_prob": ref,
              **sdar_fields(extras, mask)}
    prompts, responses, out, seq_logp = [], [], {k: [] for k in fields}, []
    for i in rows:
        n, p = int(mask[i].sum()), data.batch["prompts"][i][prompt_mask[i] > 0]
        prompts.append(p)
        responses.append(data.batch["responses"][i, :n])
        for key, value in fields.items():
            out[key].append(value[i, :n].float())
        # logits at position j predict token j+1: the response's log-probs sit at [p-1, p-1+n)
        seq_logp.append(torch.cat([torch.zeros(len(p) - 1), logp[i, :n], torch.zeros(1)]))
    td = TensorDict({"prompts": nested(prompts), "responses": nested(responses),
                     "response_mask": nested([mask[i, :int(mask[i].sum())] for i in rows]),
                     **{k: nested(v) for k, v in out.items()}}, batch_size=len(rows))
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=batch_tokens, global_batch_size=batch_rows)
    return td, {"log_probs": torch.cat(seq_logp)}


@functools.lru_cache(maxsize=1)
def actor_config():
    """verl's ActorConfig of the preset (composed once: Hydra takes seconds)."""
    from verl.utils.config import omega_conf_to_dataclass

    return omega_conf_to_dataclass(verl_config().actor_rollout_ref.actor)


def both_losses(prepared, micro_batches):
    """(local loss, its d/d logp; verl's loss, its d/d logp) summed over `micro_batches` of local rows,
    each micro-batch weighted by its share of the tokens as the local learner does."""
    local, data, advantages, extras, cfg = prepared
    algorithm = make_algorithm("sdar", cfg)
    verl_row = {(rec["traj"]["uid"], rec["traj"]["session"], rec["t"]): i
                for i, rec in enumerate(data.non_tensor_batch["opid"]) if rec is not None}
    to_verl = []  # local row -> verl row
    for traj_index, t in local.rows:
        traj = local.trajectories[traj_index]
        to_verl.append(verl_row[(f"group-{traj.group_id}", traj.traj_id, t)])
    mask = local.response_mask.float()
    logp_local = perturbed(local.old_logp, mask, 1).requires_grad_()
    ref_local = perturbed(local.old_logp, mask, 2)
    total = mask.sum()
    loss_local = sum(local_loss(local, rows, logp_local, ref_local, cfg, algorithm) * mask[rows].sum() / total
                     for rows in micro_batches)
    loss_local.backward()

    width = data.batch["response_mask"].shape[1]
    logp_verl = torch.zeros(len(data), width)
    ref_verl = torch.zeros(len(data), width)
    T = local.response_mask.shape[1]
    for r, i in enumerate(to_verl):
        logp_verl[i, :T], ref_verl[i, :T] = logp_local.detach()[r, :width], ref_local[r, :width]
    logp_verl.requires_grad_()
    loss_fn = SdarPPOLoss(actor_config(), cfg.sdar)
    loss_verl = 0
    metrics = {}
    for rows in micro_batches:
        td, model_output = verl_micro_batch(data, [to_verl[r] for r in rows], logp_verl, ref_verl, advantages,
                                            extras, int(total), len(local))
        term, metrics = loss_fn(model_output, td)
        loss_verl = loss_verl + term
    loss_verl.backward()
    grad_verl = torch.stack([logp_verl.grad[i, :T] for i in to_verl])
    return loss_local, logp_local.grad, loss_verl, grad_verl, metrics


@pytest.mark.parametrize("n_micro", [1, 3])
def test_verl_actor_loss_with_sdar_equals_the_local_learners(prepared, n_micro):
    local = prepared[0]
    rows = list(range(len(local)))
    micro_batches = [rows[k::n_micro] for k in range(n_micro)]
    loss_local, grad_local, loss_verl, grad_verl, metrics = both_losses(prepared, micro_batches)
    torch.testing.assert_close(loss_verl, loss_local, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_verl, grad_local, rtol=1e-5, atol=1e-7)
    assert {"sdar/gate_share", "sdar/gap_share", "sdar/teacher_share", "actor/pg_loss", "kl_loss"} <= set(metrics)


def test_the_sdar_term_changes_verls_loss(prepared):
    """Without the teacher fields' mask the verl loss is plain PPO + KL: the SDAR term is really added."""
    local, data, advantages, extras, cfg = prepared
    rows = [i for i, rec in enumerate(data.non_tensor_batch["opid"]) if rec is not None]
    mask = data.batch["response_mask"].float()
    logp = perturbed(data.batch["rollout_log_probs"], mask, 1)
    ref = perturbed(data.batch["rollout_log_probs"], mask, 2)
    loss_fn = SdarPPOLoss(actor_config(), cfg.sdar)
    td, model_output = verl_micro_batch(data, rows, logp, ref, advantages, extras, int(mask.sum()), len(rows))
    with_teacher, _ = loss_fn(model_output, td)
    no_teacher = {**extras, "teacher_rows": torch.zeros_like(extras["teacher_rows"])}
    td, model_output = verl_micro_batch(data, rows, logp, ref, advantages, no_teacher, int(mask.sum()), len(rows))
    plain, metrics = loss_fn(model_output, td)
    assert abs(float(with_teacher - plain)) > 1e-4
    # still reported (as 0): verl aggregates a metric over data-parallel ranks position by position, and a
    # rank whose micro-batch had no teacher row must report as many values as one whose micro-batch had
    for key in ("sdar/teacher_share", "sdar/gate_share", "sdar/gate_active_share", "sdar/gap_share", "sdar/loss"):
        assert metrics[key].values == [0.0], key


def test_sdar_fields_mask_only_teacher_rows_tokens(prepared):
    _, data, _, extras, _ = prepared
    fields = sdar_fields(extras, data.batch["response_mask"])
    expected = extras["teacher_rows"][:, None] * data.batch["response_mask"]
    assert torch.equal(fields[TEACHER_MASK], expected.float())
    assert torch.equal(fields[TEACHER_LOGP], extras["teacher_logp"] * data.batch["response_mask"])
    assert fields[TEACHER_MASK][-1].sum() == 0  # verl's padding row


def test_the_loss_function_survives_the_trip_to_the_actor_workers(prepared):
    """`set_loss_fn` ships the loss to each worker through Ray (cloudpickle); the copy computes the same loss."""
    import cloudpickle

    local, data, advantages, extras, cfg = prepared
    rows = [i for i, rec in enumerate(data.non_tensor_batch["opid"]) if rec is not None]
    mask = data.batch["response_mask"].float()
    logp, ref = perturbed(data.batch["rollout_log_probs"], mask, 1), perturbed(data.batch["rollout_log_probs"], mask, 2)
    loss_fn = SdarPPOLoss(actor_config(), cfg.sdar)
    copy = cloudpickle.loads(cloudpickle.dumps(loss_fn))
    td, model_output = verl_micro_batch(data, rows, logp, ref, advantages, extras, int(mask.sum()), len(rows))
    assert torch.equal(copy(model_output, td)[0], loss_fn(model_output, td)[0])
