"""verl's real actor worker on CPU: `ActorRolloutRefWorker` (role "actor") builds verl's FSDP engine
(`FSDPEngineWithLMHead`, FSDP1 strategy "fsdp" as opid's presets use) over the tiny policy, loaded by
verl from a Hugging Face folder, in a 1-rank gloo group; its `compute_log_prob` and `update_actor`
run on opid's step rows laid out as verl's TransferQueue holds them (unpadded, nested), and are compared
with the tiny policy's own scoring and the local learner's PPO / SDAR step.

On a machine without an accelerator verl falls back to its CUDA platform (device name "cuda"), so some
calls on this path ask torch.cuda for something. `cpu_engine` replaces exactly those (pytest monkeypatch;
each one was checked to be needed: the tests fail without it). Paths under verl/:

1. workers/engine/fsdp/utils.py:46 `create_device_mesh`: the FSDP mesh on `get_device_name()` (torch
   then calls cuda set_device): on "cpu", a gloo mesh.
2. workers/engine/fsdp/transformer_impl.py `get_device_id()`: FSDP's `device_id` (:441), where the token
   count (:730) and each micro-batch (:1552) go: the CPU.
3. transformer_impl.py `get_device_name()` in `forward_step` (:1550): the autocast device and the dummy
   loss of a forward without loss function (`compute_log_prob`): "cpu".
4. transformer_impl.py:441 FSDP with `sync_module_states=True` broadcasts rank 0's weights, which torch
   refuses for CPU tensors (torch/distributed/fsdp/_init_utils.py:1176); with one rank there is nothing
   to broadcast: the engine's FSDP class is built with it off. (On more ranks too: the tiny policy ties its
   embeddings, so verl loads its weights on every rank, not on rank 0 only: utils/fsdp_utils.py:64.)
5. utils/profiler/performance.py:54 `log_gpu_memory_usage` (transformer_impl.py:609) reads
   torch.cuda.mem_get_info: `get_torch_device()` is torch.cpu there, for which verl logs zeros.
6. utils/flops_counter.py:80, the MFU metric of each step, asks the device's name for its peak FLOPS:
   torch.cpu there too (verl's own "CPU" branch).
7. utils/seqlen_balancing.py:404, the dynamic batch size's micro-batch count all-reduced over the
   data-parallel group in a tensor on `get_device_name()`: "cpu".
8. workers/engine_workers.py:98 `TrainingWorker.device_name`: the device of the loss it reports (:209).
9. transformer_impl.py:886 `save_checkpoint` moves a module whose parameters are on the CPU to the GPU first
   (`load_fsdp_model_to_gpu`, utils/fsdp_utils.py:224 asks torch.cuda for the device id): with no GPU the
   module stays where it is (the checkpoint tests: tests/verl/test_verl_engine_checkpoint_cpu.py and
   test_verl_trainer_tq.py::test_fit_saves_verls_checkpoints_and_a_second_trainer_resumes_from_them).

EngineRegistry needs no patch: it looks the engine up under the same fallback "cuda". Two settings are
the CPU's, not patches: attention by SDPA (`model.override_config.attn_implementation`, verl's default
is flash-attention 2; packed rows are separated by their position ids as under flash-attention) and
fp32 parameters in the forward (`fsdp_config.mixed_precision.param_dtype`, verl's default bf16), so
that the comparisons hold to float tolerance. Not run here: param/optimizer offload (off for the actor
in the presets), the FSDP2 strategy, more than one rank (`test_verl_fsdp_engine_two_ranks.py` runs two),
the weight sync to the rollout servers, and the reference worker's parameter offload: its forward-only
engine wraps FSDP with CPUOffload(offload_params=True) (transformer_impl.py:433), whose first forward pins the
offloaded parameters for an accelerator (torch/distributed/fsdp/_flat_param.py:1260, "Cannot access
accelerator device"); the reference worker runs here without it
(`test_verls_reference_worker_scores_the_rows_as_the_tiny_policy`), and the updates' KL takes the reference
policy's own scoring as its ref_log_prob.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it

import torch

from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.algorithms.sdar import share_means
from opid_train.config import with_overrides
from opid_train.learner import Learner, make_batch
from opid_train.verl.advantage import compute_advantages
from tests.verl.conftest import verl_batch, verl_config

CPU_SETTINGS = ["+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
                "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: fp32}"]


def cpu_patches(setattr_) -> None:
    """Replace the GPU-only calls of verl's FSDP engine and worker for the CPU (module docstring), each by
    `setattr_(module, name, value)`: pytest's `monkeypatch.setattr` here, plain `setattr` in the processes of
    `test_verl_fsdp_engine_two_ranks.py`."""
    import verl.utils.flops_counter as flops_counter
    import verl.utils.profiler.performance as performance
    import verl.utils.seqlen_balancing as seqlen_balancing
    import verl.workers.engine.fsdp.transformer_impl as impl
    import verl.workers.engine.fsdp.utils as fsdp_engine_utils
    import verl.workers.engine_workers as engine_workers

    class UnbroadcastFSDP(impl.FSDP):
        def __init__(self, module, **kwargs):
            super().__init__(module, **{**kwargs, "sync_module_states": False})

    setattr_(fsdp_engine_utils, "get_device_name", lambda: "cpu")  # 1
    setattr_(impl, "get_device_id", lambda: torch.device("cpu"))  # 2
    setattr_(impl, "get_device_name", lambda: "cpu")  # 3
    setattr_(impl, "FSDP", UnbroadcastFSDP)  # 4
    setattr_(performance, "get_torch_device", lambda: torch.cpu)  # 5
    setattr_(flops_counter, "get_torch_device", lambda: torch.cpu)  # 6
    setattr_(seqlen_balancing, "get_device_name", lambda: "cpu")  # 7
    setattr_(engine_workers, "get_device_name", lambda: "cpu")  # 8
    setattr_(impl, "load_fsdp_model_to_gpu", stay_on_cpu)  # 9


def stay_on_cpu(module) -> None:
    """`load_fsdp_model_to_gpu` without a GPU: the module is on the CPU already and stays there."""
    assert all(param.device.type == "cpu" for param in module.parameters())


@pytest.fixture
def cpu_engine(gloo_group, monkeypatch):
    """The GPU-only calls of verl's FSDP engine and worker, replaced for the CPU (module docstring)."""
    cpu_patches(monkeypatch.setattr)


