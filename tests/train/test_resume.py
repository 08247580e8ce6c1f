"""--resume never destroys a run: it resumes from the newest checkpoint that loads and says which
and why, and when none loads it stops without changing a file. Each case damages a copy of one
finished 3-update run (checkpoints update_00002 and update_00003) and resumes it in-process; the
resumed run must end bit-identical to the undamaged one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tests.train.toy_expert  # noqa: F401  (registers the toy env with an expert)
from opid_train.cli.train import main
from opid_train.learner import Learner, latest_checkpoint
from opid_train.policy.presets import TinyConfig, tiny_policy

TOY = "tests.train.toy_expert:OPIDTest/KeyDoorExpert-v0"
ARGS = ["--env", TOY, "--env-kwargs", '{"max_steps": 6}', "--tiny.hidden-size", "32", "--tiny.num-layers", "1",
        "--tiny.num-heads", "2", "--tiny.intermediate-size", "64", "--tiny.vocab-size", "600", "--threads", "1",
        "--tasks-per-update", "2", "--group-size", "2", "--max-new-tokens", "6", "--warmstart.episodes", "2",
        "--warmstart.epochs", "1", "--updates", "3", "--lr", "1e-2", "--no-progress", "--no-tensorboard"]
TIMING = {"rollout_seconds", "update_seconds", "record_seconds"}



@pytest.fixture(scope="module")  # slow: one small training run for the module, then one update per case
def finished_run(tmp_path_factory, private_opid_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    main(["--run-dir", str(run_dir), *ARGS])
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("update_*")) == ["update_00002", "update_00003"]
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    x, y = weights(a), weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["model/model.safetensors", "optimizer.pt", "state.json"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(finished_run, run_copy, capsys, damaged):
    truncate(run_copy / "checkpoints" / "update_00003" / damaged)
    main(["--run-dir", str(run_copy), *ARGS, "--resume"])
    out = capsys.readouterr().out
    assert f"checkpoint {run_copy / 'checkpoints' / 'update_00003'} does not load" in out
    assert f"resuming from {run_copy / 'checkpoints' / 'update_00002'} (update 2): the newest that loads" in out
    assert "update 3/3" in out and "update 1/3" not in out  # only the lost update was trained again
    assert same_weights(run_copy / "checkpoints" / "update_00003" / "model", finished_run / "checkpoints" / "update_00003" / "model")
    assert same_weights(run_copy / "final", finished_run / "final")
    assert metric_rows(run_copy) == metric_rows(finished_run)
    assert (run_copy / "checkpoints" / "update_00002").is_dir()  # not rotated away


@pytest.mark.slow
def test_a_latest_pointer_naming_a_missing_folder_resumes_from_the_newest_checkpoint(finished_run, run_copy, capsys):
    shutil.rmtree(run_copy / "checkpoints" / "update_00003")  # `latest` still names it
    rows_before = (run_copy / "metrics.jsonl").read_text().splitlines()
    initial_before = snapshot(run_copy / "initial")
    main(["--run-dir", str(run_copy), *ARGS, "--resume"])
    out = capsys.readouterr().out
    assert "names 'update_00003', which is not a checkpoint" in out
    assert f"resuming from {run_copy / 'checkpoints' / 'update_00002'} (update 2)" in out
    assert "expert:" not in out and "update 1/3" not in out  # no new warm start, no restart from update 0
    assert snapshot(run_copy / "initial") == initial_before
    assert (run_copy / "metrics.jsonl").read_text().splitlines()[:2] == rows_before[:2]
    assert same_weights(run_copy / "final", finished_run / "final")
    assert metric_rows(run_copy) == metric_rows(finished_run)
    assert sorted(p.name for p in (run_copy / "checkpoints").glob("update_*")) == ["update_00002", "update_00003"]


@pytest.mark.slow
def test_a_resumed_run_keeps_its_first_starts_record_and_adds_its_own(run_copy, monkeypatch):
    """run_info.json is the run's record of how it was made: a resume must not replace the first start's
    command, versions and time (it did: every start rewrote the file), it adds itself under `resumed`."""
    first = json.loads((run_copy / "run_info.json").read_text())
    first.update(argv=["opid-train", "--the-first-start"], started="2026-01-01T00:00:00Z")
    (run_copy / "run_info.json").write_text(json.dumps(first))
    command = ["--run-dir", str(run_copy), *ARGS, "--resume"]
    monkeypatch.setattr("sys.argv", ["opid-train", *command])  # what run_info records
    for _ in range(2):
        main(command)
    info = json.loads((run_copy / "run_info.json").read_text())
    assert {k: info[k] for k in first} == first
    assert len(info["resumed"]) == 2 and all(r["started"] > first["started"] for r in info["resumed"])
    assert info["resumed"][0]["versions"] == first["versions"] and info["resumed"][1]["argv"][-1] == "--resume"


@pytest.mark.slow
def test_when_no_checkpoint_loads_resume_stops_and_changes_nothing(run_copy, capsys):
    for folder in (run_copy / "checkpoints").glob("update_*"):
        truncate(folder / "model" / "model.safetensors")
    before = snapshot(run_copy)
    with pytest.raises(SystemExit) as exit_info:
        main(["--run-dir", str(run_copy), *ARGS, "--resume"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and len(err.strip().splitlines()) == 1, err
    assert "no checkpoint in" in err and "update_00003" in err and "update_00002" in err and "nothing was changed" in err
    assert snapshot(run_copy) == before


@pytest.mark.slow  # a real (small) model and optimizer are saved four times
def test_saving_a_checkpoint_drops_older_ones_beyond_keep_and_never_newer_ones(tmp_path, private_opid_cache):
    config = TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=300)
    policy = tiny_policy(["go left", "go right"], config=config)
    learner = Learner(policy, algorithm=None, config=type("Config", (), {"lr": 1e-3, "weight_decay": 0.0}))
    root = tmp_path / "checkpoints"
    for update in (1, 2):
        learner.save_checkpoint(tmp_path, update)
    # left by an earlier attempt of this run that got further (e.g. a checkpoint that did not load)
    shutil.copytree(root / "update_00002", root / "update_00005")
    (root / ".tmp_update_00004" / "model").mkdir(parents=True)  # a save that was killed
    learner.save_checkpoint(tmp_path, 3)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "update_00002", "update_00003", "update_00005"]
    assert (root / "latest").read_text() == "update_00003"
    truncate(root / "update_00005" / "model" / "model.safetensors")
    assert latest_checkpoint(tmp_path) == root / "update_00003"  # the newest whole one
