"""`opid-train --backend verl`: presets compose with verl's config files; on a machine without a GPU or
vLLM it stops early with one line naming what is missing; config mistakes are one line too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it

from omegaconf import OmegaConf

import tests.train.toy_expert  # noqa: F401
from opid_train.cli.train import main as opid_train
from opid_train.presets import load_preset
from opid_train.learner import KEEP_CHECKPOINTS
from opid_train.verl.config import PRESETS, compose_preset
from opid_train.verl.dataset import OpidTaskDataset
from tests.train.toy_expert import EXPERT_ID


def error_of(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        opid_train(argv)
    message = str(exc.value.code)
    assert message.startswith("opid-train --backend verl: ") and "\n" not in message
    return message


@pytest.mark.parametrize("preset", ["alfworld", "webshop", "searchqa"])
def test_bundled_presets_compose_with_verls_config_and_take_the_parity_presets_numbers(preset):
    cfg, train, rollout = compose_preset(preset, ["trainer.n_gpus_per_node=1"])
    # verl's own defaults are there, the preset's values on top
    assert cfg.actor_rollout_ref.actor.strategy == "fsdp" and cfg.critic.strategy == "fsdp"
    # one source: opid_train/presets/<preset>.yaml, the local backend's --preset
    parity = load_preset(preset)
    run, reference = parity["run"], parity["reference"]
    actor, rollout_cfg = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert (actor.optim.lr, actor.kl_loss_coef, actor.clip_ratio, actor.ppo_epochs) == (
        run["lr"], run["grpo"]["kl_coef"], run["grpo"]["clip_eps"], run["ppo_epochs"])
    assert (rollout_cfg.n, cfg.data.train_batch_size, cfg.data.max_response_length) == (
        run["group_size"], run["tasks_per_update"], run["max_new_tokens"])
    assert (rollout_cfg.temperature, rollout_cfg.val_kwargs.temperature) == (run["temperature"], run["eval"]["temperature"])
    assert cfg.trainer.total_training_steps == run.get("updates", 150) and rollout.num_eval_tasks == run["eval"]["episodes"]
    assert (train.env, train.algo, train.opid.w_ep, train.opid.w_step, train.opid.routing) == (
        parity["env"], run["algo"], run["opid"]["w_ep"], run["opid"]["w_step"], run["opid"]["routing"])
    assert (train.analyzer.max_step_skills, train.analyzer.backend) == (run["analyzer"]["max_step_skills"], "openai")
    # the reference block, through the local backend's resolve_parity (a pretrained policy: "reference")
    assert (train.parity, train.prompt, train.history_k) == ("reference", reference["prompt"], reference["history_k"])
    assert reference["env_kwargs"].items() <= train.env_kwargs.items()
    assert {k: getattr(train.grpo, k) for k in reference["grpo"]} == reference["grpo"]
    assert actor.clip_ratio_c == train.grpo.clip_ratio_c == 3.0  # dual clip: verl's actor runs the reference's bound
    assert cfg.opid.prompt == reference["prompt"]  # written into the config the Ray workers read
    assert cfg.data.train_files == f"{train.run_dir}/tasks/train.jsonl"  # interpolated from the opid section
    assert "${" not in OmegaConf.to_yaml(cfg)  # resolved here: verl's workers need no opid resolver
    assert cfg.trainer.max_actor_ckpt_to_keep == KEEP_CHECKPOINTS  # as the local backend: not every 50 GB checkpoint


def test_a_relative_run_folder_becomes_absolute_in_every_path_verls_workers_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # verl's task runner is a Ray actor: on a cluster it may start in another folder
    cfg, train, _ = compose_preset("alfworld", ["trainer.n_gpus_per_node=1", "opid.run_dir=runs/mine"])
    run_dir = tmp_path / "runs" / "mine"
    assert Path(train.run_dir) == run_dir and Path(cfg.opid.run_dir) == run_dir
    assert Path(cfg.trainer.default_local_dir) == run_dir / "checkpoints"
    assert Path(cfg.data.train_files) == run_dir / "tasks" / "train.jsonl"
    assert Path(cfg.data.val_files) == run_dir / "tasks" / "val.jsonl"


def test_the_grpo_baseline_takes_the_references_own_grpo_settings():
    _, train, _ = compose_preset("alfworld", ["trainer.n_gpus_per_node=1", "opid.algo=grpo"])
    assert train.grpo.normalize_std is False  # alfworld.yaml's per_algo: the reference's GRPO script is mean_norm


def test_a_preset_key_missing_from_the_parity_preset_is_one_clear_error(tmp_path):
    text = (PRESETS / "alfworld.yaml").read_text().replace("run.lr}", "run.no_such_lr}")
    (tmp_path / "mine.yaml").write_text(text)
    assert "opid_train/presets/alfworld.yaml has no run.no_such_lr" in error_of(["--backend", "verl", "--preset",
                                                                                str(tmp_path / "mine.yaml")])


def test_without_a_gpu_it_stops_with_one_line_naming_what_is_missing():
    message = error_of(["--backend", "verl", "--preset", "alfworld"])
    assert "\n" not in message and "a CUDA GPU" in message and "vllm" in message


@pytest.mark.parametrize("override, expected", [
    ("+opid.lr=1e-5", "opid.lr -> actor_rollout_ref.actor.optim.lr"),
    ("opid.algo=ppo", "opid.algo 'ppo' is not grpo, opid or sdar"),
    ("actor_rollout_ref.rollout.n=1", "a GRPO group needs at least 2 rollouts"),
    ("actor_rollout_ref.rollout.temperature=0", "verl rejects the config"),  # verl: sampled eval needs temperature > 0
    ("actor_rollout_ref.actor.no_such_key=1", "no_such_key"),
    ("algorithm.use_kl_in_reward=true", "algorithm.use_kl_in_reward must be false"),
    ("algorithm.rollout_correction.rollout_is=token", "algorithm.rollout_correction.rollout_is / rollout_rs"),
    ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu=1024", "ppo_max_token_len_per_gpu 1024 is below the longest row"),
    ("data.max_prompt_length=20000", "log_prob_max_token_len_per_gpu 16384 is below the longest row"),
    ("opid_rollout.env_workers=0", "cannot step in threads"),
    ("++opid.parity=ours", "opid.grpo.clip_ratio_c 0 (the parity mode's or yours) differs from "
                           "actor_rollout_ref.actor.clip_ratio_c 3.0"),
])
def test_config_mistakes_are_one_clear_error_before_any_work(override, expected):
    assert expected in error_of(["--backend=verl", "--preset", "alfworld", override])


def test_an_unknown_preset_lists_the_bundled_ones():
    assert "alfworld, searchqa, webshop" in error_of(["--backend", "verl", "--preset", "nope"])


def test_check_writes_the_task_files_the_dataset_reads(tmp_path):
    run_dir = tmp_path / "run"
    opid_train(["--backend", "verl", "--preset", "alfworld", "--check", f"opid.env={EXPERT_ID}", "~opid.env_kwargs.level",
                "opid.env_kwargs.max_steps=4",
                f"opid.run_dir={run_dir}", "opid_rollout.eval_split=test", "opid_rollout.num_eval_tasks=2"])
    train = OpidTaskDataset(str(run_dir / "tasks" / "train.jsonl"))
    val = OpidTaskDataset([str(run_dir / "tasks" / "val.jsonl")])
    assert [r["task_id"] for r in train.rows] == [0, 1, 2, 3, 4] and len(val) == 2
    row = train[3]
    assert row["agent_name"] == "opid_env" and row["env_id"] == EXPERT_ID and row["task_id"] == 3
    assert json.loads(row["env_kwargs"]) == {"max_steps": 4} and row["raw_prompt"][0]["role"] == "user"
    saved = OmegaConf.load(run_dir / "verl_config.yaml")
    assert saved.trainer.v1.trainer_mode == "opid_sync" and saved.opid.env == EXPERT_ID


def test_an_unknown_backend_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        opid_train(["--backend", "gpu", "--updates", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "opid-train: error: --backend 'gpu': expected one of local, verl"


def test_sdar_composes_with_its_reference_coefficients():
    _, train, _ = compose_preset("alfworld", ["trainer.n_gpus_per_node=1", "opid.algo=sdar"])
    assert train.algo == "sdar" and (train.sdar.coef, train.sdar.beta, train.sdar.gate) == (0.01, 5.0, "sigmoid")


LAUNCHES = {"1 GPU": ["trainer.n_gpus_per_node=1"], "8 GPUs": [], "4 nodes": ["trainer.nnodes=4"]}  # the README's lines


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
@pytest.mark.parametrize("preset", ["alfworld", "webshop", "searchqa"])
def test_every_launch_line_gives_verls_workers_shares_they_can_split(preset, launch):
    """verl pads a step's rows to a multiple of the ranks and of an update's mini-batch, and each rank splits
    its share of a log-prob pass, and of every mini-batch, into micro-batches (`prepare_micro_batches`).
    With micro-batches counted in rows it refuses a share their size does not divide, and per-step rows
    make any count: the 8-GPU paper run would stop at its first update."""
    import math

    import torch
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches

    cfg, _, _ = compose_preset(preset, LAUNCHES[launch])
    ranks = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    longest = cfg.data.max_prompt_length + cfg.data.max_response_length

    def split(rows: int, dynamic: bool, micro_rows, max_tokens: int):
        if dynamic:  # micro-batches by tokens take any count (the longest row must fit); balancing 1,000s of rows is slow
            rows = min(rows, 8)
        ids = torch.nested.as_nested_tensor([torch.zeros(longest, dtype=torch.long)] * rows, layout=torch.jagged)
        share = TensorDict({"input_ids": ids}, batch_size=rows)
        tu.assign_non_tensor(share, use_dynamic_bsz=dynamic, micro_batch_size_per_gpu=micro_rows,
                             max_token_len_per_gpu=max_tokens)  # as verl's worker sets them from the config
        assert prepare_micro_batches(share)[0]

    mini_rows = actor.ppo_mini_batch_size * rollout.n
    split(mini_rows // ranks, actor.use_dynamic_bsz, actor.ppo_micro_batch_size_per_gpu, actor.ppo_max_token_len_per_gpu)
    step_multiple = math.lcm(ranks, mini_rows)  # verl's _balance_batch pads a step's rows to it
    for times in (1, 3):
        split(step_multiple * times // ranks, rollout.log_prob_use_dynamic_bsz, rollout.log_prob_micro_batch_size_per_gpu,
              rollout.log_prob_max_token_len_per_gpu)


@pytest.mark.slow
def test_on_the_cpu_the_whole_command_reaches_verls_gpu_request(tmp_path, monkeypatch, tiny_policy):
    """The command as on a GPU node, past its GPU check: the task files and run folder, verl's `run_ppo`
    (a local Ray), opid's task runner as a Ray actor in its own process, where the `opid_sync` trainer
    must be registered and verl builds it, its tokenizer from the model folder and its dataloaders from
    opid's task files; it stops where verl asks Ray for the GPUs. (Ray gets 8 logical CPUs: the task
    runner and the TransferQueue's controller and storage each hold one, and with 2 verl waits forever.)"""
    import ray

    tiny_policy.save(tmp_path / "model")
    monkeypatch.setattr("opid_train.verl.main.missing_for_a_run", lambda engine: [])
    run_dir = tmp_path / "run"
    try:
        with pytest.raises(Exception, match="Total available GPUs 0 is less than total desired GPUs 1") as exc:
            opid_train(["--backend", "verl", "--preset", "alfworld", f"opid.run_dir={run_dir}", f"opid.env={EXPERT_ID}",
                        "~opid.env_kwargs.level", "opid_rollout.env_workers=0", "+opid.parity=reference",
                        f"actor_rollout_ref.model.path={tmp_path / 'model'}", "trainer.n_gpus_per_node=1",
                        "data.max_prompt_length=768", "data.max_response_length=8", "trainer.logger=[console]",
                        "ray_kwargs.ray_init.num_cpus=8", "transfer_queue.backend.SimpleStorage.num_data_storage_units=1"])
    finally:
        ray.shutdown()
    assert "opid_train/verl/trainer.py" in str(exc.value) and "_check_resource_available" in str(exc.value)
    assert (run_dir / "tasks" / "train.jsonl").is_file() and (run_dir / "verl_config.yaml").is_file()


