"""A first run that learns or says why not: the default warm start, the console line, the
no-signal warning; and the loggers (TensorBoard on by default, a missing one named up front)."""

from __future__ import annotations

import importlib.util
import re

import pytest

from opid_envs.core import MissingDependencyError
from opid_train.cli.train import main, parse_args, train
from opid_train.config import TrainConfig, WarmstartConfig
from opid_train.learning_signal import AUTO_WARMSTART_EPISODES, SignalWatch, with_learning_defaults

EXPERT = "tests.train.toy_expert:OPIDTest/KeyDoorExpert-v0"
SMALL = ["--tiny.hidden-size", "32", "--tiny.num-layers", "1", "--tiny.num-heads", "2", "--tiny.intermediate-size", "64",
         "--tiny.vocab-size", "300", "--threads", "1", "--no-progress", "--tasks-per-update", "2",
         "--group-size", "2", "--max-new-tokens", "6", "--env-kwargs", '{"max_steps": 3}']


def test_the_tiny_policy_warm_starts_by_default_on_an_env_with_an_expert(toy_id):
    logs = []
    cfg = with_learning_defaults(TrainConfig(env=EXPERT), logs.append)
    assert cfg.warmstart.episodes == AUTO_WARMSTART_EPISODES and "--warmstart.episodes 0 turns it off" in logs[0]
    assert with_learning_defaults(TrainConfig(env=EXPERT, warmstart=WarmstartConfig(episodes=0))).warmstart.episodes == 0
    assert with_learning_defaults(TrainConfig(env=EXPERT, policy="smollm2-135m")).warmstart.episodes == 0
    assert with_learning_defaults(TrainConfig(env=EXPERT, init="runs/x/initial")).warmstart.episodes == 0
    logs = []
    assert with_learning_defaults(TrainConfig(env=toy_id), logs.append).warmstart.episodes == 0  # no expert
    assert "has no expert_action()" in logs[0] and "format-invalid" in logs[0]


def test_the_warning_comes_after_quiet_updates_and_says_what_to_try():
    watch = SignalWatch(quiet_updates=3)
    quiet = {"signal_groups": 0.0, "success": 0.0, "format_invalid_rate": 1.0}
    assert watch.update(quiet) is None and watch.update(quiet) is None
    warning = watch.update(quiet)
    assert "no rollout group has carried a learning signal for 3 updates" in warning
    assert "--warmstart.episodes" in warning and "--group-size" in warning
    assert watch.update(quiet) is None  # once per quiet stretch
    assert watch.update({**quiet, "signal_groups": 0.5}) is None and watch.quiet == 0
    warm = SignalWatch(quiet_updates=1, warm_started=True).update(quiet)
    assert "a longer warm start (more --warmstart.epochs" in warm and "BC loss" in warm


@pytest.mark.slow
def test_a_run_that_cannot_learn_says_so_on_the_console(toy_id, tmp_path, monkeypatch):
    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    logs = []
    cfg = parse_args(["--env", toy_id, "--updates", "3", "--run-dir", str(tmp_path / "run"), "--no-tensorboard",
                      *SMALL]).run
    train(cfg, log=logs.append)
    lines = [line for line in logs if line.startswith("update ")]
    assert len(lines) == 3
    for line in lines:  # an untrained tiny model writes no well-formed response: no group differs
        assert re.search(r"success 0\.00 format-invalid 1\.00 groups with signal 0\.00 loss", line), line
    warnings = [line for line in logs if line.startswith("WARNING")]
    assert len(warnings) == 1 and "for 3 updates" in warnings[0] and "a warm start" in warnings[0]
    assert logs.index(warnings[0]) == logs.index(lines[-1]) + 1


@pytest.mark.slow
def test_bare_tensorboard_flag_writes_tb_events(toy_id, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    main(["--env", toy_id, "--updates", "1", "--run-dir", str(run_dir), "--tensorboard", *SMALL])
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_logger_flag_without_its_package_fails_before_the_run_starts(toy_id, tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["--env", toy_id, "--run-dir", str(run_dir), "--wandb", *SMALL])
    assert exit_info.value.code == 2
    assert "--wandb True: needs the 'wandb' package, which is not installed: pip install 'opid[wandb]'" in capsys.readouterr().err
    assert not run_dir.exists()
