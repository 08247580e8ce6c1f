"""scripts/replicate.py end to end on the toy env (a subprocess, CleanRL style): every method and
fraction is trained and evaluated on the same episodes, the report is written, and a rerun reuses
the finished runs instead of training again; and, without training, how a method (or an opt-in
variant) becomes a config, a run folder and rows of the report."""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from opid_train.cli.main import main_config
from tests.train.test_smoke_train import ROOT, TOY, environ, load_script

VARIANT = "OPID (teacher weight 0.1)"


@pytest.fixture(scope="module")
def replicate():
    return load_script("replicate")


def test_teacher_weight_variant_is_opt_in_with_its_own_config_and_run_folder(replicate):
    from opid_train.config import TrainConfig

    base = TrainConfig()
    cfg = replicate.method_config(base, VARIANT)
    assert (cfg.algo, cfg.opid.routing, cfg.opid.w_ep, cfg.opid.w_step) == ("opid", "route", 0.1, 0.1)
    assert cfg.opid.score_chunk_rows == base.opid.score_chunk_rows and base.opid.w_ep == 1e-3  # only the overrides change
    opid = replicate.method_config(base, "OPID")
    assert (opid.opid.w_ep, opid.opid.w_step) == (base.opid.w_ep, base.opid.w_step)
    assert replicate.method_config(base, "OPID w/o routing").opid.routing == "additive"
    assert replicate.method_config(base, "SDAR").algo == "sdar"

    assert VARIANT in replicate.METHODS and VARIANT not in replicate.DEFAULT_METHODS
    assert set(replicate.DEFAULT_METHODS) <= set(replicate.METHODS)
    assert replicate.run_tag(VARIANT) not in {replicate.run_tag(m) for m in replicate.DEFAULT_METHODS}
    # the tags of finished runs on disk, as main() named them before variants existed
    assert [replicate.run_tag(m) for m in replicate.DEFAULT_METHODS] == [
        "grpo", "opid", "sdar", "opid_wo_episode_skills", "opid_wo_step_skills", "opid_wo_routing"]
    for method in replicate.DEFAULT_METHODS:
        assert replicate.run_tag(method) == method.lower().replace(" ", "_").replace("/", "")
    assert replicate.run_tag("OPID", 0.6) == "opid_60pct"

    assert replicate.parse_methods(f"GRPO, {VARIANT}") == ["GRPO", VARIANT]
    every = list(replicate.METHODS)  # each name survives --methods' comma-separated list, and has its own folder
    assert replicate.parse_methods(",".join(every)) == every
    assert len({replicate.run_tag(m) for m in every}) == len(every)
    centred = replicate.method_config(base, "OPID (centred teacher weight 0.1)").opid
    assert (centred.w_ep, centred.w_step, centred.normalize_teacher) == (0.1, 0.1, True)
    with pytest.raises(ValueError, match=r"unknown methods \['OPID \(weight 1\)'\]; known: .*'OPID \(teacher weight 0.1\)'"):
        replicate.parse_methods("GRPO,OPID (weight 1)")


def test_study_defaults_to_the_main_jobs_environment(replicate):
    args = SimpleNamespace(env="OPID/ALFWorld-v0", env_kwargs=None, policy="tiny", lr=None, updates=None, tasks=None,
                           group=None, demos=300, warmstart_minutes=None, skill_share=1.0, warmstart_lr=None,
                           splits="valid_seen,valid_unseen", eval_episodes=0, threads=1, micro_batch=None,
                           warmstart_epochs=None, warmstart_batch=None)
    cfg = replicate.study_config(args)
    assert cfg.env_kwargs == main_config().env_kwargs  # easy-large: RL has undemonstrated tasks to train on
    main = main_config()
    assert (cfg.micro_batch_size, cfg.warmstart.epochs, cfg.warmstart.batch_size) == (
        main.micro_batch_size, main.warmstart.epochs, main.warmstart.batch_size)
    args.micro_batch, args.warmstart_epochs, args.warmstart_batch = 4, 2, 8  # a pretrained model's sizes
    cfg = replicate.study_config(args)
    assert (cfg.micro_batch_size, cfg.warmstart.epochs, cfg.warmstart.batch_size) == (4, 2, 8)
    assert cfg.warmstart.lr == main.warmstart.lr
    assert replicate.rl_task_ids(cfg, 900)  # on the easy level's 300 tasks, 300 demos would leave none
    args.env_kwargs = '{"max_steps": 6}'
    assert replicate.study_config(args).env_kwargs == {"max_steps": 6}


