"""Bad options fail before any work starts, as one line that names the option, the bad value and
what is allowed (exit status 2); a traceback only with --debug / OPID_DEBUG=1. Nothing here runs
a warm start or a rollout: each case fails in validation or not at all."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

import tests.train.toy_expert  # noqa: F401  (registers the toy env with an expert)
from opid_envs import play
from opid_train.cli import eval as eval_cli
from opid_train.cli import main as main_job
from opid_train.cli import reported_errors
from opid_train.cli import train as train_cli
from opid_train.config import ConfigError, TrainConfig, load_yaml, validate
from opid_train.policy.presets import TinyConfig, hf_policy, tiny_policy

TOY = "tests.train.toy_expert:OPIDTest/KeyDoorExpert-v0"
# small enough that today's code, which validated nothing, got through a run quickly to its failure
SMALL = ["--env", TOY, "--env-kwargs", '{"max_steps": 4}', "--tiny.hidden-size", "32", "--tiny.num-layers", "1",
         "--tiny.num-heads", "2", "--tiny.intermediate-size", "64", "--tiny.vocab-size", "600", "--threads", "1",
         "--tasks-per-update", "1", "--group-size", "2", "--max-new-tokens", "4", "--updates", "1",
         "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, private_opid_cache):
    """A small saved model (what a run's initial/ or final/ holds)."""
    folder = tmp_path_factory.mktemp("model") / "final"
    config = TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=300)
    tiny_policy(["go left", "go right", "take key", "open door"], config=config).save(folder)
    return folder


