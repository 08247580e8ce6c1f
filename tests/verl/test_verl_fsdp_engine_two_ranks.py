"""verl's real actor worker on TWO data-parallel ranks: two processes (torch.multiprocessing spawn) in one gloo
group, each with its own `ActorRolloutRefWorker` (role "actor", verl's FSDP engine, FSDP1 strategy "fsdp" as the
presets), as verl's Ray worker group runs one per GPU. On GPUs every run has several ranks, and there the ranks
must agree: verl all-reduces the token count each micro-batch's loss is scaled by, averages the gradients,
all-gathers the metrics and refuses a metric the ranks reported a different number of times
(`Metric.aggregate_dp`).

Each process applies the CPU patches of `test_verl_fsdp_engine_cpu.py` (`cpu_patches`: the same eight
replacements of GPU-only calls, no other stand-in; the FSDP broadcast left off there is not needed on two ranks
either, as every rank loads the tiny policy's weights itself). The parent builds the rows once and hands each
rank its share as verl's dispatch splits a batch (`BatchData.chunk`): the step rows of
`test_verl_fsdp_engine_cpu.py` plus verl's padding rows to an even count, ordered as verl's `_balance_batch`
orders them (equal row counts balanced by sequence length; the ranks' token counts differ). All jobs run in one
spawn (~20 s here), so that the processes start once:

1. `compute_log_prob`: each rank's log-probs are the tiny policy's own scoring of its rows.
2. `update_actor` with verl's `ppo_loss`, the batch as one mini-batch, dynamic micro-batches: the weights after
   the step, and loss / pg_loss / kl_loss / grad_norm as verl aggregates them over the ranks, are the local
   learner's single-process GRPO step on the whole batch.
3. `update_actor` with opid's `SdarPPOLoss` (`set_loss_fn`), a quarter of the rows with a teacher, rank 0 with
   none of them (or with one: then, before `SdarPPOLoss` reported zeros for micro-batches without a teacher
   row, verl raised ValueError "[1, 7]" in `aggregate_dp`; with none, rank 1's sdar/* were reported alone,
   gate_mean 0.50 instead of 0.13): the step and the sdar/* metrics over both ranks are the local learner's
   SDAR step, verl in its dynamic micro-batches, the local learner in micro-batches of 3 rows. (Writing this
   found SDAR's term depending on the micro-batch split in both backends: a mean over each micro-batch's
   teacher tokens, micro_batch_size 1 or 1000 gave sdar/gate_mean 0.13 or 0.50 on these rows; it is now
   averaged over all the loss's tokens, `test_the_local_sdar_step_does_not_depend_on_the_micro_batches`.)

The full weights are gathered without torch's offload to CPU (`gathered_weights`). Not run here: more than two
ranks, FSDP2, param/optimizer offload, the reference worker (see `test_verl_fsdp_engine_cpu.py`), the weight
sync, the teacher pass's padding to the ranks (`ActorScorer.rows_multiple`).
"""

from __future__ import annotations

import copy
import os
import socket

import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it

import torch

from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.algorithms.sdar import share_means
from opid_train.config import with_overrides
from opid_train.learner import Learner, make_batch
from opid_train.verl.advantage import compute_advantages
from tests.verl.conftest import verl_batch, verl_config
from tests.verl.test_verl_fsdp_engine_cpu import (CPU_SETTINGS, assign, cpu_patches, engine_rows,
                                                  off_policy_rows, prompt_ids, reference_policy)

pytestmark = pytest.mark.slow
RANKS = 2
LR = 1e-6  # the preset's actor learning rate (checked in `local_config`)
SDAR_SETTINGS = ["opid.analyzer.backend=offline", "opid.sdar.coef=0.5", "opid.sdar.beta=2.0",
                 # one critical step per episode and the teacher there only: a quarter of the rows have a teacher
                 "opid.analyzer.max_step_skills=1", "+opid.sdar.routing=step_only"]


