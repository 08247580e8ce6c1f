"""The verl run folder is the local backend's: config.yaml and run_info.json as opid-train writes them
(verl's values for the keys verl owns), metrics.jsonl with the local metric names from verl's metric
dicts, rollout records from the advantage step's Batch, and Hugging Face checkpoints, laid out as verl
writes them, that opid-eval finds and evaluates."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it

import torch
from omegaconf import OmegaConf

from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.cli.eval import main as opid_eval
from opid_train.cli.train import main as opid_train
from opid_train.config import TrainConfig, load_yaml, with_overrides
from opid_train.learner import make_batch, model_folder_of
from opid_train.metrics import MetricsLogger
from opid_train.records import RunRecorder, read_records
from opid_train.verl.advantage import compute_advantages
from opid_train.verl.run_folder import local_metrics
from tests.train.toy_expert import EXPERT_ID
from tests.verl.conftest import verl_batch
from wrappers import agent_config


def test_check_writes_config_yaml_with_verls_values_and_run_info(tmp_path):
    run_dir = tmp_path / "run"
    opid_train(["--backend", "verl", "--preset", "alfworld", "--check", f"opid.env={EXPERT_ID}", "~opid.env_kwargs.level",
                f"opid.run_dir={run_dir}", "opid_rollout.eval_split=null", "actor_rollout_ref.actor.optim.lr=3e-6",
                "actor_rollout_ref.rollout.n=4", "trainer.n_gpus_per_node=4", "opid.algo=sdar"])
    cfg = load_yaml(run_dir / "config.yaml")  # the local backend's reader
    assert (cfg.env, cfg.algo, cfg.lr, cfg.group_size, cfg.tasks_per_update, cfg.updates) == (EXPERT_ID, "sdar", 3e-6, 4, 16, 160)
    assert (cfg.grpo.kl_coef, cfg.grpo.clip_eps, cfg.max_new_tokens, cfg.temperature) == (0.01, 0.2, 512, 1.0)
    assert cfg.minibatch_size == 16 * 4 and cfg.policy == "/models/Qwen2.5-3B-Instruct" and cfg.init is None
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["backend"] == "verl" and info["tasks"] == {"train": 5} and info["seed"] == 0 and "torch" in info["versions"]
    saved = OmegaConf.load(run_dir / "verl_config.yaml")
    assert "hf_model" in saved.actor_rollout_ref.actor.checkpoint.save_contents


def test_a_start_on_verls_checkpoints_keeps_the_runs_first_record(tmp_path, monkeypatch):
    """verl resumes by itself (resume_mode auto) when its tracker file names a checkpoint: then
    run_info.json keeps the first start's command and time and adds this start under `resumed`."""
    from opid_train.verl.config import compose_preset
    from opid_train.verl.main import resumes_from_checkpoint

    run_dir = tmp_path / "run"
    args = ["--backend", "verl", "--preset", "alfworld", "--check", f"opid.env={EXPERT_ID}", "~opid.env_kwargs.level",
            f"opid.run_dir={run_dir}", "opid_rollout.eval_split=null"]
    cfg, _, _ = compose_preset("alfworld", args[5:])
    assert not resumes_from_checkpoint(cfg)
    monkeypatch.setattr("sys.argv", ["opid-train", *args])
    opid_train(args)
    first = json.loads((run_dir / "run_info.json").read_text())
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("2")  # as verl's save writes it
    assert resumes_from_checkpoint(cfg)
    cfg.trainer.resume_mode = "disable"
    assert not resumes_from_checkpoint(cfg)
    monkeypatch.setattr("sys.argv", ["opid-train", *args, "trainer.total_training_steps=9"])
    opid_train([*args, "trainer.total_training_steps=9"])
    info = json.loads((run_dir / "run_info.json").read_text())
    assert {k: info[k] for k in first} == first
    assert [r["argv"][-1] for r in info["resumed"]] == ["trainer.total_training_steps=9"]
    assert info["resumed"][0]["tasks"] == {"train": 5}