@pytest.fixture
def corrupt_model(model_folder, tmp_path):
    """A copy of the model whose safetensors file is cut in half."""
    folder = tmp_path / "corrupt"
    shutil.copytree(model_folder, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return folder


def fails_in_one_line(capsys, entry, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        entry(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, expected", [
    (["--algo", "ppo"], ["--algo 'ppo'", "grpo, opid, sdar"]),
    (["--algo", "opid", "--analyzer.backend", "gpt"], ["--analyzer.backend 'gpt'", "offline, openai, local"]),
    (["--updates", "-3"], ["--updates -3", "integer >= 0"]),
    (["--group-size", "0"], ["--group-size 0", "integer >= 1"]),
    (["--lr", "nan"], ["--lr nan", "a number"]),
    (["--temperature", "0"], ["--temperature 0.0", "> 0"]),
    (["--warmstart.skill-share", "1.5"], ["--warmstart.skill-share 1.5", "from 0 to 1"]),
    (["--eval.splits", "valid_seen"], ["--eval.splits 'valid_seen'", "train, test"]),
    (["--env", "OPID/Nope-v0"], ["--env 'OPID/Nope-v0'", "OPID/ALFWorld-v0"]),
    (["--env-kwargs", '{"max_stepz": 3}'], ["--env-kwargs", "'max_stepz'", "max_steps"]),
    (["--policy", "/no/such/model"], ["--policy '/no/such/model'", "tiny, smollm2-135m or a local model folder"]),
    (["--updates", "many"], ["--updates 'many'", "an integer"]),
    (["--grpo.loss-agg", "mean"], ["--grpo.loss-agg 'mean'", "token-mean, traj-mean"]),
    (["--tiny.num-heads", "3"], ["--tiny.num-heads 3", "divisor of --tiny.hidden-size"]),
    (["--device", "tpu"], ["--device 'tpu'", "cpu"]),
    (["--algo", "opid", "--analyzer.backend", "local", "--analyzer.model", "/no/such"], ["--analyzer.model '/no/such'"]),
    (["--opid.start-update", "3", "--opid.stop-update", "2"], ["--opid.stop-update 2", "> --opid.start-update (3)"]),
    (["--parity", "paper"], ["--parity 'paper'", "auto, reference, ours"]),
    (["--prompt", "alfworld-fancy"], ["--prompt 'alfworld-fancy'", "alfworld-reference"]),
    (["--grpo.outcome-advantage", "rloo"], ["--grpo.outcome-advantage 'rloo'", "verl_agent"]),
    (["--grpo.clip-ratio-c", "1"], ["--grpo.clip-ratio-c 1.0", "0 (no dual clip) or a number > 1"]),
    (["--history-k", "-1"], ["--history-k -1", "integer >= 0"]),
    (["--record.every", "0"], ["--record.every 0", "integer >= 1"]),
])
def test_opid_train_rejects_a_bad_option_before_any_work(tmp_path, capsys, argv, expected):
    run_dir = tmp_path / "run"
    err = fails_in_one_line(capsys, train_cli.main, ["--run-dir", str(run_dir), *SMALL, *argv])
    assert err.startswith("opid-train: error: --")
    for fragment in expected:
        assert fragment in err, err
    assert not run_dir.exists()  # nothing written: no config, no warm start, no final/


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_asking_for_wandb_without_the_package_fails_before_any_work(tmp_path, capsys):
    err = fails_in_one_line(capsys, train_cli.main, ["--run-dir", str(tmp_path / "run"), *SMALL, "--wandb"])
    assert "--wandb True: needs the 'wandb' package" in err and "opid[wandb]" in err


def test_opid_train_names_a_corrupt_init_model_file(tmp_path, capsys, corrupt_model):
    err = fails_in_one_line(capsys, train_cli.main, ["--run-dir", str(tmp_path / "run"), *SMALL,
                                                     "--init", str(corrupt_model)])
    assert "--init" in err and str(corrupt_model / "model.safetensors") in err and "truncated" in err


def test_a_yaml_config_with_a_wrong_type_fails_before_any_work(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("updates: many\n")
    err = fails_in_one_line(capsys, train_cli.main, ["--config", str(path), "--run-dir", str(tmp_path / "run")])
    assert "--updates 'many': expected an integer" in err
    path.write_text("[1, 2]\n")
    assert "must be a YAML mapping" in fails_in_one_line(capsys, train_cli.main, ["--config", str(path)])
    assert "--config" in fails_in_one_line(capsys, train_cli.main, ["--config", str(tmp_path / "missing.yaml")])


def test_debug_flag_or_opid_debug_shows_the_traceback(tmp_path, monkeypatch):
    argv = ["--run-dir", str(tmp_path / "run"), *SMALL, "--algo", "ppo"]
    with pytest.raises(ConfigError, match="--algo 'ppo'"):
        train_cli.main([*argv, "--debug"])
    monkeypatch.setenv("OPID_DEBUG", "1")
    with pytest.raises(ConfigError, match="--algo 'ppo'"):
        train_cli.main(argv)


def test_other_failures_are_one_line_with_exit_status_1(capsys):
    with pytest.raises(SystemExit) as exit_info:
        with reported_errors("opid-x"):
            raise RuntimeError("the disk is full\nsecond line of detail")
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.strip() == ("opid-x: error: RuntimeError: the disk is full "
                           "(--debug or OPID_DEBUG=1 shows the traceback)")


def test_defaults_and_the_main_job_preset_validate():
    validate(TrainConfig())
    validate(main_job.main_config())


def test_fresh_start_refuses_a_folder_holding_another_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "update_00001").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("algo: opid\n")
    (run_dir / "metrics.jsonl").write_text('{"update": 0}\n')
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    err = fails_in_one_line(capsys, train_cli.main, ["--run-dir", str(run_dir), *SMALL])
    assert "--run-dir" in err and "holds another run" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert (run_dir / "checkpoints" / "update_00001").is_dir()


def test_overwrite_removes_only_the_old_runs_files(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "update_00001").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"update": 0}\n')
    (run_dir / "notes.txt").write_text("mine")
    train_cli.claim_run_folder(run_dir, overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]


def test_resume_and_overwrite_together_are_refused(capsys):
    assert "--resume" in fails_in_one_line(capsys, train_cli.main, [*SMALL, "--resume", "--overwrite"])


# -- opid-eval -------------------------------------------------------------------------------------
def test_opid_eval_with_a_missing_checkpoint_names_it(tmp_path, capsys):
    missing = tmp_path / "runs" / "nope"
    err = fails_in_one_line(capsys, eval_cli.main, ["--checkpoint", str(missing), "--env", TOY, "--split", "test"])
    assert f"--checkpoint '{missing}': no such file or folder" in err and "unknown policy" not in err


