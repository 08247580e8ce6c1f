"""verl's v1 synchronous trainer with opid's advantage step, and what it needs around it.

`OpidTrainer._compute_advantage` replaces verl's GRPO estimator: it reads the update's step rows
from verl's TransferQueue, runs `advantage.compute_advantages` (the shared algorithm core) and writes
the advantages back, as verl's own step does. OPID's teacher term is one extra log-prob pass of the
actor over the skill-augmented prompts (`ActorScorer`): the rows go into the TransferQueue under
their own keys, `actor_rollout_wg.compute_log_prob` scores them like old_log_probs, and they are
cleared again. In the step time it sits after old_log_prob/ref and before update_actor ("adv").
SDAR's teacher log-probs go next to the advantages (`loss.sdar_fields`) and the actor workers get
`loss.SdarPPOLoss` as their loss function (verl's PPO loss + the gated term) once at start.

It also writes the run folder as the local backend does (`run_folder.py`): metrics.jsonl under the
local names after verl computed its metrics, records from the advantage step's Batch, curves at the end.
A step's checkpoint is saved after its metrics line (verl saves before its validation); on resume the
run folder's lines, skills and records of the updates after the checkpoint are dropped (`_setup_opid`).

Run on CPU (`tests/verl/test_verl_trainer_tq.py`): verl's `fit` for up to four updates and its validation,
all but the actor update, with the real TransferQueue on a local Ray, verl's agent-loop worker, replay
buffer, padding and log-prob steps, and this class's advantage step, teacher pass, metrics hook,
`on_init_end` and `fit`; the actor worker group is the tiny policy behind verl's TransferQueue bridge.
verl's real actor worker and FSDP engine over the tiny policy in a 1-rank gloo group, its GPU-only calls
patched (`tests/verl/test_verl_fsdp_engine_cpu.py`): `compute_log_prob` as the teacher pass and old
log-probs call it, and `update_actor` with verl's PPO loss and with `SdarPPOLoss` (the fields
`_compute_advantage` writes), each step equal to the local learner's; its `save_checkpoint` /
`load_checkpoint` (the engine's, around verl's `FSDPCheckpointManager`: shards, AdamW state, LR schedule and
RNG, Hugging Face export), a resumed worker's next update bit-identical to an uninterrupted one
(`tests/verl/test_verl_engine_checkpoint_cpu.py`); and as the actor workers of one SDAR update of `fit` (old
log-probs, teacher pass, actor update through the TransferQueue) and of `fit`'s checkpoints and a resume from
them (verl's `_save_checkpoint` / `_load_checkpoint`, the actor updated at each step); verl's reference
worker gives the KL's reference log-probs in the SDAR update. Not run here: the engine on a GPU or over more
than two ranks (`tests/verl/test_verl_fsdp_engine_two_ranks.py` runs two), vLLM servers, weight sync.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import transfer_queue as tq
from tensordict import TensorDict
from verl.protocol import DataProto
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_from_nested, response_to_nested

from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.config import to_dict
from opid_train.metrics import MetricsLogger
from opid_train.records import RECORDS_FILE, RunRecorder
from opid_train.rollout import resolve_env_id
from opid_train.verl.advantage import RECORD_KEY, compute_advantages, step_records
from opid_train.policy.hf import keep_head_and_tail
from opid_train.verl.agent_loop import run_agent_config
from opid_train.verl.config import opid_config
from opid_train.verl.loss import SdarPPOLoss, sdar_fields
from opid_train.verl.run_folder import local_metrics

TRAINER_MODE = "opid_sync"


class ActorScorer:
    """The `ScoringPolicy` the algorithms ask for, on verl: prompts encoded as the agent loop encodes
    them, responses scored by the actor workers (no gradient, the weights of this update's rollout)."""

    def __init__(self, trainer, template_builder, prompt_length: int):
        self.trainer, self.builder, self.prompt_length = trainer, template_builder, prompt_length
        self.tokenizer = trainer.tokenizer

    def encode_prompt(self, text: str) -> list[int]:
        return keep_head_and_tail(self.builder.build_initial_tokens([{"role": "user", "content": text}]),
                                  self.prompt_length)

    def score(self, prompt_ids, response_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
        from verl.utils.tensordict_utils import list_of_dict_to_tensordict

        keys = [f"opid-teacher-{self.trainer.global_steps}-{i}" for i in range(len(prompt_ids))]
        fields = []
        for p, r, m in zip(prompt_ids, response_ids, response_mask):
            n = int(m.sum())
            prompts, responses = torch.tensor(p, dtype=torch.long), r[:n].long()
            input_ids = torch.cat([prompts, responses])
            mask = torch.ones(n, dtype=torch.long)  # the fields verl's v1 agent-loop worker stores per row
            fields.append({"prompts": prompts, "responses": responses, "response_mask": mask, "loss_mask": mask,
                           "input_ids": input_ids, "position_ids": torch.arange(len(input_ids))})
        meta = tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(fields))
        try:
            # verl's dispatch splits the rows over the actor's data-parallel ranks; a rank's worker fails on
            # an empty share, or on one its micro-batch size does not divide: synthetic rows fill up, as verl
            # pads its own batches
            meta = upsample_batch_to_divisible_size(meta, self.rows_multiple(), self.tokenizer.eos_token_id)
            meta.extra_info.update({"calculate_entropy": False, "compute_loss": False,
                                    "temperature": self.trainer.config.actor_rollout_ref.rollout.temperature})
            self.trainer.actor_rollout_wg.compute_log_prob(meta)
            data = tq.kv_batch_get(keys=keys, partition_id="train", select_fields=["log_probs", "response_mask"])
            logp = response_from_nested(data["log_probs"], data["response_mask"]).to_padded_tensor(0.0)
        finally:
            tq.kv_clear(keys=meta.keys, partition_id="train")
        out = torch.zeros(response_mask.shape, dtype=torch.float32)
        out[:, : logp.shape[1]] = logp[:, : out.shape[1]].float().cpu()
        return out * response_mask

    def rows_multiple(self) -> int:
        """The actor's data-parallel ranks (read as verl's `_balance_batch` reads them), times the log-prob
        micro-batch size when the micro-batches are counted in rows (no dynamic batch size)."""
        group = self.trainer.actor_rollout_wg
        if "actor" not in group._dispatch_info:
            group._dispatch_info["actor"] = group._query_dispatch_info("actor")
        rollout = self.trainer.config.actor_rollout_ref.rollout
        micro = 1 if rollout.log_prob_use_dynamic_bsz else int(rollout.log_prob_micro_batch_size_per_gpu)
        return (max(group._dispatch_info["actor"]) + 1) * micro


def left_padded(right_padded: torch.Tensor, lengths: list[int], response_width: int) -> dict[str, torch.Tensor]:
    """verl's padded layout of prompts (left-padded, with the attention mask over prompt + response)."""
    width = right_padded.shape[1]
    prompts = torch.zeros_like(right_padded)
    attention = torch.zeros((len(lengths), width + response_width), dtype=torch.long)
    for i, n in enumerate(lengths):
        prompts[i, width - n:] = right_padded[i, :n]
        attention[i, width - n:width] = 1
    return {"prompts": prompts, "attention_mask": attention}


@register_trainer(TRAINER_MODE)
class OpidTrainer(PPOTrainerSync):
    """verl's synchronous trainer; its advantage step is opid's (GRPO, OPID or SDAR's advantage)."""

    def __init__(self, config):
        super().__init__(config)
        # verl reads any mode but "sync" as asynchronous (async replay buffer, prompts refilled one at a
        # time, the TransferQueue checkpointed with the batch just trained, replayed on resume): this
        # trainer, registered under its own name, runs as "sync"
        self.trainer_mode = "sync"
        self.parameter_sync_step = self.config.trainer.v1.get("sync", {}).get("parameter_sync_step", 1)
        self.replay_buffer = self._build_replay_buffer()
        self.checkpoint_due = False

    def _setup_opid(self):
        from omegaconf import OmegaConf
        from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

        data = OmegaConf.to_container(self.config, resolve=True)
        self.opid = opid_config(data["opid"])
        self.opid_algorithm = make_algorithm(self.opid.algo, self.opid)
        self.opid_template = run_agent_config(self.config, resolve_env_id(self.opid.env)).template
        builder = create_continuous_token_builder(self.tokenizer)
        self.opid_scorer = ActorScorer(self, builder, self.config.actor_rollout_ref.rollout.prompt_length)
        run_dir = self.opid.resolved_run_dir()
        self.opid_metrics = MetricsLogger(run_dir, to_dict(self.opid), tensorboard=False, wandb=False)  # verl logs to those
        self.opid_metrics.truncate_after(self.global_steps)  # resumed at step K: updates 0..K-1 are done
        self.opid_recorder = None
        if self.opid.record.enabled:
            self.opid_recorder = RunRecorder(run_dir / RECORDS_FILE, method=self.opid.algo, tokenizer=self.tokenizer,
                                             every=self.opid.record.every,
                                             max_trajectories=self.opid.record.max_trajectories)
            self.opid_recorder.writer.forget_updates_from(self.global_steps)

    def on_init_end(self):
        super().on_init_end()
        self._setup_opid()
        if self.opid.algo == "sdar":
            from verl.utils.config import omega_conf_to_dataclass

            actor = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
            self.actor_rollout_wg.set_loss_fn(SdarPPOLoss(actor, self.opid.sdar))

    def _compute_advantage(self, batch, metrics: dict):
        fields = ["prompts", "responses", "response_mask", "old_log_probs", "extra_fields"]
        raw = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        response_mask = raw["response_mask"]
        extra = raw.pop("extra_fields").tolist()  # the dicts (iterating the column gives NonTensorData)
        records = np.empty(len(extra), dtype=object)
        records[:] = step_records(extra, batch.tags)
        lengths = raw["prompts"].offsets().diff().tolist()
        tensors = raw.to_padded_tensor()
        data = DataProto(batch=TensorDict({**left_padded(tensors["prompts"], lengths, tensors["responses"].shape[1]),
                                           **{k: tensors[k] for k in ("responses", "response_mask", "old_log_probs")}},
                                          batch_size=len(lengths)),
                         non_tensor_batch={RECORD_KEY: records})
        ctx = PrepareContext(policy=self.opid_scorer, template=self.opid_template,
                             run_dir=self.opid.resolved_run_dir(), update=self.global_steps - 1)
        advantages, opid_metrics, extras, opid_batch = compute_advantages(data, self.opid_algorithm, ctx)
        metrics.update(opid_metrics)  # the local backend's metric names
        if self.opid_recorder:
            t0 = time.monotonic()
            metrics.update(record_bytes=self.opid_recorder.training_update(ctx.update, opid_batch, ctx.details),
                           record_seconds=time.monotonic() - t0)
        out = {"advantages": advantages, "returns": advantages}
        if self.opid.algo == "sdar":
            out.update(sdar_fields(extras, tensors["response_mask"]))
        out = {key: response_to_nested(value, response_mask) for key, value in out.items()}
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                               fields=TensorDict(out, batch_size=len(batch)))

    def _save_checkpoint(self):
        """Deferred to after the step's metrics line (`_compute_metrics`). verl's `fit` saves before the
        step's validation and metrics: a run killed in between resumed after an update with no line."""
        self.checkpoint_due = True

    def _compute_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
        super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)
        line = self.opid_algorithm.finish_metrics(local_metrics(metrics))  # SDAR's shares -> its means
        line.pop("timing_s/save_checkpoint", None)  # the deferred save's (~0 s); the save comes after the line
        self.opid_metrics.log(global_steps - 1, line)
        if self.checkpoint_due:
            self.checkpoint_due = False
            t0 = time.monotonic()
            super()._save_checkpoint()
            metrics["timing_s/save_checkpoint"] = time.monotonic() - t0  # verl's loggers log `metrics` after this

    def fit(self, agent_loop_manager):
        try:
            super().fit(agent_loop_manager)
        finally:
            self.opid_metrics.close()  # curves.png, as a local run leaves it


def task_runner():
    """verl's v1 task runner (a Ray actor) that first imports this module in its own process, so the
    `opid_sync` trainer is registered where verl looks it up."""
    import ray
    from verl.trainer.main_ppo import TaskRunnerV1

    class OpidTaskRunner(TaskRunnerV1.__ray_metadata__.modified_class):
        def run(self, config):
            import opid_train.verl.trainer  # noqa: F401

            return super().run(config)

    return ray.remote(num_cpus=1)(OpidTaskRunner)