def engine_worker(policy, cfg, model_dir):
    """verl's actor worker of the composed config `cfg` over `policy`, saved as a Hugging Face folder."""
    from omegaconf import open_dict
    from verl.workers.engine_workers import ActorRolloutRefWorker

    policy.save(model_dir)
    with open_dict(cfg):
        cfg.actor_rollout_ref.model.path = str(model_dir)
    worker = ActorRolloutRefWorker(cfg.actor_rollout_ref, role="actor")
    worker.init_model()  # verl's: engine, optimizer, LR schedule, ppo_loss as the loss function
    return worker


def actor_worker(policy, model_dir, overrides=()):
    """(verl's actor worker over `policy`, the composed config)."""
    cfg = verl_config([*CPU_SETTINGS, *overrides])
    return engine_worker(policy, cfg, model_dir), cfg


def prompt_ids(data) -> list[list[int]]:
    prompts = data.batch["prompts"]
    return [prompts[i][data.batch["attention_mask"][i, :prompts.shape[1]] > 0].tolist() for i in range(len(data))]


def engine_rows(data, fields: dict[str, torch.Tensor] | None = None):
    """verl's DataProto rows (`verl_batch`) as verl's TransferQueue hands them to the actor worker: per row the
    fields the v1 agent-loop worker stores (prompts, responses, their masks, input_ids, position_ids) unpadded,
    plus padded per-token `fields` made nested as the trainer writes them (`response_to_nested`)."""
    from tensordict import TensorDict
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict
    from verl.workers.utils.padding import response_to_nested

    width = data.batch["prompts"].shape[1]
    rows = []
    for i, ids in enumerate(prompt_ids(data)):
        prompt = torch.tensor(ids, dtype=torch.long)
        k = int(data.batch["attention_mask"][i, width:].sum())  # the response's tokens (a padding row's mask is 0)
        response, mask = data.batch["responses"][i, :k], data.batch["response_mask"][i, :k]
        input_ids = torch.cat([prompt, response])
        rows.append({"prompts": prompt, "responses": response, "response_mask": mask, "loss_mask": mask,
                     "input_ids": input_ids, "position_ids": torch.arange(len(input_ids))})
    td = list_of_dict_to_tensordict(rows)
    nested = {key: response_to_nested(value, td["response_mask"]) for key, value in (fields or {}).items()}
    return TensorDict({**td, **nested}, batch_size=len(rows))


