"""`OpidTrainer`'s TransferQueue path on CPU, with verl's and TransferQueue's real classes on a local Ray.

One training step of verl's v1 trainer runs here as on a cluster, up to the actor update: the dataloader
reads opid's task file, verl's v1 agent-loop worker plays the opid agent loop against the tiny policy's
stand-in server and writes its step rows into the TransferQueue, verl's replay buffer samples them, verl
pads and balances the batch, computes old (and reference) log-probs, then `OpidTrainer._compute_advantage`
(with OPID's teacher pass) writes the advantages back and its `_compute_metrics` writes metrics.jsonl.
The one stand-in is the actor worker group (FSDP workers on GPUs): `ActorWorkers` runs the tiny policy
behind verl's own TransferQueue bridge, on each data-parallel rank's share of the rows.
"""

from __future__ import annotations

import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it
pytest.importorskip("transfer_queue", reason="verl's TransferQueue is not installed: pip install 'opid[verl]'")

from tests.verl.conftest import verl_config

TASKS, GROUP, DP = 2, 4, 2  # tasks per update, rollouts per task, data-parallel ranks of the stand-in actor


def step_config(algo: str, run_dir):
    return verl_config([f"opid.algo={algo}", "opid.analyzer.backend=offline", f"opid.run_dir={run_dir}",
                        f"data.train_batch_size={TASKS}", f"actor_rollout_ref.actor.ppo_mini_batch_size={TASKS}",
                        f"actor_rollout_ref.rollout.n={GROUP}",
                        "actor_rollout_ref.rollout.calculate_log_probs=true", "trainer.val_before_train=false",
                        "trainer.critic_warmup=1000",  # the actor update needs the GPU workers: stop before it
                        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
                        "trainer.v1.trainer_mode=opid_sync"])  # as opid-train --backend verl sets it


def test_the_opid_trainer_runs_as_verls_sync_trainer(tmp_path):
    """verl's trainer base reads every mode but "sync" as asynchronous; under its own registered name the
    opid trainer got the async replay buffer, one-prompt dataloader fetches, and a TransferQueue checkpoint
    (with the batch just trained in it) at every save, replayed on resume."""
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

    from opid_train.verl.trainer import OpidTrainer

    cfg = step_config("grpo", tmp_path)
    trainer = get_trainer_cls(cfg.trainer.v1.trainer_mode)(cfg)  # as verl's task runner builds it
    assert isinstance(trainer, OpidTrainer)
    assert trainer.trainer_mode == "sync" and type(trainer.replay_buffer) is ReplayBuffer
