"""`OpidTrainer`'s TransferQueue path on CPU, with verl's and TransferQueue's real classes on a local Ray.

One training step of verl's v1 trainer runs here as on a cluster, up to the actor update: the dataloader
reads opid's task file, verl's v1 agent-loop worker plays the opid agent loop against the tiny policy's
stand-in server and writes its step rows into the TransferQueue, verl's replay buffer samples them, verl
pads and balances the batch, computes old (and reference) log-probs, then `OpidTrainer._compute_advantage`
(with OPID's teacher pass) writes the advantages back and its `_compute_metrics` writes metrics.jsonl.
The one stand-in is the actor worker group (FSDP workers on GPUs): `ActorWorkers` runs the tiny policy
behind verl's own TransferQueue bridge, on each data-parallel rank's share of the rows. The two `fit` tests
with actor updates (one SDAR update; checkpoints and a resume) have verl's real actor worker instead
(`EngineWorkers`: its FSDP engine on the CPU, one rank, GPU-only calls patched as
tests/verl/test_verl_fsdp_engine_cpu.py lists), its update, checkpoint save and load included; the SDAR one
has verl's real reference worker for the KL too.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it
pytest.importorskip("transfer_queue", reason="verl's TransferQueue is not installed: pip install 'opid[verl]'")

import ray
import torch
import transfer_queue as tq
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.utils import tensordict_utils as tu
from verl.utils.skip import SkipManager

from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.learner import make_batch
from opid_train.verl.envs import close_all
from opid_train.verl.loss import TEACHER_LOGP, TEACHER_MASK
from opid_train.verl.records import trajectories_from_records
from tests.train.toy_expert import EXPERT_ID
from tests.verl.conftest import TinyServer, verl_config
from tests.verl.test_verl_fsdp_engine_cpu import cpu_engine  # noqa: F401  (a fixture)

TASKS, GROUP, DP = 2, 2, 3  # tasks per update, rollouts per task, data-parallel ranks of the stand-in actor


def step_config(algo: str, run_dir, overrides=()):
    return verl_config([f"opid.algo={algo}", "opid.analyzer.backend=offline", f"opid.run_dir={run_dir}",
                        f"data.train_batch_size={TASKS}", f"actor_rollout_ref.actor.ppo_mini_batch_size={TASKS}",
                        f"actor_rollout_ref.rollout.n={GROUP}",
                        "actor_rollout_ref.rollout.calculate_log_probs=true", "trainer.val_before_train=false",
                        "trainer.critic_warmup=1000",  # no actor update with the stand-in actor workers
                        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
                        "trainer.v1.trainer_mode=opid_sync",  # as opid-train --backend verl sets it
                        *overrides])  # last: they win


@pytest.fixture(scope="module")
def transfer_queue():
    """A local Ray and the TransferQueue (controller + storage unit) started as verl's task runner does."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    try:
        tq.init(step_config("grpo", "unused").transfer_queue)
        yield tq
    finally:
        tq.close()
        ray.shutdown()


