"""`opid-train --backend verl`: presets compose with verl's config files; on a machine without a GPU or
vLLM it stops early with one line naming what is missing; config mistakes are one line too."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it

from omegaconf import OmegaConf

import tests.train.toy_expert  # noqa: F401
from opid_train.cli.train import main as opid_train
from opid_train.verl.config import compose_preset
from opid_train.verl.dataset import OpidTaskDataset
from tests.train.toy_expert import EXPERT_ID


def error_of(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        opid_train(argv)
    message = str(exc.value.code)
    assert message.startswith("opid-train --backend verl: ") and "\n" not in message
    return message


@pytest.mark.parametrize("preset", ["alfworld", "webshop", "searchqa"])
def test_bundled_presets_compose_with_verls_config_and_pass_its_checks(preset):
    cfg, train, rollout = compose_preset(preset, ["trainer.n_gpus_per_node=1"])
    # verl's own defaults are there, the preset's values on top
    assert cfg.actor_rollout_ref.actor.strategy == "fsdp" and cfg.critic.strategy == "fsdp"
    assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6 and cfg.actor_rollout_ref.rollout.n == 8
    assert cfg.actor_rollout_ref.actor.kl_loss_type == "low_var_kl" and cfg.actor_rollout_ref.actor.clip_ratio == 0.2
    assert cfg.actor_rollout_ref.rollout.temperature == 1.0 and cfg.actor_rollout_ref.rollout.val_kwargs.temperature == 0.4
    assert cfg.data.max_response_length == 512 and cfg.trainer.total_training_steps == 150
    assert train.algo == "opid" and train.opid.w_ep == train.opid.w_step == 1e-3 and train.analyzer.backend == "openai"
    assert cfg.data.train_files == f"{train.run_dir}/tasks/train.jsonl"  # interpolated from the opid section


def test_without_a_gpu_it_stops_with_one_line_naming_what_is_missing():
    message = error_of(["--backend", "verl", "--preset", "alfworld"])
    assert "\n" not in message and "a CUDA GPU" in message and "vllm" in message


@pytest.mark.parametrize("override, expected", [
    ("+opid.lr=1e-5", "opid.lr -> actor_rollout_ref.actor.optim.lr"),
    ("opid.algo=ppo", "opid.algo 'ppo' is not grpo, opid or sdar"),
    ("actor_rollout_ref.rollout.n=1", "a GRPO group needs at least 2 rollouts"),
    ("data.train_batch_size=4", "verl rejects the config"),
    ("actor_rollout_ref.actor.no_such_key=1", "no_such_key"),
    ("opid_rollout.env_workers=0", "cannot step in threads"),
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