def test_a_preset_without_hf_checkpoints_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="save_contents needs hf_model"):
        opid_train(["--backend", "verl", "--preset", "alfworld", "--check",
                    "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra]"])


def verl_actor_metrics(loss_metrics: dict) -> dict:
    """The actor metrics as verl's v1 trainer logs them: the loss function's (Metric or number), the
    engine's loss and grad_norm, prefixed 'actor/' by the trainer (`rename_dict`)."""
    from verl.utils.metric import Metric
    from verl.utils.py_functional import rename_dict

    plain = {k: (Metric.aggregate_dp([v]) if isinstance(v, Metric) else v) for k, v in loss_metrics.items()}
    return rename_dict({**plain, "loss": 0.25, "grad_norm": 1.5, "lr": 1e-6}, "actor/")


def test_metrics_jsonl_has_the_local_names_from_verls_metrics(tmp_path):
    from verl.utils.metric import AggregationType, Metric

    # the keys verl's ppo_loss and opid's SdarPPOLoss return (values made up)
    loss_metrics = {"actor/pg_loss": Metric(AggregationType.SUM, 0.5), "actor/pg_clipfrac": 0.1, "actor/ppo_kl": 0.01,
                    "kl_loss": Metric(AggregationType.SUM, 0.02), "kl_coef": 0.01, "sdar/gate_mean": 0.4,
                    "sdar/loss": 0.003}
    verl_metrics = {**verl_actor_metrics(loss_metrics), "timing_s/gen": 3.0, "timing_s/step": 5.0,
                    "perf/throughput": 100.0, "success": 0.5, "opid/teacher_active_token_ratio": 0.7}
    logger = MetricsLogger(tmp_path, {}, tensorboard=False)
    logger.log(4, local_metrics(verl_metrics))
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert {k: row[k] for k in ("update", "pg_loss", "pg_clipfrac", "kl", "loss", "grad_norm", "sdar/gate_mean",
                                "sdar/loss", "rollout_seconds", "update_seconds", "success",
                                "opid/teacher_active_token_ratio")} == {
        "update": 4, "pg_loss": 0.5, "pg_clipfrac": 0.1, "kl": 0.02, "loss": 0.25, "grad_norm": 1.5,
        "sdar/gate_mean": 0.4, "sdar/loss": 0.003, "rollout_seconds": 3.0, "update_seconds": 2.0, "success": 0.5,
        "opid/teacher_active_token_ratio": 0.7}
    assert row["actor/ppo_kl"] == 0.01 and row["perf/throughput"] == 100.0  # verl's own, kept
    assert not {"actor/pg_loss", "actor/kl_loss", "actor/sdar/gate_mean"} & set(row)


def test_verls_numpy_and_torch_metric_values_reach_metrics_jsonl(tmp_path):
    """verl's _compute_metrics returns numpy scalars (e.g. training/num_turns/max, an int32) and 0-d tensors;
    json cannot write them as they are."""
    import numpy as np
    import torch

    verl_metrics = {"training/num_turns/max": np.int32(2), "critic/score/mean": np.float32(0.25),
                    "training/off_policy/trajectory_spans/max": np.int64(1), "actor/entropy": torch.tensor(1.5)}
    logger = MetricsLogger(tmp_path, {}, tensorboard=False)
    logger.log(0, local_metrics(verl_metrics))
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"update": 0, "training/num_turns/max": 2, "critic/score/mean": 0.25,
                   "training/off_policy/trajectory_spans/max": 1, "actor/entropy": 1.5}