def test_a_run_folder_of_another_config_stops_the_study(replicate, tmp_path):
    from opid_train.cli.train import record_run

    cfg = replicate.method_config(main_config(), "OPID")
    record_run(tmp_path / "opid", replace(cfg, run_dir=str(tmp_path / "opid")))
    (tmp_path / "opid" / "eval.json").write_text('{"valid_seen": {"success_rate": 0.5}}')
    # the same run on another machine (threads, run folder, micro-batches) is the same run: reused
    assert replicate.run(replace(cfg, threads=7, micro_batch_size=4), tmp_path / "opid", train_missing=False) == {
        "valid_seen": {"success_rate": 0.5}}
    assert replicate.default_run_root("OPID/ALFWorld-v0") == "runs/replicate"
    assert replicate.default_run_root("OPID/WebShop-v0") == "runs/replicate-webshop"
    webshop = replace(cfg, env="OPID/WebShop-v0", env_kwargs={})
    with pytest.raises(SystemExit, match=r"holds a run of another config \(it differs in env, env_kwargs, prompt\)"):
        replicate.run(webshop, tmp_path / "opid", train_missing=False)
    with pytest.raises(SystemExit, match=r"differs in opid.w_ep, opid.w_step\)"):
        replicate.run(replicate.method_config(main_config(), VARIANT), tmp_path / "opid", train_missing=False)
    # a warm start (0 updates) is reused by a study with another RL budget, not by one with other demos
    warm = replace(main_config(), updates=0, run_dir=str(tmp_path / "warm"))
    record_run(tmp_path / "warm", warm)
    (tmp_path / "warm" / "eval.json").write_text("{}")
    assert replicate.run(replace(warm, tasks_per_update=8, group_size=2, lr=1.0), tmp_path / "warm", False) == {}
    with pytest.raises(SystemExit, match=r"differs in warmstart.episodes\)"):
        replicate.run(replace(warm, warmstart=replace(warm.warmstart, episodes=9)), tmp_path / "warm", False)


