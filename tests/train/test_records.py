"""The run's records: one gzip member per write, a cut member dropped, resume forgets redone updates,
and opid-train / opid-eval record what they play (OPID's analysis and per-token teacher terms included)."""

import gzip
import json

import pytest

from opid_train.records import RECORDS_FILE, RecordWriter, cap_trajectories, read_records
from opid_train.types import Step, Trajectory

TINY = ["--tiny.hidden-size", "32", "--tiny.num-layers", "1", "--tiny.num-heads", "2", "--tiny.intermediate-size", "64",
        "--tiny.vocab-size", "300", "--no-progress", "--no-tensorboard"]


def update_records(update, n=3):
    return [{"phase": "train", "update": update, "task_id": i, "steps": [{"t": 0, "response": "é" * i}]} for i in range(n)]


def test_each_write_is_a_gzip_member_and_a_cut_last_member_is_dropped(tmp_path):
    path = tmp_path / RECORDS_FILE
    writer = RecordWriter(path)
    sizes = [writer.write(update_records(u)) for u in range(3)]
    assert writer.write([]) == 0 and sum(sizes) == path.stat().st_size
    assert [(r["update"], r["task_id"]) for r in read_records(tmp_path)] == [(u, i) for u in range(3) for i in range(3)]
    assert len(gzip.decompress(path.read_bytes()).decode().splitlines()) == 9  # plain gzip reads it whole

    # a kill in the middle of writing update 2: updates 0 and 1 survive whole
    path.write_bytes(path.read_bytes()[:-sizes[2] // 2])
    assert sorted({r["update"] for r in read_records(path)}) == [0, 1] and len(read_records(path)) == 6
    writer.write(update_records(5))  # appending after a cut member cannot resurrect it, nor hide what follows
    assert sorted({r["update"] for r in read_records(path)}) == [0, 1]


def test_resume_forgets_the_updates_it_redoes_and_evaluations(tmp_path):
    writer = RecordWriter(tmp_path / RECORDS_FILE)
    for u in range(4):
        writer.write(update_records(u))
    writer.write([{"phase": "eval", "label": "final greedy", "task_id": 0, "steps": []}])
    writer.forget_updates_from(2)
    assert [(r["phase"], r["update"]) for r in read_records(tmp_path)] == [("train", u) for u in (0, 1) for _ in range(3)]
    writer.forget_updates_from(0)
    assert read_records(tmp_path) == [] and (tmp_path / RECORDS_FILE).exists()


def test_a_line_that_is_not_json_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / RECORDS_FILE
    path.write_bytes(gzip.compress(b'{"ok": 1}\nnot json\n'))
    with pytest.raises(ValueError, match=RECORDS_FILE):
        read_records(path)
    assert read_records(tmp_path / "nothing") == []


def test_the_cap_keeps_whole_groups():
    trajs = [Trajectory("e", "train", "t", g, "x", group_id=g, traj_id=k, steps=[Step(0, "o", None, "p", "r", None, 0.0, True, True)])
             for k, g in enumerate([0, 0, 0, 1, 1, 1, 2, 2, 2])]
    assert [t.traj_id for t in cap_trajectories(trajs, 4)] == [0, 1, 2, 3, 4, 5]
    assert len(cap_trajectories(trajs, 0)) == len(cap_trajectories(trajs, 50)) == 9


@pytest.mark.slow
def test_opid_train_records_rollouts_analysis_teacher_tokens_and_evaluation(toy_id, tmp_path, monkeypatch):
    from opid_train.cli.train import main

    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "opid"
    main(["--env", toy_id, "--env-kwargs", '{"max_steps": 3}', "--algo", "opid", "--updates", "2", "--tasks-per-update",
          "2", "--group-size", "2", "--max-new-tokens", "6", "--run-dir", str(run_dir), "--eval.splits", "test",
          "--eval.episodes", "3", *TINY])
    records = read_records(run_dir)
    train = [r for r in records if r["phase"] == "train"]
    assert [r["update"] for r in train] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [r["label"] for r in records if r["phase"] == "eval"] == ["final greedy"] * 3
    assert all(r["method"] == "opid" and r["task_type"] == "key_door" and r["steps"] for r in records)
    step = train[0]["steps"][0]
    assert {"prompt", "response", "action", "observation", "reward", "format_valid", "action_valid"} <= set(step)
    assert "Your task is to: take the key and open the door" in step["prompt"]
    assert all("next_observation" in r["steps"][-1] for r in records)
    for r in train:  # the offline analyzer analyses every trajectory; each step scored under its routed skill
        assert set(r["analysis"]) == {"episode_summary", "episode_skill", "step_skills"}
        for s in r["steps"]:
            assert s["skills"] and set(s["teacher"]) == set(s["skills"])
            assert all(len(v) == len(s["tokens"]) for v in s["teacher"].values())
            assert all(isinstance(t, str) and not t.startswith("Ġ") for t in s["tokens"])
    assert any(abs(x) > 0 for r in train for s in r["steps"] for v in s["teacher"].values() for x in v)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(m["record_bytes"] > 0 and m["record_seconds"] >= 0 for m in metrics)


@pytest.mark.slow
def test_recording_can_be_thinned_or_turned_off_and_opid_eval_records_beside_its_json(toy_id, tmp_path, monkeypatch):
    from opid_train.cli.eval import main as eval_main
    from opid_train.cli.train import main

    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    common = ["--env", toy_id, "--env-kwargs", '{"max_steps": 2}', "--updates", "3", "--tasks-per-update", "2",
              "--group-size", "2", "--max-new-tokens", "4", *TINY]
    main([*common, "--run-dir", str(tmp_path / "off"), "--record.no-enabled"])
    assert not (tmp_path / "off" / RECORDS_FILE).exists()
    main([*common, "--run-dir", str(tmp_path / "thin"), "--record.every", "2", "--record.max-trajectories", "1",
          "--algo", "sdar"])
    thin = read_records(tmp_path / "thin")
    assert [(r["update"], r["group_id"]) for r in thin] == [(0, 0), (0, 0), (2, 4), (2, 4)]
    # SDAR: the analysis, and per step its teacher's log-ratio to the sampling policy, token by token
    assert all(r["analysis"] and r["method"] == "sdar" for r in thin)
    assert all(set(s["teacher"]) == {"teacher"} and len(s["teacher"]["teacher"]) == len(s["tokens"])
               for r in thin for s in r["steps"])

    out = tmp_path / "eval.json"
    for _ in range(2):  # a second evaluation to the same place replaces the first one's records
        eval_main(["--checkpoint", str(tmp_path / "thin"), "--env", toy_id, "--split", "test", "--episodes", "2",
                   "--out", str(out), "--no-progress", "--max-new-tokens", "4"])
    records = read_records(tmp_path / "eval.records.jsonl.gz")
    assert [(r["phase"], r["label"], r["split"]) for r in records] == [("eval", "final greedy", "test")] * 2