def test_opid_eval_with_an_unknown_split_lists_the_envs_splits(capsys, model_folder):
    err = fails_in_one_line(capsys, eval_cli.main, ["--checkpoint", str(model_folder), "--env", TOY,
                                                    "--split", "test,valid_unseen"])
    assert "--split 'valid_unseen'" in err and "train, test" in err


def test_opid_eval_names_a_corrupt_safetensors_file(capsys, corrupt_model):
    err = fails_in_one_line(capsys, eval_cli.main, ["--checkpoint", str(corrupt_model), "--env", TOY, "--split", "test"])
    assert str(corrupt_model / "model.safetensors") in err and "truncated" in err
    with pytest.raises(ValueError, match="model.safetensors: corrupt or truncated"):
        hf_policy(corrupt_model)  # and so does loading it from Python


@pytest.mark.parametrize("argv, expected", [
    (["--mode", "best"], "--mode 'best': expected one of greedy, sampled, both"),
    (["--samples", "0"], "--samples 0: expected an integer >= 1"),
    (["--env-kwargs", "[1]"], "--env-kwargs '[1]': expected a JSON object"),
    (["--env", "Nope-v0"], "--env 'Nope-v0': not a registered env"),
])
def test_opid_eval_rejects_bad_options(capsys, model_folder, argv, expected):
    err = fails_in_one_line(capsys, eval_cli.main, ["--checkpoint", str(model_folder), "--env", TOY,
                                                    "--split", "test", *argv])
    assert expected in err


# -- the main job and opid-play --------------------------------------------------------------------
@pytest.mark.parametrize("argv, expected", [
    (["--seeds", "0,x"], "--seeds '0,x': expected comma-separated integers >= 0"),
    (["--updates", "-3"], "--updates -3: expected an integer >= 0"),
    (["--init", "{root}/seed{{seed}}/initial"], "--init '{root}/seed1/initial'"),
])
def test_main_job_rejects_bad_options_before_the_first_run(tmp_path, capsys, argv, expected):
    root = tmp_path / "main"
    argv = [a.format(root=root) for a in argv]
    err = fails_in_one_line(capsys, main_job.main, ["--seeds", "1", "--run-root", str(root), *SMALL,
                                                    "--eval.splits", "test", *argv])
    assert expected.format(root=root) in err
    assert not root.exists()


@pytest.mark.parametrize("argv, expected", [
    (["OPID/Nope-v0"], "env 'OPID/Nope-v0': no environment 'OPID/Nope-v0' is registered"),
    (["nope.module:OPID/Nope-v0"], "env 'nope.module:OPID/Nope-v0': cannot import 'nope.module'"),
    (["alfworld", "--episodes", "0"], "--episodes 0: expected an integer >= 1"),
    (["alfworld", "--max-steps", "0"], "--max-steps 0: expected an integer >= 1"),
    (["alfworld", "--agent", "robot"], "--agent: invalid choice: 'robot'"),
    (["alfworld", "--env-kwargs", "[1]"], "--env-kwargs '[1]': expected a JSON object"),
])
def test_opid_play_rejects_bad_options(capsys, argv, expected):
    err = fails_in_one_line(capsys, play.main, argv)
    assert err.startswith("opid-play: error:") and expected in err


def test_yaml_numbers_in_exponent_notation_are_numbers(tmp_path):
    path = tmp_path / "run.yaml"  # PyYAML reads 1e-4 (no dot) as a string
    path.write_text("lr: 3e-4\nwarmstart:\n  lr: 2e-3\ndevice: null\n")
    cfg = validate(load_yaml(path))
    assert (cfg.lr, cfg.warmstart.lr, cfg.device) == (3e-4, 2e-3, None)


def test_opid_play_still_plays_an_env_named_with_its_module(capsys):
    assert play.main([TOY, "--agent", "random", "--episodes", "1", "--max-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "Played 1 episode(s)" in out