def test_records_from_the_verl_advantage_step_equal_the_local_ones(trajectories, tiny_policy, tmp_path):
    cfg = with_overrides(TrainConfig(), {"algo": "opid", "opid.w_ep": 0.1, "opid.w_step": 0.1})
    template = agent_config(EXPERT_ID).template
    local = make_batch(trajectories)
    ctx = PrepareContext(tiny_policy, template, tmp_path / "local", 0)
    make_algorithm("opid", cfg).prepare(local, ctx)
    RunRecorder(tmp_path / "local.jsonl.gz", method="opid", tokenizer=tiny_policy.tokenizer).training_update(0, local, ctx.details)

    verl_ctx = PrepareContext(tiny_policy, template, tmp_path / "verl", 0)
    result = compute_advantages(verl_batch(trajectories, tiny_policy.pad_id), make_algorithm("opid", cfg), verl_ctx)
    RunRecorder(tmp_path / "verl.jsonl.gz", method="opid", tokenizer=tiny_policy.tokenizer).training_update(
        0, result.batch, verl_ctx.details)

    def by_episode(path):  # group and trajectory numbers are verl's order of rows; the episodes are the same
        return {(r["task_id"], tuple(s["response"] for s in r["steps"])): {k: v for k, v in r.items()
                                                                         if k not in ("group_id", "traj_id")}
                for r in read_records(path)}

    local_records, verl_records = by_episode(tmp_path / "local.jsonl.gz"), by_episode(tmp_path / "verl.jsonl.gz")
    assert len(verl_records) == len(trajectories) == len(local_records)
    assert verl_records == local_records
    assert any("next_observation" in r["steps"][-1] for r in verl_records.values())
    # the skills file is written by the same prepare, in the run folder: one line per step, the same lines
    def skill_lines(path):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        return sorted(json.dumps({k: v for k, v in line.items() if k not in ("group_id", "traj_id")}) for line in lines)

    assert skill_lines(tmp_path / "verl" / "skills.jsonl") == skill_lines(tmp_path / "local" / "skills.jsonl")


def save_like_verl(policy, step_dir, hf_model: bool = True):
    """global_step_N/ as verl 0.9's FSDP checkpoint manager leaves it: actor/ with the sharded state and
    fsdp_config.json, actor/huggingface/ with config and tokenizer, and (hf_model) bf16 safetensors."""
    actor = step_dir / "actor"
    hf = actor / "huggingface"
    hf.mkdir(parents=True)
    torch.save({}, actor / "model_world_size_1_rank_0.pt")
    (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": 1}))
    policy.model.config.save_pretrained(hf)
    policy.tokenizer.save_pretrained(hf)
    if hf_model:
        bf16 = {k: v.to(torch.bfloat16) for k, v in policy.model.state_dict().items()}
        policy.model.save_pretrained(hf, state_dict=bf16)


def test_opid_eval_reads_the_newest_hf_model_of_a_verl_run(tiny_policy, tmp_path):
    run_dir = tmp_path / "run"
    save_like_verl(tiny_policy, run_dir / "checkpoints" / "global_step_2")
    save_like_verl(tiny_policy, run_dir / "checkpoints" / "global_step_10")
    save_like_verl(tiny_policy, run_dir / "checkpoints" / "global_step_12", hf_model=False)  # no weights: skipped
    (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("12")
    expected = run_dir / "checkpoints" / "global_step_10" / "actor" / "huggingface"
    assert model_folder_of(run_dir) == expected == model_folder_of(run_dir / "checkpoints")
    assert model_folder_of(run_dir / "checkpoints" / "global_step_2") == run_dir / "checkpoints" / "global_step_2" / "actor" / "huggingface"
    out = tmp_path / "eval.json"
    opid_eval(["--checkpoint", str(run_dir), "--env", EXPERT_ID, "--env_kwargs", '{"max_steps": 2}', "--split", "test",
               "--episodes", "2", "--mode", "greedy", "--out", str(out), "--no_record", "--max_new_tokens", "8"])
    report = json.loads(out.read_text())
    assert report["checkpoint"] == str(expected) and report["results"]["greedy"]["test"]["all"]["episodes"] == 2


def test_a_verl_run_without_hf_weights_is_one_clear_error(tiny_policy, tmp_path):
    save_like_verl(tiny_policy, tmp_path / "run" / "checkpoints" / "global_step_3", hf_model=False)
    with pytest.raises(ValueError, match="hf_model"):
        model_folder_of(tmp_path / "run")