def test_unknown_method_stops_before_training(replicate, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["replicate.py", "--methods", "GRPO,PPO", "--run-root", str(tmp_path / "runs"),
                                      "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        replicate.main()
    assert exit_.value.code == 2 and "unknown methods ['PPO']; known: 'GRPO'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_report_and_plots_include_a_selected_variant(replicate, tmp_path):
    from opid_train.config import EvalConfig, TrainConfig

    def result(won):  # one split of an eval.json: two tasks, two episodes each
        summary = {"success": sum(map(sum, won)) / 4, "mean_steps": 3.0}
        return {"test": {"all": summary, "by_type": {"pick": summary}, "won": {"0": won[0], "1": won[1]}}}

    results = {"warm start": {0: result([[0, 0], [1, 0]])}, "GRPO": {0: result([[1, 0], [1, 0]])},
               VARIANT: {0: result([[1, 1], [1, 1]])}}
    runs = {}
    for method in ("warm start", "GRPO", VARIANT):
        run_dir = tmp_path / "runs" / replicate.run_tag(method)
        run_dir.mkdir(parents=True)
        if method == "warm start":  # no updates: its minutes are the demos and behaviour cloning
            (run_dir / "warmstart.json").write_text(json.dumps({"demo_seconds": 30.0, "bc_seconds": 270.0}))
        else:
            metrics = {"success": 0.5, "rollout_seconds": 50.0, "update_seconds": 40.0}
            metrics |= {"opid/teacher_share": 0.25} if method == VARIANT else {}
            (run_dir / "metrics.jsonl").write_text(json.dumps(metrics) + "\n" + json.dumps(metrics) + "\n")
        argv = ["scripts/replicate.py", "--seeds", "0", "--methods", f"GRPO,{VARIANT}"]
        (run_dir / "run_info.json").write_text(json.dumps({"argv": argv, "started": "2026-12-01T10:00:00Z"}))
        runs[method] = {0: str(run_dir)}
    (tmp_path / "runs" / "grpo" / "eval.json").write_text("{}")
    os.utime(tmp_path / "runs" / "grpo" / "eval.json", (0, calendar.timegm((2026, 12, 1, 10, 6, 0, 0, 0, 0))))
    cfg = TrainConfig(eval=EvalConfig(splits=["test"]))  # ALFWorld: the paper's figures are beside ours
    plots = replicate.plot(results, runs, tmp_path, ["test"])
    assert all((tmp_path / p).stat().st_size > 0 for p in plots)
    args = SimpleNamespace(seeds="0", warm_start=None)
    fewer_tasks = {("GRPO", 0.6): {0: result([[1, 1], [1, 1]])}}
    text = replicate.report(args, cfg, results, fewer_tasks, runs, tmp_path, 1.0, plots)
    success, versus, per_type, efficiency = (text.split(h)[1].split("##")[0] for h in (
        "## Success", "## Episode by episode", "## Per task type", "## Sample efficiency"))
    assert "| GRPO | 100 % | 0 | 50.0 |  |" in efficiency  # the full run beside the 60 % one, which is paired with it;
    # a loss comes with the p that the loss is noise (0 of 2 episodes gained: 1/2^2)
    assert "| GRPO | 60 % | 0 | 100.0 | -50.0 (0/2, loss p=0.25; tasks 0/2, loss p_task=0.25) |" in efficiency
    assert f"| {VARIANT} | 0 | 100.0 | 3.0 | 3.0 / - |" in success  # 2 x (50 + 40) s; not evaluated
    assert "score" not in success  # ALFWorld's score is its success

    assert "| warm start | 0 | 25.0 | 3.0 | 5.0 / - |" in success and "| GRPO | 0 | 50.0 | 3.0 | 3.0 / 6.0 |" in success
    # the command that trained the runs, once, quoted as a shell would need it
    assert text.count("    python scripts/replicate.py --seeds 0 --methods 'GRPO,OPID (teacher weight 0.1)'") == 1
    paper = text.split("## Against the paper")[1].split("##")[0]
    assert "| GRPO | 75.0 |  | 50.0 |  |" in paper and VARIANT not in paper  # the paper has no such variant
    row = next(line for line in versus.splitlines() if line.startswith(f"| {VARIANT} |"))
    assert row.count("p=") == 2  # against the warm start and against GRPO
    assert f"| {VARIANT} | 100.0 |" in per_type
    teacher = text.split("## What the self-teacher did")[1]
    assert f"{VARIANT}:" in teacher and "`opid/teacher_share`: 0.25" in teacher
    assert "`opid.w_ep=0.1`, `opid.w_step=0.1`" in text  # the variant's overrides are stated
    for seeds in results.values():  # a graded env (WebShop): partial credit gets its own columns and curves
        seeds[0]["test"]["all"]["score"] = 0.1 + seeds[0]["test"]["all"]["success"] / 2
    for run_dir in runs.values():
        metrics = Path(run_dir[0]) / "metrics.jsonl"
        if metrics.exists():
            metrics.write_text(json.dumps({"success": 0.5, "score": 0.75}) + "\n")
    text = replicate.report(args, cfg, results, {}, runs, tmp_path, 1.0,
                            replicate.plot(results, runs, tmp_path, ["test"]))
    success = text.split("## Success")[1].split("##")[0]
    assert "| method | seeds | test success % | test score | test steps |" in success
    assert "| GRPO | 0 | 50.0 | 0.350 | 3.0 |" in success and "partial credit" in success


@pytest.mark.slow
def test_replicate_reports_every_method_and_resumes_from_finished_runs(tmp_path):
    cmd = [sys.executable, "scripts/replicate.py", "--env", TOY, "--env-kwargs", '{"max_steps": 6}',
           "--splits", "test", "--seeds", "0,1", "--methods", "GRPO,OPID", "--fractions", "0.5",
           "--updates", "1", "--tasks", "2", "--group", "2", "--demos", "2", "--threads", "1",
           "--run-root", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    first = subprocess.run(cmd, cwd=ROOT, env=environ(tmp_path), capture_output=True, text=True, timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "update 1/1" in first.stdout  # trained

    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(data["results"]) == {"warm start", "GRPO", "OPID"}
    assert set(data["fractions"]) == {"GRPO@0.5", "OPID@0.5"}
    for method, seeds in data["results"].items():
        assert set(seeds) == {"0", "1"}, method
        won = seeds["0"]["test"]["won"]  # per task and episode: the pairing behind the McNemar column
        per_task = main_config().eval.samples  # the main job's protocol
        assert won and per_task > 1 and all(len(w) == per_task for w in won.values())
        assert seeds["0"]["test"]["all"]["episodes"] == per_task * len(won)

    report = (tmp_path / "out" / "RESULTS.md").read_text()
    for heading in ("## Success", "## Episode by episode", "## Sample efficiency", "## Per task type"):
        assert heading in report
    versus = report.split("## Episode by episode")[1].split("##")[0]
    opid_row = next(line for line in versus.splitlines() if line.startswith("| OPID |"))
    assert opid_row.count("p=") == 2  # against the warm start and against GRPO
    assert "| GRPO | 50 % | 0,1 |" in report and (tmp_path / "out" / "curves.png").stat().st_size > 0

    again = subprocess.run(cmd, cwd=ROOT, env=environ(tmp_path), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "update 1/1" not in again.stdout  # every run was finished: nothing trained twice
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == data

    # a study still running: the report covers the finished runs only and trains nothing
    (tmp_path / "runs" / "seed1" / "opid" / "eval.json").unlink()
    partial = subprocess.run(cmd + ["--report-only"], cwd=ROOT, env=environ(tmp_path), capture_output=True,
                             text=True, timeout=400)
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert "update 1/1" not in partial.stdout and "not finished" in partial.stdout
    assert set(json.loads((tmp_path / "out" / "results.json").read_text())["results"]["OPID"]) == {"0"}
    assert "| OPID | 0 |" in (tmp_path / "out" / "RESULTS.md").read_text()


def test_the_main_jobs_evaluation_games_stay_translated_between_its_passes():
    """The job plays every evaluation game six times (two policies, sampled and greedy): a translation
    cache smaller than the evaluation re-translates each game each time (it held 32: +1.3 min a seed)."""
    from opid_envs.alfworld import fastpath
    from opid_envs.alfworld.generate import LEVELS

    cfg = main_config()
    games = sum(LEVELS[cfg.env_kwargs["level"]].sizes[split] for split in cfg.eval.splits)
    assert fastpath.TRANSLATION_CACHE >= games


def test_wall_minutes_of_a_resumed_run_count_from_its_last_start(replicate, tmp_path):
    """A resumed run keeps its first start in run_info.json and lists each resume: its wall minutes
    are those of the start that finished it, not the time it lay killed in between."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run_info.json").write_text(json.dumps({"started": "2026-12-01T10:00:00Z",
                                                       "resumed": [{"started": "2026-12-01T11:00:00Z"},
                                                                   {"started": "2026-12-01T12:00:00Z"}]}))
    (run_dir / "eval.json").write_text("{}")
    os.utime(run_dir / "eval.json", (0, calendar.timegm((2026, 12, 1, 12, 9, 0, 0, 0, 0))))
    assert replicate.run_minutes(run_dir) == (None, 9.0)
