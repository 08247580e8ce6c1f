"""verl's real actor worker saves and loads its checkpoint on CPU, and a resumed worker goes on exactly.

`ActorRolloutRefWorker.save_checkpoint` / `load_checkpoint` -> `TrainingWorker` -> `FSDPEngine` -> its
`FSDPCheckpointManager` with the presets' save_contents (model and optimizer shards, extra state with the
LR schedule and RNG, Hugging Face export), the engine on CPU as tests/verl/test_verl_fsdp_engine_cpu.py
runs it (`cpu_engine`, whose 9th patch is the one the save needs).
"""

from __future__ import annotations

import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it

import torch

from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.verl.advantage import compute_advantages
from tests.verl.conftest import verl_batch
from tests.verl.test_verl_fsdp_engine_cpu import (actor_worker, assign, cpu_engine, engine_rows,  # noqa: F401
                                                  full_weights, off_policy_rows, reference_policy)

# a cosine LR schedule, so that each update has its own learning rate; no KL term (no reference log-probs);
# micro-batches of a few rows
SETTINGS = ["actor_rollout_ref.actor.optim.lr_scheduler_type=cosine",
            "actor_rollout_ref.actor.optim.total_training_steps=4",
            "actor_rollout_ref.actor.use_kl_loss=false", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=800"]


def update_rows(policy, trajectories, cfg, tmp_path):
    """The update's rows as the trainer hands them to `update_actor`: GRPO advantages, one mini-batch, one epoch."""
    from opid_train.rollout import resolve_env_id
    from opid_train.verl.agent_loop import run_agent_config
    from omegaconf import OmegaConf

    from opid_train.verl.config import opid_config

    train = opid_config(OmegaConf.to_container(cfg.opid, resolve=True))
    template = run_agent_config(cfg, resolve_env_id(train.env)).template
    data = verl_batch(trajectories, policy.pad_id)
    advantages, *_ = compute_advantages(data, make_algorithm("grpo", train),
                                        PrepareContext(policy, template, tmp_path / "adv", 0))
    actor = cfg.actor_rollout_ref.actor
    fields = {"old_log_probs": data.batch["rollout_log_probs"], "advantages": advantages}
    return assign(engine_rows(data, fields), calculate_entropy=False, distillation_use_topk=False,
                  distillation_only=False, global_batch_size=len(data), mini_batch_size=len(data), epochs=1,
                  seed=actor.data_loader_seed, dataloader_kwargs={"shuffle": actor.shuffle},
                  temperature=cfg.actor_rollout_ref.rollout.temperature)


def training_state(worker):
    """(full weights, AdamW state per parameter name, LR schedule's state) of the worker's engine."""
    engine = worker.actor.engine
    names = [name for name, _ in engine.module.named_parameters()]
    state = engine.optimizer.state_dict()
    params = state["param_groups"][0]["params"]
    adam = {names[i]: {k: v.clone() for k, v in state["state"].get(i, {}).items()} for i in params}  # {} before a step
    return full_weights(worker), adam, engine.lr_scheduler.state_dict()


def assert_same_state(a, b):
    weights_a, adam_a, schedule_a = a
    weights_b, adam_b, schedule_b = b
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    assert adam_a.keys() == adam_b.keys() and adam_a
    for name, state in adam_a.items():
        assert state.keys() == adam_b[name].keys() == {"step", "exp_avg", "exp_avg_sq"}, name
        for key, value in state.items():
            assert torch.equal(value, adam_b[name][key]), (name, key)
    assert schedule_a == schedule_b


def test_a_worker_resumed_from_verls_checkpoint_takes_the_same_second_step(tiny_policy, trajectories, cpu_engine,
                                                                            tmp_path):
    """Two actor updates straight through, and one update, `save_checkpoint`, a fresh worker over other weights,
    `load_checkpoint`, the second update: after the load and after the second update the weights, AdamW's
    step, exp_avg and exp_avg_sq and the LR schedule's state are bit-identical; the Hugging Face export holds
    the weights saved. A worker that loads the checkpoint without its optimizer part takes another second
    step, one without its extra state has its schedule start over."""
    from opid_train.policy.presets import hf_policy

    rows = off_policy_rows(trajectories)
    straight, cfg = actor_worker(tiny_policy, tmp_path / "model", SETTINGS)
    batch = update_rows(tiny_policy, rows, cfg, tmp_path)
    initial = full_weights(straight)
    straight.update_actor(batch.clone())  # the worker pops the settings off its rows
    after_one = training_state(straight)
    assert all(not torch.equal(initial[name], value) for name, value in after_one[0].items())
    ckpt = tmp_path / "global_step_1" / "actor"
    straight.save_checkpoint(str(ckpt), global_step=1)
    straight.update_actor(batch.clone())
    after_two = training_state(straight)
    assert after_two[2]["_last_lr"] != after_one[2]["_last_lr"]  # the schedule moved the learning rate

    resumed, _ = actor_worker(reference_policy(tiny_policy), tmp_path / "other", SETTINGS)  # other weights
    assert not torch.equal(full_weights(resumed)["lm_head.weight"], after_one[0]["lm_head.weight"])
    resumed.load_checkpoint(str(ckpt))
    assert_same_state(training_state(resumed), after_one)
    resumed.update_actor(batch.clone())
    assert_same_state(training_state(resumed), after_two)

    exported = hf_policy(ckpt / "huggingface").model.state_dict()  # what opid-eval reads
    for name, value in after_one[0].items():
        assert torch.equal(exported[name], value), name

    # the comparison sees a resume that leaves out the optimizer's state or the schedule (verl's extra state)
    for left_out in ("optimizer", "extra"):
        kept = ",".join(part for part in ("model", "optimizer", "extra") if part != left_out)
        partial, _ = actor_worker(tiny_policy, tmp_path / left_out,
                                  [*SETTINGS, f"actor_rollout_ref.actor.checkpoint.load_contents=[{kept}]"])
        partial.load_checkpoint(str(ckpt))
        partial.update_actor(batch.clone())
        weights, adam, schedule = training_state(partial)
        if left_out == "optimizer":  # a fresh AdamW: its first step again, another update
            assert all(float(state["step"]) == 1 for state in adam.values())
            assert not torch.equal(weights["lm_head.weight"], after_two[0]["lm_head.weight"])
        else:  # the schedule starts over; this update's learning rate is still right (the optimizer's param_groups
            # carry it), the next one's would not be
            assert schedule["last_epoch"] == 1 != after_two[2]["last_epoch"]