def test_a_local_ray_with_fewer_cpus_than_verls_actors_hold_is_one_line_before_ray_starts(monkeypatch):
    """With fewer logical CPUs than its actors hold, verl waits forever at the TransferQueue's start (measured:
    2 CPUs for the task runner, controller and 1 storage unit hung; 3 reached the GPU request), so the command
    stops first and names the override; a cluster's Ray (RAY_ADDRESS, several nodes) is not counted here."""
    from opid_train.verl.main import ray_cpus_short

    monkeypatch.setattr("opid_train.verl.main.missing_for_a_run", lambda engine: [])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    message = error_of(["--backend", "verl", "--preset", "alfworld", "trainer.n_gpus_per_node=1",
                        "ray_kwargs.ray_init.num_cpus=12"])
    assert "hold 13 CPUs (task runner and TransferQueue controller 2, 8 storage units, 3 for each of 1 GPUs)" in message
    assert "this Ray has 12" in message and "ray_kwargs.ray_init.num_cpus=13" in message
    assert ray_cpus_short(compose_preset("alfworld", ["trainer.n_gpus_per_node=1", "ray_kwargs.ray_init.num_cpus=13"])[0]) is None
    cfg, _, _ = compose_preset("alfworld", ["transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
                                            "ray_kwargs.ray_init.num_cpus=2", "trainer.n_gpus_per_node=1"])
    assert "hold 6 CPUs" in ray_cpus_short(cfg)
    cfg.trainer.nnodes = 2
    assert ray_cpus_short(cfg) is None
    cfg.trainer.nnodes = 1
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_cpus_short(cfg) is None