class ActorWorkers:
    """Stand-in for verl's actor worker group. verl's dispatch splits a KVBatchMeta over the data-parallel
    ranks; on each, verl's `tqbridge` reads the rows it names (plus its extra_info) from the TransferQueue
    and writes the worker's outputs back. Here the worker splits its share into micro-batches with verl's
    own `prepare_micro_batches` (the engine's settings injected as verl's worker injects them), then runs
    the tiny policy's forward over each unpadded row, reading what verl's FSDP engine reads (input_ids,
    position_ids, loss_mask, temperature) and returning what it returns (log_probs over prompt +
    response, entropy on request)."""

    def __init__(self, policy, dp_size: int, config):
        from verl.utils.transferqueue_utils import tqbridge

        rollout = config.actor_rollout_ref.rollout
        self.engine = dict(use_dynamic_bsz=rollout.log_prob_use_dynamic_bsz,
                           max_token_len_per_gpu=rollout.log_prob_max_token_len_per_gpu,
                           micro_batch_size_per_gpu=rollout.log_prob_micro_batch_size_per_gpu)
        self.model = policy.model
        self._dispatch_info = {"actor": list(range(dp_size))}
        self.shares: list[list[int]] = []  # rows per rank, per call
        self.bridged = tqbridge()(self.forward)

    @torch.no_grad()
    def forward(self, data: TensorDict) -> TensorDict:
        from verl.workers.engine.utils import prepare_micro_batches

        assert data["input_ids"].is_nested, "verl's engine takes rows unpadded (nested input_ids)"
        tu.assign_non_tensor(data, **{k: v for k, v in self.engine.items() if k not in data.keys()})
        prepare_micro_batches(data)  # refuses a share that its micro-batch size does not divide
        temperature = float(data["temperature"])
        data["loss_mask"]  # the engine normalises its loss by it: a row set without it fails there
        entropy = tu.get_non_tensor_data(data=data, key="calculate_entropy", default=False)
        out = {"log_probs": [], "entropy": []}
        for ids, positions in zip(data["input_ids"].unbind(), data["position_ids"].unbind(), strict=True):
            logits = self.model(input_ids=ids[None], position_ids=positions[None]).logits[0].float()
            logp = torch.log_softmax(logits / temperature, dim=-1)
            nxt = torch.cat([ids[1:], ids[:1]])  # verl rolls the labels; the last position is dropped later
            out["log_probs"].append(logp.gather(-1, nxt[:, None]).squeeze(-1))
            out["entropy"].append(-(logp.exp() * logp).sum(-1))
        keys = ["log_probs", "entropy"] if entropy else ["log_probs"]
        return TensorDict({k: torch.nested.as_nested_tensor(out[k], layout=torch.jagged) for k in keys},
                          batch_size=len(out["log_probs"]))

    def compute_log_prob(self, meta: KVBatchMeta) -> KVBatchMeta:
        shares = meta.chunk(len(self._dispatch_info["actor"]))
        self.shares.append([len(share) for share in shares])
        # verl's engine on a rank without rows fails (no input_ids to read, no lengths to balance)
        assert all(len(share) for share in shares), f"a data-parallel rank got no rows: {self.shares[-1]}"
        return KVBatchMeta.concat([self.bridged(share) for share in shares])

    compute_ref_log_prob = compute_log_prob

    def set_loss_fn(self, loss_fn) -> None:
        """verl sends the loss function to every worker process (Ray pickles it)."""
        self.loss_fn = ray.cloudpickle.loads(ray.cloudpickle.dumps(loss_fn))


class EngineWorkers:
    """verl's actor worker group of one rank: verl's real `ActorRolloutRefWorker` with its FSDP engine on the
    CPU (tests/verl/test_verl_fsdp_engine_cpu.py), called with the KVBatchMeta as verl's dispatch calls a rank
    (verl's TransferQueue bridge around each method reads the rows and writes the outputs back)."""

    def __init__(self, worker, reference=None):
        self.worker, self.reference = worker, reference  # reference: verl's worker of role "ref"
        self._dispatch_info = {"actor": [0]}  # one data-parallel rank

    def compute_log_prob(self, meta: KVBatchMeta) -> KVBatchMeta:
        return self.worker.compute_log_prob(meta)

    def compute_ref_log_prob(self, meta: KVBatchMeta) -> KVBatchMeta:
        return self.reference.compute_ref_log_prob(meta)

    def update_actor(self, meta: KVBatchMeta) -> TensorDict:
        return self.worker.update_actor(meta)

    def set_loss_fn(self, loss_fn) -> None:
        self.worker.set_loss_fn(ray.cloudpickle.loads(ray.cloudpickle.dumps(loss_fn)))  # as Ray ships it

    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None) -> None:
        self.worker.save_checkpoint(local_path, hdfs_path, global_step, max_ckpt_to_keep)

    def load_checkpoint(self, local_path, hdfs_path=None, del_local_after_load=False) -> None:
        self.worker.load_checkpoint(local_path, hdfs_path, del_local_after_load)


