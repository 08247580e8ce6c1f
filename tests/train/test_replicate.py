"""scripts/replicate.py end to end on the toy env (a subprocess, CleanRL style): every method and
fraction is trained and evaluated on the same episodes, the report is written, and a rerun reuses
the finished runs instead of training again."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.train.test_smoke_train import ROOT, TOY, environ


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
        assert won and all(len(w) == 4 for w in won.values())
        assert seeds["0"]["test"]["all"]["episodes"] == 4 * len(won)

    report = (tmp_path / "out" / "RESULTS.md").read_text()
    for heading in ("## Success", "## Episode by episode", "## Sample efficiency", "## Per task type"):
        assert heading in report
    versus = report.split("## Episode by episode")[1].split("##")[0]
    opid_row = next(line for line in versus.splitlines() if line.startswith("| OPID |"))
    assert opid_row.count("p=") == 2  # against the warm start and against GRPO
    assert "| GRPO | 50 % |" in report and (tmp_path / "out" / "curves.png").stat().st_size > 0

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