def rank_main(rank: int, port: int, jobs_file: str, out_dir: str) -> None:
    """One data-parallel rank (a spawned process): the CPU patches, the gloo group as verl's Ray worker group
    sets up its environment, then per job a fresh actor worker over its share of the rows."""
    import torch.distributed as dist
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl.workers.utils.padding import response_from_nested

    os.environ.update(WORLD_SIZE=str(RANKS), RANK=str(rank), LOCAL_WORLD_SIZE=str(RANKS), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), REDIS_STORE_SERVER_HOST="127.0.0.1")
    torch.set_num_threads(1)  # two processes on the machine's cores
    cpu_patches(setattr)
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=RANKS)
    try:
        results = {}
        for name, job in torch.load(jobs_file, weights_only=False).items():
            worker = ActorRolloutRefWorker(job["cfg"].actor_rollout_ref, role="actor")
            worker.init_model()
            if job.get("loss_fn") is not None:
                worker.set_loss_fn(job["loss_fn"])
            rows = job["shares"][rank]
            if name == "log_prob":
                out = worker.compute_log_prob(rows)
                results[name] = response_from_nested(out["log_probs"], rows["response_mask"]).to_padded_tensor(0.0)
            else:
                out = worker.update_actor(rows)
                results[name] = {"metrics": out["metrics"], "weights": gathered_weights(worker)}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def gathered_weights(worker) -> dict[str, torch.Tensor]:
    """The full weights, gathered from both ranks' shards (on rank 0; empty on rank 1). Not through torch's
    offload to CPU (`full_weights`' default): on a CPU it frees the gathered parameters it means to copy
    (torch/distributed/fsdp/_flat_param.py:1750, `to_cpu`: the copy is the same storage); a 1-rank group does
    not shard its parameters, so `full_weights` never goes there."""
    from verl.utils.fsdp_utils import get_fsdp_full_state_dict

    state = get_fsdp_full_state_dict(worker.actor.engine.module, offload_to_cpu=False)
    return {k: v.detach().clone() for k, v in state.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def even_rows(trajectories, pad_id: int):
    """`verl_batch`'s rows (step rows and a padding row) with one more padding row: verl pads a batch to a
    multiple of the data-parallel size with such rows."""
    from verl.protocol import DataProto

    data = verl_batch(trajectories, pad_id)
    return DataProto.concat([data, data[len(data) - 1:]])


def balanced_order(data) -> list[int]:
    """The row order of verl's `_balance_batch`: equal row counts per rank, balanced by sequence length."""
    from verl.utils.seqlen_balancing import calculate_workload, get_seqlen_balanced_partitions

    seq_len = data.batch["attention_mask"].sum(1)
    parts = get_seqlen_balanced_partitions(calculate_workload(seq_len), k_partitions=RANKS, equal_size=True)
    return [j for part in parts for j in part]


def dispatched(data, fields, order, **info):
    """The ranks' shares of the rows in `order`, as verl's dispatch splits the batch it is handed."""
    from verl.protocol import BatchData

    data = data.select_idxs(order)
    rows = assign(engine_rows(data, {k: v[order] for k, v in fields.items()}), **info)
    return BatchData(rows).chunk(RANKS), data


def actor_config(model_dir, overrides=()):
    """The composed config (`verl_config`) with the actor loaded from `model_dir`, set after composing as
    `engine_worker` sets it (composed with it, the preset would take the folder for opid's tiny policy's
    parity mode)."""
    from omegaconf import open_dict

    cfg = verl_config([*CPU_SETTINGS, *overrides])
    with open_dict(cfg):
        cfg.actor_rollout_ref.model.path = str(model_dir)
    return cfg


def local_config(cfg, micro_batch_size: int):
    """opid's config of `cfg` with verl's optimizer and PPO settings, as `one_update_both_ways` sets them."""
    from omegaconf import OmegaConf

    from opid_train.verl.config import opid_config

    actor = cfg.actor_rollout_ref.actor
    assert actor.optim.lr == LR and actor.use_kl_loss and actor.kl_loss_type == "low_var_kl"
    return with_overrides(opid_config(OmegaConf.to_container(cfg.opid, resolve=True)),
                          {"lr": actor.optim.lr, "weight_decay": actor.optim.weight_decay,
                           "max_grad_norm": actor.optim.clip_grad, "grpo.clip_eps": actor.clip_ratio,
                           "grpo.kl_coef": actor.kl_loss_coef, "ppo_epochs": 1, "minibatch_size": 1000,
                           "micro_batch_size": micro_batch_size})


def update_job(algo, policy, reference, trajectories, model_dir, tmp_path, overrides=(), micro_batch_size=3,
               teacher_rows_on_rank0=None):
    """(the job of one update on both ranks, the local learner's step on the whole batch: weights, metrics).
    The rows go to the ranks in `_balance_batch`'s order, or, with `teacher_rows_on_rank0` set, rank 0 gets that
    many of the rows with a teacher and rows without one, rank 1 the rest."""
    from verl.utils.config import omega_conf_to_dataclass

    from opid_train.rollout import resolve_env_id
    from opid_train.verl.agent_loop import run_agent_config
    from opid_train.verl.loss import TEACHER_MASK, SdarPPOLoss, sdar_fields

    cfg = actor_config(model_dir, [f"opid.algo={algo}", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=800",
                                   *overrides])
    actor, train = cfg.actor_rollout_ref.actor, local_config(cfg, micro_batch_size)
    template = run_agent_config(cfg, resolve_env_id(train.env)).template
    data = even_rows(trajectories, policy.pad_id)
    advantages, _, extras, _ = compute_advantages(data, make_algorithm(algo, train),
                                                  PrepareContext(policy, template, tmp_path / f"verl-{algo}", 0))
    fields = {"old_log_probs": data.batch["rollout_log_probs"], "advantages": advantages,
              "ref_log_prob": reference.score(prompt_ids(data), data.batch["responses"], data.batch["response_mask"])}
    if algo == "sdar":
        fields.update(sdar_fields(extras, data.batch["response_mask"]))
    if teacher_rows_on_rank0 is None:
        order = balanced_order(data)
    else:
        has_teacher = (fields[TEACHER_MASK].sum(1) > 0).tolist()
        with_teacher = [i for i, yes in enumerate(has_teacher) if yes]
        without = [i for i, yes in enumerate(has_teacher) if not yes]
        rank0 = with_teacher[:teacher_rows_on_rank0] + without[:len(data) // RANKS - teacher_rows_on_rank0]
        order = rank0 + [i for i in range(len(data)) if i not in rank0]
    shares, _ = dispatched(data, fields, order, calculate_entropy=False, distillation_use_topk=False,
                           distillation_only=False, global_batch_size=len(data), mini_batch_size=len(data),
                           epochs=1, seed=actor.data_loader_seed, dataloader_kwargs={"shuffle": actor.shuffle},
                           temperature=cfg.actor_rollout_ref.rollout.temperature)
    loss_fn = SdarPPOLoss(omega_conf_to_dataclass(actor), train.sdar) if algo == "sdar" else None

    local = copy.deepcopy(policy)
    learner = Learner(local, make_algorithm(algo, train), train, reference=reference)
    metrics = learner.update(make_batch(trajectories), PrepareContext(local, template, tmp_path / f"local-{algo}", 0))
    return {"cfg": cfg, "shares": shares, "loss_fn": loss_fn}, (local.model.state_dict(), metrics)


@pytest.fixture(scope="module")
def two_ranks(tiny_policy, trajectories, tmp_path_factory):
    """The jobs (module docstring) run on two ranks: (jobs, the ranks' results, the local learner's
    steps, the log-prob job's rows in the ranks' order)."""
    import torch.multiprocessing as mp

    tmp_path = tmp_path_factory.mktemp("two-ranks")
    model_dir = tmp_path / "model"
    tiny_policy.save(model_dir)
    rows = off_policy_rows(trajectories)
    reference = reference_policy(tiny_policy)

    data = even_rows(rows, tiny_policy.pad_id)
    log_prob_cfg = actor_config(model_dir)
    shares, ordered = dispatched(data, {}, balanced_order(data), calculate_entropy=True, compute_loss=False,
                                 temperature=log_prob_cfg.actor_rollout_ref.rollout.temperature)
    jobs, local = {"log_prob": {"cfg": log_prob_cfg, "shares": shares}}, {}
    jobs["ppo"], local["ppo"] = update_job("grpo", tiny_policy, reference, rows, model_dir, tmp_path)
    for name, on_rank0 in (("sdar", 0), ("sdar_both_ranks", 1)):
        jobs[name], local[name] = update_job("sdar", tiny_policy, reference, rows, model_dir, tmp_path / name,
                                             SDAR_SETTINGS, teacher_rows_on_rank0=on_rank0)
    torch.save(jobs, tmp_path / "jobs.pt")
    mp.spawn(rank_main, args=(free_port(), str(tmp_path / "jobs.pt"), str(tmp_path)), nprocs=RANKS, join=True)
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(RANKS)]
    return jobs, results, local, ordered


def test_each_rank_scores_its_share_as_the_tiny_policy(two_ranks, tiny_policy):
    """`compute_log_prob` (entropy on, no loss) on each rank's share: the tiny policy's log-probs on every row."""
    jobs, results, _, data = two_ranks
    sizes = [len(share) for share in jobs["log_prob"]["shares"]]
    assert sizes == [len(data) // RANKS] * RANKS
    width = data.batch["responses"].shape[1]
    logp = torch.cat([torch.nn.functional.pad(r["log_prob"], (0, width - r["log_prob"].shape[1])) for r in results])
    mask = data.batch["response_mask"].float()
    expected = tiny_policy.score(prompt_ids(data), data.batch["responses"], data.batch["response_mask"])
    assert all(share_mask.sum() > 50 for share_mask in mask.split(sizes))
    torch.testing.assert_close(logp * mask, expected * mask, rtol=1e-5, atol=1e-5)


def assert_same_step(result, local_weights, local_metrics, before):
    """Every weight moved by verl's step and is the local learner's (Adam's first step moves each by about the
    learning rate: to 1% of it); loss, pg_loss, kl_loss and grad_norm as verl aggregates them are the learner's."""
    metrics, after = result["metrics"], result["weights"]
    assert all((after[k] - before[k]).abs().max() > LR / 2 for k in after)
    for name, value in after.items():
        torch.testing.assert_close(value, local_weights[name], rtol=0, atol=LR / 100, msg=name)
    assert metrics["loss"] == [pytest.approx(local_metrics["loss"], rel=1e-5)]
    assert metrics["actor/pg_loss"] == [pytest.approx(local_metrics["pg_loss"], rel=1e-5)]
    assert metrics["kl_loss"] == [pytest.approx(local_metrics["kl"], rel=1e-5)]
    assert metrics["grad_norm"] == [pytest.approx(local_metrics["grad_norm"], rel=1e-4)]


def token_counts(shares) -> list[float]:
    return [float(share["loss_mask"].values().sum()) for share in shares]


def test_ppo_step_on_two_ranks_is_the_local_learners(two_ranks, tiny_policy):
    """verl's `ppo_loss` with each rank on half of the rows (uneven token counts): verl scales each micro-batch by
    the tokens of both ranks and averages the gradients; the step is the local learner's on the whole batch."""
    jobs, results, local, _ = two_ranks
    tokens = token_counts(jobs["ppo"]["shares"])
    assert tokens[0] != tokens[1] and min(tokens) > 100
    assert results[1]["ppo"]["metrics"]["loss"] == results[0]["ppo"]["metrics"]["loss"]  # all-reduced
    local_weights, local_metrics = local["ppo"]
    assert local_metrics["pg_clipfrac"] > 0.1 and local_metrics["pg_clipfrac_lower"] > 0 and local_metrics["kl"] > 0
    assert_same_step(results[0]["ppo"], local_weights, local_metrics, tiny_policy.model.state_dict())


@pytest.mark.parametrize("job, rank0_teacher_rows", [("sdar", 0), ("sdar_both_ranks", 1)])
def test_sdar_step_on_two_ranks_is_the_local_learners(two_ranks, tiny_policy, job, rank0_teacher_rows):
    """`SdarPPOLoss` when rank 0's rows have no teacher row (or one) and rank 1's have the others: the step runs,
    is the local learner's SDAR step on the whole batch, and the sdar/* metrics over both ranks are the learner's
    (a micro-batch without a teacher row reports zeros, weighed by its share of the tokens: before it reported
    nothing, and verl refused the ranks' lists of different lengths)."""
    from opid_train.verl.loss import TEACHER_MASK

    jobs, results, local, _ = two_ranks
    teacher_rows = [sum(int(share[TEACHER_MASK][i].sum() > 0) for i in range(len(share)))
                    for share in jobs[job]["shares"]]
    assert teacher_rows[0] == rank0_teacher_rows and teacher_rows[1] > 2
    local_weights, local_metrics = local[job]
    metrics = results[0][job]["metrics"]
    assert 0 < local_metrics["sdar/teacher_active_token_ratio"] < 0.5
    means = share_means({key: value[0] for key, value in metrics.items() if key.startswith("sdar/")})  # as logged
    for key in ("sdar/gate_mean", "sdar/gap_mean", "sdar/loss", "sdar/gate_active_ratio"):
        assert means[key] == pytest.approx(local_metrics[key], rel=1e-4, abs=1e-7), key
    assert_same_step(results[0][job], local_weights, local_metrics, tiny_policy.model.state_dict())


def test_the_local_sdar_step_does_not_depend_on_the_micro_batches(tiny_policy, trajectories, tmp_path):
    """The learner's premise (`test_gradient_accumulation_does_not_change_the_step`, GRPO's): micro-batches of
    one row or one of all rows take the same SDAR step, with a quarter of the rows having a teacher (it failed
    before SDAR's term was averaged over all the loss's tokens: sdar/gate_mean 0.13 against 0.50)."""
    from opid_train.rollout import resolve_env_id
    from opid_train.verl.agent_loop import run_agent_config

    cfg = verl_config([*CPU_SETTINGS, "opid.algo=sdar", *SDAR_SETTINGS])
    reference, rows = reference_policy(tiny_policy), off_policy_rows(trajectories)
    steps = []
    for micro_batch_size in (1, 1000):
        train = local_config(cfg, micro_batch_size)
        template = run_agent_config(cfg, resolve_env_id(train.env)).template
        local = copy.deepcopy(tiny_policy)
        learner = Learner(local, make_algorithm("sdar", train), train, reference=reference)
        ctx = PrepareContext(local, template, tmp_path / str(micro_batch_size), 0)
        steps.append(learner.update(make_batch(rows), ctx))
    assert 0 < steps[0]["sdar/teacher_active_token_ratio"] < 0.5
    for key in ("sdar/gate_mean", "sdar/loss", "loss", "grad_norm"):
        assert steps[0][key] == pytest.approx(steps[1][key], rel=1e-4), key