class InProcessRollout:
    """verl's AgentLoopManagerTQ with one AgentLoopWorkerTQ living in this process instead of a Ray actor
    (its LLM client: the tiny policy's stand-in server); waits for the episodes the worker spawns."""

    def __init__(self, config, policy, server):
        from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

        from opid_train.verl.dataset import OpidTaskDataset

        worker = object.__new__(AgentLoopWorkerTQ.__ray_metadata__.modified_class)  # its __init__ loads the GPU model config
        worker.__dict__.update(config=config, llm_client=server, teacher_client=None, reward_loop_worker_handles=None,
                               tokenizer=policy.tokenizer, processor=None, hf_model_type="llama",
                               dataset_cls=OpidTaskDataset, tools=[], distillation_enabled=False,
                               mm_processor_kwargs={}, background_tasks=set())
        self.worker = worker

    def generate_sequences(self, batch) -> None:
        async def run():
            await self.worker.generate_sequences(batch)
            await asyncio.gather(*list(self.worker.background_tasks))

        try:
            asyncio.run(run())
        finally:
            close_all()


class NoServers:
    """verl's checkpoint manager (weight sync to the vLLM servers) and reward loop, which have no work here:
    the stand-in server samples from the tiny policy itself and the agent loop scores its episodes."""

    reward_loop_worker_handles = ()

    def sleep_replicas(self):
        pass

    def update_weights(self, global_steps):
        pass


def opid_trainer(algo: str, policy, tmp_path, overrides=(), dp: int = DP, train_tasks: int = TASKS, workers=None):
    """`OpidTrainer` as verl's task runner builds it, with the GPU parts of `init()` replaced; verl's
    `_load_checkpoint` has run (global_steps: the step of the checkpoint it resumed from, else 0). The actor
    workers: `workers` (a group over verl's real worker) or the stand-in `ActorWorkers`."""
    from opid_train.verl.dataset import write_task_file
    from opid_train.verl.trainer import OpidTrainer

    cfg = step_config(algo, tmp_path / "run", overrides)
    for name, count in (("train", train_tasks), ("val", TASKS)):
        write_task_file(tmp_path / "run" / "tasks" / f"{name}.jsonl", EXPERT_ID, {"max_steps": 4}, "train", count)
    trainer = OpidTrainer(cfg)  # verl's constructor: replay buffer, roles, modes
    trainer.tokenizer, trainer.processor = policy.tokenizer, None
    trainer._init_dataloader()
    trainer._init_resource_pool_mgr()
    trainer.ref_in_actor = False
    trainer.actor_rollout_wg = trainer.ref_policy_wg = workers or ActorWorkers(policy, dp, cfg)
    trainer.checkpoint_manager = trainer.reward_loop_manager = NoServers()
    trainer.agent_loop_manager = InProcessRollout(cfg, policy, TinyServer(policy, seed=1))
    trainer._load_checkpoint()  # trainer.resume_mode (verl's default: auto)
    trainer.on_init_end()  # verl's weight sync (NoServers'), the run folder, SDAR's loss for the workers
    trainer._init_dump_executor()
    trainer.prev_step_profile = trainer.curr_step_profile = trainer.next_step_profile = False
    SkipManager.init(cfg)  # as fit() does
    return trainer


def read_rows(batch, fields):
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    return data, [not tag.get("is_padding", False) for tag in batch.tags]


def local_advantages(algo, trainer, data, real, policy, run_dir):
    """The local learner's advantage step on the same rows: trajectories rebuilt from the rows' records,
    `make_batch`, the algorithm's `prepare` with the tiny policy itself as the scoring policy."""
    rows = [i for i, ok in enumerate(real) if ok]
    records = [data["extra_fields"][i]["opid"] for i in rows]
    prompts = [data["prompts"][i].tolist() for i in rows]
    padded = data.select("responses", "response_mask", "old_log_probs").to_padded_tensor()
    idx = torch.tensor(rows)
    trajectories, where = trajectories_from_records(records, prompts, padded["responses"][idx],
                                                    padded["response_mask"][idx], padded["old_log_probs"][idx].float())
    batch = make_batch(trajectories)
    algorithm = make_algorithm(algo, trainer.opid)
    metrics = algorithm.prepare(batch, PrepareContext(policy, trainer.opid_template, run_dir, 0))
    row_of = {row: r for r, row in enumerate(batch.rows)}
    return batch, {i: row_of[where[k]] for k, i in enumerate(rows)}, metrics