def assign(td, **info):
    from verl.utils import tensordict_utils as tu

    tu.assign_non_tensor(td, **info)
    return td


def full_weights(worker) -> dict[str, torch.Tensor]:
    from verl.utils.fsdp_utils import get_fsdp_full_state_dict

    return {k: v.detach().clone() for k, v in get_fsdp_full_state_dict(worker.actor.engine.module).items()}


def assert_scored_as(policy, data, rows, out) -> None:
    """The engine's log-probs of every row (verl's padding row included) are `policy`'s own scoring."""
    from verl.workers.utils.padding import response_from_nested

    logp = response_from_nested(out["log_probs"], rows["response_mask"]).to_padded_tensor(0.0)
    mask = data.batch["response_mask"].float()
    expected = policy.score(prompt_ids(data), data.batch["responses"], data.batch["response_mask"])
    assert logp.shape[0] == len(data) and mask.sum() > 50
    torch.testing.assert_close(logp[:, :mask.shape[1]] * mask, expected * mask, rtol=1e-5, atol=1e-5)


def test_verls_engine_scores_the_rows_as_the_tiny_policy(tiny_policy, trajectories, cpu_engine, tmp_path):
    """`compute_log_prob` as verl's trainer calls it for old_log_probs (entropy on, no loss): the engine's
    packed forward gives the log-probs of the tiny policy's own scoring, on every row; verl's padding row
    comes back too."""
    worker, cfg = actor_worker(tiny_policy, tmp_path / "model")
    data = verl_batch(trajectories, tiny_policy.pad_id)
    rows = assign(engine_rows(data), calculate_entropy=True, compute_loss=False,
                  temperature=cfg.actor_rollout_ref.rollout.temperature)
    out = worker.compute_log_prob(rows)
    assert_scored_as(tiny_policy, data, rows, out)
    assert out["entropy"].values().min() > 0


