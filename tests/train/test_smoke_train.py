"""End-to-end runs of opid-train as subprocesses (CleanRL style): warm start + two RL updates with
a very small tiny model on every registered env, and kill-after-checkpoint-then-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from opid_train.cli.main import main_config

ROOT = Path(__file__).resolve().parents[2]
TOY = "tests.train.toy_expert:OPIDTest/KeyDoorExpert-v0"
SMALL = ["--tiny.hidden-size", "32", "--tiny.num-layers", "1", "--tiny.num-heads", "2",
         "--tiny.intermediate-size", "64", "--tiny.vocab-size", "600", "--threads", "1",
         "--tasks-per-update", "2", "--group-size", "2", "--max-new-tokens", "8",
         "--warmstart.episodes", "2", "--warmstart.epochs", "1", "--no-progress", "--no-tensorboard"]


def command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "opid_train.cli.train", "--run-dir", str(run_dir), *SMALL, *extra]


def load_script(name: str):
    """scripts/<name>.py as a module (scripts/ is not a package), for tests of its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def environ(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPID_CACHE=os.environ.get("OPID_CACHE", str(tmp_path / "cache")))
    env.pop("ALFWORLD_DATA", None)
    return env


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("env_id, env_kwargs", [
    ("OPID/ALFWorld-v0", {"level": "easy", "max_steps": 10}),
    ("OPID/WebShop-v0", {"max_steps": 8, "num_products": 200}),
    ("OPID/SearchQA-v0", {"max_steps": 4}),
])
def test_two_update_smoke_run_on_each_registered_env(tmp_path, env_id, env_kwargs):
    run_dir = tmp_path / "run"
    proc = subprocess.run(command(run_dir, "--env", env_id, "--env-kwargs", json.dumps(env_kwargs), "--updates", "2"),
                          cwd=ROOT, env=environ(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = metrics(run_dir)
    assert [r["update"] for r in rows] == [0, 1]
    for r in rows:  # 2 tasks x 2 rollouts: 4 episodes, one row per step
        assert r["rows"] == round(4 * r["mean_steps"]) and 4 <= r["rows"] <= 4 * env_kwargs["max_steps"]
        assert 4 * r["success"] == round(4 * r["success"]) and 2 * r["mixed_groups"] == round(2 * r["mixed_groups"])
    # Update 0 runs one minibatch on the policy that sampled the rollouts and served as the KL reference,
    # so its ratios are 1 (nothing clipped) and its KL is 0, up to float noise; a shifted log-prob or a
    # reference that is not the initial policy breaks that.
    assert rows[0]["pg_clipfrac"] == 0.0 and rows[0]["ppo_approx_kl"] < 1e-8 and abs(rows[0]["kl"]) < 1e-6
    warm = json.loads((run_dir / "warmstart.json").read_text())
    assert warm["demo_won"] >= 1 and warm["bc_demos"] > 0
    assert (run_dir / "checkpoints" / "update_00002" / "model" / "model.safetensors").exists()
    assert (run_dir / "curves.png").stat().st_size > 0
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["seed"] == 0 and info["versions"]["torch"] == torch.__version__


@pytest.mark.slow
def test_evaluation_samples_more_episodes_per_task_than_a_rollout_group(tmp_path):
    run_dir = tmp_path / "run"  # 1 task x 2 rollouts per update, then 4 sampled episodes per evaluation task
    proc = subprocess.run(command(run_dir, "--env", TOY, "--env-kwargs", '{"max_steps": 8}', "--updates", "1",
                                  "--tasks-per-update", "1", "--eval.splits", "test", "--eval.episodes", "2",
                                  "--eval.no-greedy", "--eval.samples", "4"),
                          cwd=ROOT, env=environ(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "eval.json").read_text())["test"]
    assert result["all"]["episodes"] == 8 and sorted(len(v) for v in result["won"].values()) == [4, 4]


@pytest.mark.slow
def test_killed_after_checkpoint_resumes_with_the_same_next_step(tmp_path):
    args = ["--env", TOY, "--env-kwargs", '{"max_steps": 8}', "--updates", "2", "--lr", "1e-2"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # An uninterrupted run and, beside it, the same run SIGKILLed as soon as its first checkpoint
    # is complete, then resumed.
    uninterrupted = subprocess.Popen(command(straight, *args), cwd=ROOT, env=environ(tmp_path),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(command(killed, *args), cwd=ROOT, env=environ(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "latest").exists():
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed / "checkpoints" / "update_00002").exists(), "the run finished before it was killed"
    proc = subprocess.run(command(killed, *args, "--resume"), cwd=ROOT, env=environ(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout
    _, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err[-3000:]

    a = load_file(str(straight / "checkpoints" / "update_00002" / "model" / "model.safetensors"))
    b = load_file(str(killed / "checkpoints" / "update_00002" / "model" / "model.safetensors"))
    first = load_file(str(straight / "checkpoints" / "update_00001" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], first[k]) for k in a)  # the second update did change the weights
    timing = {"rollout_seconds", "update_seconds", "record_seconds"}
    clean = lambda r: {k: v for k, v in r.items() if k not in timing}  # noqa: E731
    assert [clean(r) for r in metrics(killed)] == [clean(r) for r in metrics(straight)]


@pytest.mark.slow
def test_main_job_prints_warm_start_and_after_rl_on_the_same_episodes(tmp_path):
    cmd = [sys.executable, "-m", "opid_train.cli.main", "--seeds", "3", "--run-root", str(tmp_path / "main"),
           "--env", TOY, "--env-kwargs", '{"max_steps": 8}', "--eval.splits", "test", "--updates", "1",
           *SMALL, "--warmstart.episodes", "3", "--also-greedy"]  # the last flag wins; RL trains on the other 2 tasks
    proc = subprocess.run(cmd, cwd=ROOT, env=environ(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warm start" in proc.stdout and "after RL" in proc.stdout
    results = json.loads((tmp_path / "main" / "results.json").read_text())["3"]
    sampled = next(p for p in results if p.startswith("sampled"))
    assert set(results) == {sampled, "greedy"}
    samples = main_config().eval.samples  # the main job's protocol
    for protocol, per_task in ((sampled, samples), ("greedy", 1)):
        for policy in ("initial", "final"):
            won = results[protocol][policy]["test"]["won"]  # per task and episode, so they can be paired
            assert sorted(won) == ["0", "1", "2"] and all(len(w) == per_task for w in won.values())
            assert results[protocol][policy]["test"]["all"]["episodes"] == 3 * per_task
    verdicts = json.loads((tmp_path / "main" / "verdict.json").read_text())
    assert verdicts[sampled]["episodes"] == 3 * samples and verdicts["greedy"]["episodes"] == 3
    assert proc.stdout.count("measurably above the warm start") == 2
    # a rerun of a finished job trains nothing and reuses the stored evaluation (same weights, same protocol)
    stored = tmp_path / "main" / "grpo-seed3" / "main_eval.json"
    written = stored.stat().st_mtime_ns
    rerun = subprocess.run(cmd, cwd=ROOT, env=environ(tmp_path), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "update 1/1" in proc.stdout and "update 1/1" not in rerun.stdout
    assert stored.stat().st_mtime_ns == written
    assert json.loads((tmp_path / "main" / "results.json").read_text())["3"] == results
    # RL only, from the warm start of each seed ('{seed}' in --init): the same initial policy
    again = [c if c != str(tmp_path / "main") else str(tmp_path / "again") for c in cmd]
    again += ["--init", str(tmp_path / "main" / "grpo-seed{seed}" / "initial")]
    proc = subprocess.run(again, cwd=ROOT, env=environ(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads((tmp_path / "main" / "grpo-seed3" / "initial" / "config.json").read_text())
    assert json.loads((tmp_path / "again" / "grpo-seed3" / "initial" / "config.json").read_text()) == first
    assert "grpo-seed3" in (tmp_path / "again" / "grpo-seed3" / "config.yaml").read_text().split("init:")[1].split("\n")[0]
    assert not (tmp_path / "again" / "grpo-seed3" / "warmstart.json").exists()  # no behaviour cloning this time