class RecordingScorer:
    """Keeps what the trainer's teacher pass (`ActorScorer.score`) was asked and answered."""

    def __init__(self, scorer):
        self.scorer, self.calls = scorer, []

    def encode_prompt(self, text):
        return self.scorer.encode_prompt(text)

    def score(self, prompt_ids, response_ids, response_mask):
        out = self.scorer.score(prompt_ids, response_ids, response_mask)
        self.calls.append((prompt_ids, response_ids, response_mask, out))
        return out


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


@pytest.mark.slow
def test_the_teacher_pass_on_fewer_rows_than_ranks(transfer_queue, tiny_policy, tmp_path):
    """One teacher row, three data-parallel ranks, micro-batches of 2 rows: verl would hand two ranks nothing
    and one a share its micro-batch size does not divide; the pass pads the rows as verl pads its batches,
    scores the row as the tiny policy does and leaves no key behind."""
    rows_counted = ["actor_rollout_ref.actor.use_dynamic_bsz=false", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
                    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
                    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2"]
    trainer = opid_trainer("opid", tiny_policy, tmp_path, rows_counted)
    prompt = trainer.opid_scorer.encode_prompt("Your task is to: open the door. You see a key.")
    assert prompt == tiny_policy.encode_prompt("Your task is to: open the door. You see a key.")
    responses, mask = torch.tensor([[5, 9, 13, 0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    before = set(tq.kv_list("train").get("train", {}))
    logp = trainer.opid_scorer.score([prompt], responses, mask)
    torch.testing.assert_close(logp, tiny_policy.score([prompt], responses, mask), rtol=1e-5, atol=1e-5)
    assert trainer.actor_rollout_wg.shares == [[2] * DP]
    assert set(tq.kv_list("train").get("train", {})) == before


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "opid", "sdar"])
def test_one_verl_step_through_the_transfer_queue_gives_the_local_learners_advantages(
        algo, transfer_queue, tiny_policy, tmp_path):
    trainer = opid_trainer(algo, tiny_policy, tmp_path)
    trainer.opid_scorer = scorer = RecordingScorer(trainer.opid_scorer)
    trainer.global_steps = 1  # what fit() sets before its first step
    metrics, timing = {}, {}
    batch = trainer.step(metrics, timing)  # rollout .. advantages (verl's _step_once), no actor update

    data, real = read_rows(batch, ["prompts", "responses", "response_mask", "old_log_probs", "advantages",
                                   "returns", "extra_fields", *([TEACHER_LOGP, TEACHER_MASK] if algo == "sdar" else [])])
    assert not all(real) and sum(real) >= TASKS * GROUP  # verl padded the batch for the ranks; a row per step
    assert len(batch) % DP == 0 and all(len(set(s)) == 1 for s in trainer.actor_rollout_wg.shares)
    assert set(tq.kv_list("train").get("train", {})) == set(batch.keys)  # the teacher pass's rows are gone
    local, row_of, local_metrics = local_advantages(algo, trainer, data, real, tiny_policy, tmp_path / "local")
    assert local.advantages.abs().sum() > 0
    if algo == "sdar":
        assert local.extras["teacher_rows"].sum() > 0
    extras = {k: data[k] for k in (TEACHER_LOGP, TEACHER_MASK)} if algo == "sdar" else {}
    for i, ok in enumerate(real):
        advantage = data["advantages"][i]
        if not ok:
            assert advantage.abs().sum() == 0  # verl's padding rows carry nothing
            continue
        r = row_of[i]
        n = int(local.response_mask[r].sum())
        assert advantage.shape[0] == n  # written back per response token, verl's layout
        torch.testing.assert_close(advantage, local.advantages[r, :n], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(data["returns"][i], advantage)
        if algo == "sdar":
            has_teacher = float(local.extras["teacher_rows"][r])
            torch.testing.assert_close(extras[TEACHER_MASK][i], torch.full((n,), has_teacher))
            torch.testing.assert_close(extras[TEACHER_LOGP][i], local.extras["teacher_logp"][r, :n] * has_teacher,
                                       rtol=1e-5, atol=1e-5)
    for key in ("opid/teacher_active_token_ratio", "sdar/teacher_rows"):
        if key in local_metrics:
            assert metrics[key] == pytest.approx(local_metrics[key], rel=1e-5, abs=1e-6), key

    if algo in ("opid", "sdar"):
        assert scorer.calls, "the teacher pass never ran"
        for prompt_ids, response_ids, response_mask, out in scorer.calls:
            torch.testing.assert_close(out, tiny_policy.score(prompt_ids, response_ids, response_mask),
                                       rtol=1e-5, atol=1e-5)
            assert out.abs().sum() > 0
    if algo == "opid":
        assert metrics["opid/teacher_active_token_ratio"] > 0
    if algo == "sdar":  # the actor workers' loss: verl's PPO loss + the gated term reading the fields above
        from opid_train.verl.loss import SdarPPOLoss

        loss_fn = trainer.actor_rollout_wg.loss_fn
        assert isinstance(loss_fn, SdarPPOLoss) and loss_fn.sdar == trainer.opid.sdar
        assert loss_fn.config.clip_ratio == trainer.config.actor_rollout_ref.actor.clip_ratio

    trainer._compute_metrics(batch, metrics, {**timing, "step": sum(timing.values())}, global_steps=1, epoch=0)
    tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)
    trainer.opid_metrics.close()
    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["update"] == 0 and line["rollout_seconds"] == pytest.approx(timing["gen"])
    assert line["critic/score/mean"] == pytest.approx(metrics["critic/score/mean"])  # verl's own, kept
    assert line["actor/entropy"] > 0 and "training/off_policy/trajectory_staleness/mean" in line


@pytest.mark.slow
def test_fit_runs_a_step_and_leaves_the_local_run_folder(transfer_queue, tiny_policy, tmp_path):
    """verl's own `fit` loop (through `OpidTrainer.fit`) for one update and its validation, without the actor
    update: metrics.jsonl and curves.png as a local run leaves them, the TransferQueue emptied."""
    trainer = opid_trainer("opid", tiny_policy, tmp_path, ["trainer.total_training_steps=1", "trainer.save_freq=0",
                                                           "trainer.test_freq=1"])
    trainer.fit(trainer.agent_loop_manager)
    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["update"] == 0 and line["opid/teacher_active_token_ratio"] > 0 and line["training/global_step"] == 1
    assert f"val-core/{EXPERT_ID}/reward/mean@1" in line  # verl's validation played the val tasks
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    assert not tq.kv_list("train").get("train")


class Killed(Exception):
    """The run's process dying (a preempted node)."""


def run_lines(run_dir):
    """metrics.jsonl's lines; per update: skills.jsonl's lines, and the task ids and step count of the
    training trajectories in records.jsonl.gz."""
    from collections import Counter, defaultdict

    from opid_train.records import RECORDS_FILE, read_records

    metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
    skills = Counter(json.loads(line)["update"] for line in (run_dir / "skills.jsonl").read_text().splitlines())
    tasks, steps = defaultdict(list), Counter()
    for record in read_records(run_dir / RECORDS_FILE):
        if record.get("phase") == "train":
            tasks[record["update"]].append(record["task_id"])
            steps[record["update"]] += len(record["steps"])
    return metrics, skills, {u: sorted(ids) for u, ids in tasks.items()}, steps


@pytest.mark.slow
def test_fit_saves_verls_checkpoints_and_a_second_trainer_resumes_from_them(transfer_queue, tiny_policy, gloo_group,
                                                                             cpu_engine, tmp_path):
    """verl's `fit` with save_freq 2, verl's real actor worker updating the actor at each step, saves through
    verl's `_save_checkpoint` (the engine's `save_checkpoint`: the actor's shards, AdamW state, extra state with
    the LR schedule and the Hugging Face export by its FSDPCheckpointManager; the dataloader state, the tracker);
    the run dies in step 4's validation, after update 2 was logged past its last checkpoint (step 2). A second
    trainer on the same run folder with a fresh worker over other weights, resume_mode auto: verl's
    `_load_checkpoint` finds step 2 and loads the actor (weights, AdamW state after two updates, schedule: those
    saved, bit for bit) and the dataloader; `fit` goes on at step 3, and metrics.jsonl, skills.jsonl and
    records.jsonl.gz hold each update once. opid-eval reads the export of the last step. (That a resumed worker
    takes the very step the first would have: tests/verl/test_verl_engine_checkpoint_cpu.py; here the stand-in
    server samples from the tiny policy, not from the trained weights, and restarts with the second trainer.)"""
    from opid_train.learner import model_folder_of
    from opid_train.policy.presets import hf_policy
    from tests.verl.test_verl_engine_checkpoint_cpu import assert_same_state, training_state
    from tests.verl.test_verl_fsdp_engine_cpu import CPU_SETTINGS, engine_worker, full_weights, reference_policy

    run_dir, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints"
    overrides = ["trainer.total_training_steps=4", "trainer.save_freq=2", "trainer.test_freq=4",
                 "trainer.resume_mode=auto", "trainer.critic_warmup=0",
                 "actor_rollout_ref.actor.use_kl_loss=false", *CPU_SETTINGS]  # no reference pass: faster
    cfg = step_config("opid", run_dir, overrides)
    first_workers = EngineWorkers(engine_worker(tiny_policy, cfg, tmp_path / "model"))
    saved = {}

    def save_and_keep_the_state(local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        first_workers.worker.save_checkpoint(local_path, hdfs_path, global_step, max_ckpt_to_keep)
        saved[global_step] = training_state(first_workers.worker)

    first_workers.save_checkpoint = save_and_keep_the_state
    first = opid_trainer("opid", tiny_policy, tmp_path, overrides, dp=1, workers=first_workers,
                         train_tasks=3 * TASKS)  # 3 updates an epoch: the dataloader's position tells
    assert first.global_steps == 0

    def killed_in_validation():
        raise Killed

    first._validate = killed_in_validation
    with pytest.raises(Killed):
        first.fit(first.agent_loop_manager)
    assert list(saved) == [2]
    _, adam, schedule = saved[2]
    (adam_steps,) = {float(state["step"]) for state in adam.values()}  # one per mini-batch: several an update
    assert adam_steps >= 2 and schedule["last_epoch"] == 2  # the schedule: one step an update
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert sorted(p.name for p in ckpt.glob("global_step_*")) == ["global_step_2"]
    step2 = ckpt / "global_step_2"
    for name in ("model_world_size_1_rank_0.pt", "optim_world_size_1_rank_0.pt", "extra_state_world_size_1_rank_0.pt",
                 "fsdp_config.json", "huggingface/config.json", "huggingface/model.safetensors"):
        assert (step2 / "actor" / name).is_file(), name
    assert (step2 / "data.pt").is_file()
    metrics, skills, tasks, _ = run_lines(run_dir)
    assert [json.loads(line)["update"] for line in metrics] == [0, 1, 2]
    assert all(json.loads(line)["grad_norm"] > 0 for line in metrics)  # the actor was updated at each step
    assert sorted(skills) == sorted(tasks) == [0, 1, 2, 3]
    assert tasks[0] != tasks[2]  # different tasks: a dataloader not restored would replay update 0's
    # the cluster died with the run: a new one starts with an empty TransferQueue
    tq.kv_clear(keys=list(tq.kv_list("train").get("train", {})), partition_id="train")

    second_worker = engine_worker(reference_policy(tiny_policy), cfg, tmp_path / "other")  # other weights
    assert not torch.equal(full_weights(second_worker)["lm_head.weight"], saved[2][0]["lm_head.weight"])
    second = opid_trainer("opid", tiny_policy, tmp_path, overrides, dp=1, workers=EngineWorkers(second_worker),
                          train_tasks=3 * TASKS)
    assert second.global_steps == 2
    assert_same_state(training_state(second_worker), saved[2])
    assert [json.loads(line)["update"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [0, 1]

    second.fit(second.agent_loop_manager)
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "4"
    _, adam, schedule = training_state(second_worker)
    assert min(float(state["step"]) for state in adam.values()) > adam_steps and schedule["last_epoch"] == 4
    resumed, skills, resumed_tasks, steps = run_lines(run_dir)
    assert resumed[:2] == metrics[:2]  # the updates before the checkpoint, untouched
    assert [json.loads(line)["update"] for line in resumed] == [0, 1, 2, 3]
    assert [json.loads(line)["training/global_step"] for line in resumed] == [1, 2, 3, 4]
    assert f"val-core/{EXPERT_ID}/reward/mean@1" in json.loads(resumed[-1])
    assert {u: len(ids) for u, ids in resumed_tasks.items()} == {u: TASKS * GROUP for u in range(4)}  # recorded once
    assert resumed_tasks[2] == tasks[2]  # the dataloader went on where the checkpoint left it
    assert skills == steps  # one skills line per step row of each update

    folder = model_folder_of(run_dir)  # what `opid-eval --checkpoint RUN_DIR` evaluates
    assert folder == ckpt / "global_step_4" / "actor" / "huggingface"
    exported = hf_policy(folder).model.state_dict()
    for name, value in full_weights(second_worker).items():
        torch.testing.assert_close(exported[name].float(), value, rtol=0, atol=0)


@pytest.mark.slow
def test_fit_trains_verls_real_actor_engine_with_sdar(transfer_queue, tiny_policy, gloo_group, cpu_engine, tmp_path,
                                                      monkeypatch):
    """verl's `fit` for one SDAR update with verl's real workers (their FSDP engines on the CPU): old log-probs
    and OPID/SDAR's teacher pass by the actor's engine, the KL's reference log-probs by the reference worker
    (`test_verls_reference_worker_scores_the_rows_as_the_tiny_policy`: its CPUOffload left out), then the
    actor update with `SdarPPOLoss` reading the fields `_compute_advantage` wrote into the TransferQueue."""
    import torch.distributed.fsdp as torch_fsdp
    from verl.workers.engine_workers import ActorRolloutRefWorker

    from tests.verl.test_verl_fsdp_engine_cpu import CPU_SETTINGS, engine_worker, full_weights

    monkeypatch.setattr(torch_fsdp, "CPUOffload", lambda offload_params: None)
    overrides = ["trainer.total_training_steps=1", "trainer.save_freq=0", "trainer.test_freq=0",
                 "trainer.critic_warmup=0", *CPU_SETTINGS,
                 "+actor_rollout_ref.ref.fsdp_config.mixed_precision={param_dtype: fp32}"]
    cfg = step_config("sdar", tmp_path / "run", overrides)
    assert cfg.actor_rollout_ref.actor.use_kl_loss  # the presets' KL to the reference
    worker = engine_worker(tiny_policy, cfg, tmp_path / "model")
    reference = ActorRolloutRefWorker(cfg.actor_rollout_ref, role="ref")
    reference.init_model()
    before = full_weights(worker)
    trainer = opid_trainer("sdar", tiny_policy, tmp_path, overrides, dp=1, workers=EngineWorkers(worker, reference))
    trainer.fit(trainer.agent_loop_manager)
    after = full_weights(worker)
    assert all(not torch.equal(after[k], before[k]) for k in after)  # the actor was updated
    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["training/rollout_probs_diff_max"] < 1e-4  # the engine scores the rows as the server sampled them
    assert line["sdar/teacher_active_token_ratio"] > 0 and line["grad_norm"] > 0
    assert {"pg_loss", "loss", "sdar/gate_mean", "sdar/loss", "kl"} <= set(line)  # the update's, under the local names
    assert 0 <= line["kl"] < 1e-6  # one update from the reference's weights: the KL starts at 0
    assert not tq.kv_list("train").get("train")