def off_policy_rows(trajectories, seed: int = 3):
    """The trajectories with half of each group won (the tiny policy wins none: without it every advantage is
    the same) and their sampling log-probs moved, as if an older policy had sampled them, so that the update's
    ratios leave the clip range: PPO's clipped branch and, for negative advantages, its dual clip carry loss."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k, traj in enumerate(trajectories):
        steps = []
        for step in traj.steps:
            old = torch.tensor(step.old_logprobs) + 0.8 * torch.randn(len(step.old_logprobs), generator=gen)
            steps.append(dataclasses.replace(step, old_logprobs=old.tolist()))
        out.append(dataclasses.replace(traj, steps=steps, score=float(k % 2), won=bool(k % 2)))
    return out


def reference_policy(policy, seed: int = 4):
    """A reference policy other than the actor (as after some updates), so that the KL term has a gradient."""
    reference = copy.deepcopy(policy)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in reference.model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return reference


def one_update_both_ways(algo, policy, trajectories, tmp_path, loss_fn=None, overrides=()):
    """One actor update on the same rows by verl's worker (`update_actor`, as the trainer's `_update_actor`
    calls it: one mini-batch of all rows, epochs 1) and by the local learner with verl's optimizer settings,
    both with the preset's low-variance KL to `reference_policy` (verl's ref_log_prob: its scoring of the rows,
    which is the tiny policy's own, as `test_verls_engine_scores_the_rows_as_the_tiny_policy` shows).
    Returns (verl's weights before, after, its metrics; the local learner's weights after, its metrics; the
    teacher tokens written for SDAR)."""
    from omegaconf import OmegaConf

    from opid_train.rollout import resolve_env_id
    from opid_train.verl.agent_loop import run_agent_config
    from opid_train.verl.config import opid_config
    from opid_train.verl.loss import TEACHER_MASK, sdar_fields

    worker, cfg = actor_worker(policy, tmp_path / "model", [f"opid.algo={algo}",
                                                            # micro-batches of about four rows (verl's dynamic batch size)
                                                            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=800",
                                                            *overrides])
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    train = with_overrides(opid_config(OmegaConf.to_container(cfg.opid, resolve=True)),
                           {"lr": actor.optim.lr, "weight_decay": actor.optim.weight_decay,
                            "max_grad_norm": actor.optim.clip_grad, "grpo.clip_eps": actor.clip_ratio,
                            "grpo.kl_coef": actor.kl_loss_coef, "ppo_epochs": 1, "minibatch_size": 1000,
                            "micro_batch_size": 3})
    assert train.grpo.clip_ratio_c == actor.clip_ratio_c > 1 and actor.entropy_coeff == 0
    assert actor.use_kl_loss and actor.kl_loss_type == "low_var_kl" and actor.kl_loss_coef > 0
    reference = reference_policy(policy)
    template = run_agent_config(cfg, resolve_env_id(train.env)).template
    if loss_fn is not None:
        worker.set_loss_fn(loss_fn(cfg, train))

    data = verl_batch(trajectories, policy.pad_id)
    advantages, _, extras, _ = compute_advantages(data, make_algorithm(algo, train),
                                                  PrepareContext(policy, template, tmp_path / "verl", 0))
    fields = {"old_log_probs": data.batch["rollout_log_probs"], "advantages": advantages,
              "ref_log_prob": reference.score(prompt_ids(data), data.batch["responses"], data.batch["response_mask"])}
    if algo == "sdar":
        fields.update(sdar_fields(extras, data.batch["response_mask"]))
    rows = assign(engine_rows(data, fields), calculate_entropy=False, distillation_use_topk=False,
                  distillation_only=False, global_batch_size=len(data), mini_batch_size=len(data), epochs=1,
                  seed=actor.data_loader_seed, dataloader_kwargs={"shuffle": actor.shuffle},
                  temperature=rollout.temperature)
    before = full_weights(worker)
    out = worker.update_actor(rows)
    after = full_weights(worker)
    teacher_tokens = float(fields[TEACHER_MASK].sum()) if algo == "sdar" else 0.0

    local = copy.deepcopy(policy)
    learner = Learner(local, make_algorithm(algo, train), train, reference=reference)
    local_metrics = learner.update(make_batch(trajectories), PrepareContext(local, template, tmp_path / "local", 0))
    return before, after, out["metrics"], local.model.state_dict(), local_metrics, teacher_tokens


def assert_same_update(before, after, metrics, local, local_metrics, _, lr):
    """verl's step moved every weight; the local learner's step is the same: loss, its PPO and KL parts,
    pre-clip gradient norm and weights (Adam's first step moves each weight by about lr: they agree to 1% of it)."""
    assert all((after[k] - before[k]).abs().max() > lr / 2 for k in after)
    assert metrics["loss"] == [pytest.approx(local_metrics["loss"], rel=1e-5)]
    assert metrics["actor/pg_loss"] == [pytest.approx(local_metrics["pg_loss"], rel=1e-5)]
    assert metrics["kl_loss"] == [pytest.approx(local_metrics["kl"], rel=1e-5)]
    assert metrics["grad_norm"] == [pytest.approx(local_metrics["grad_norm"], rel=1e-4)]
    for name, value in after.items():
        torch.testing.assert_close(value, local[name], rtol=0, atol=lr / 100, msg=name)


def test_verls_ppo_update_is_the_local_learners(tiny_policy, trajectories, cpu_engine, tmp_path):
    """verl's default loss (its `ppo_loss`: clipped and dual-clipped surrogate and low-variance KL, token-mean
    over the mini-batch) through the engine's micro-batches, gradient clipping and AdamW: the local learner's
    GRPO step."""
    result = one_update_both_ways("grpo", tiny_policy, off_policy_rows(trajectories), tmp_path)
    local_metrics = result[4]
    assert local_metrics["pg_clipfrac"] > 0.1 and local_metrics["pg_clipfrac_lower"] > 0  # the clip and dual clip
    assert local_metrics["kl"] > 0 and local_metrics["adv_ep_abs_mean"] > 0.5
    assert_same_update(*result, lr=1e-6)


class RecordingSdarLoss:
    """opid's `SdarPPOLoss` as the engine calls it, keeping per micro-batch its rows and teacher tokens
    (the fields arrive nested, one row's tokens each, as the engine splits the mini-batch)."""

    def __init__(self, loss):
        self.loss, self.seen = loss, []

    def __call__(self, model_output, data, dp_group=None):
        from opid_train.verl.loss import TEACHER_LOGP, TEACHER_MASK

        assert data[TEACHER_MASK].is_nested and data[TEACHER_LOGP].is_nested
        self.seen.append((len(data), float(data[TEACHER_MASK].values().sum())))
        return self.loss(model_output, data, dp_group)


def test_sdar_in_verls_engine_is_the_local_learners_sdar_step(tiny_policy, trajectories, cpu_engine, tmp_path):
    """opid's `SdarPPOLoss` set as the actor's loss function (`set_loss_fn`, as `OpidTrainer.on_init_end`
    does), the teacher fields next to the advantages as `_compute_advantage` writes them: every micro-batch
    the engine makes carries its rows' teacher fields into the loss, and the step (its loss, gradient norm and
    weights) is the local learner's SDAR step."""
    from verl.utils.config import omega_conf_to_dataclass

    from opid_train.verl.loss import SdarPPOLoss

    recorder = []

    def sdar_loss(cfg, train):
        recorder.append(RecordingSdarLoss(SdarPPOLoss(omega_conf_to_dataclass(cfg.actor_rollout_ref.actor), train.sdar)))
        return recorder[0]

    result = one_update_both_ways("sdar", tiny_policy, off_policy_rows(trajectories), tmp_path, sdar_loss,
                                  ["opid.analyzer.backend=offline", "opid.sdar.coef=0.5", "opid.sdar.beta=2.0"])
    metrics, local_metrics = result[2], result[4]
    (loss,) = recorder
    rows, tokens = zip(*loss.seen)
    assert len(rows) > 1 and sum(rows) == len(verl_batch(trajectories, tiny_policy.pad_id))  # every row, micro-batched
    assert sum(tokens) == result[5]  # every teacher token reached the loss
    assert local_metrics["sdar/teacher_active_token_ratio"] > 0
    # the local learner's sdar/* metrics (gaps of nearly equal log-probs: to 1e-6; the share of gates above 1/2
    # may differ by a token at the threshold)
    means = share_means({key: value[0] for key, value in metrics.items() if key.startswith("sdar/")})  # as logged
    for key, tolerance in (("sdar/gate_mean", 1e-6), ("sdar/gap_mean", 1e-6), ("sdar/loss", 1e-6),
                           ("sdar/gate_active_ratio", 0.01)):
        assert means[key] == pytest.approx(local_metrics[key], abs=tolerance), key
    assert_same_update(*result, lr=1e-6)


def test_verls_reference_worker_scores_the_rows_as_the_tiny_policy(tiny_policy, trajectories, cpu_engine, tmp_path,
                                                                  monkeypatch):
    """verl's reference worker (role "ref", the presets' `ref` section) as the trainer calls it for the KL's
    ref_log_prob: the tiny policy's scoring. One more patch, for this worker only: its forward-only engine
    wraps FSDP with CPUOffload(offload_params=True) (transformer_impl.py:433), whose first forward pins the
    parameters for an accelerator (torch/distributed/fsdp/_flat_param.py:1260); here they stay on the CPU. Its
    forward in fp32 as the actor's (verl's default bf16 moved these log-probs by up to 0.029)."""
    import torch.distributed.fsdp as torch_fsdp
    from omegaconf import open_dict
    from verl.workers.engine_workers import ActorRolloutRefWorker

    monkeypatch.setattr(torch_fsdp, "CPUOffload", lambda offload_params: None)  # the engine imports it at build time
    cfg = verl_config([*CPU_SETTINGS, "+actor_rollout_ref.ref.fsdp_config.mixed_precision={param_dtype: fp32}"])
    assert cfg.actor_rollout_ref.ref.fsdp_config.param_offload  # the presets offload the reference
    tiny_policy.save(tmp_path / "model")
    with open_dict(cfg):
        cfg.actor_rollout_ref.model.path = str(tmp_path / "model")
    worker = ActorRolloutRefWorker(cfg.actor_rollout_ref, role="ref")
    worker.init_model()
    data = verl_batch(trajectories, tiny_policy.pad_id)
    rows = assign(engine_rows(data), calculate_entropy=False, compute_loss=False,
                  temperature=cfg.actor_rollout_ref.rollout.temperature)
    assert_scored_as(tiny_policy, data, rows, worker.compute_ref_log_prob(rows))
