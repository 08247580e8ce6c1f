"""`opid-train --algo opid` and `--algo sdar` end to end on the toy env (tiny policy, one update)."""

import json

import pytest

from opid_train.cli.train import main


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["opid", "sdar"])
def test_train_end_to_end(toy_id, tmp_path, monkeypatch, algo):
    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / algo
    main(["--env", toy_id, "--env-kwargs", '{"max_steps": 3}', "--algo", algo, "--updates", "1",
          "--tasks-per-update", "2", "--group-size", "2", "--max-new-tokens", "6", "--run-dir", str(run_dir),
          "--tiny.hidden-size", "32", "--tiny.num-layers", "1", "--tiny.num-heads", "2",
          "--tiny.intermediate-size", "64", "--tiny.vocab-size", "300", "--no-progress",
          "--no-tensorboard", *(["--sdar.beta", "0"] if algo == "sdar" else [])])
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics[f"{algo}/analysed_trajectories"] == 4 and metrics[f"{algo}/failed_trajectories"] == 0
    assert metrics[f"{algo}/teacher_active_token_ratio"] == 1.0  # the offline analyzer always gives skills
    dumped = [json.loads(x) for x in (run_dir / "skills.jsonl").read_text().splitlines()]
    if algo == "opid":  # each skill term's abs-mean is w (1e-3) times the dumped |logp_skill - logp_old| per token
        tokens = sum(len(d["tokens"]) for d in dumped)
        abs_means = {c: 1e-3 * sum(abs(x) for d in dumped for x in d["teacher_logp_diff"].get(c, [])) / tokens
                     for c in ("episode", "step")}
        for c, want in abs_means.items():
            assert metrics[f"opid/adv_skill_{c}_abs_mean"] == pytest.approx(want, rel=1e-3, abs=1e-8)
        total = metrics["opid/adv_ep_abs_mean"] + sum(abs_means.values())
        assert metrics["opid/adv_skill_step_share"] == pytest.approx(abs_means["step"] / total, rel=1e-3, abs=1e-8)
    else:  # beta 0: the gate is sigmoid(0) = 1/2 on every token, so the loss is 0.01 * gap_mean / 2
        assert metrics["sdar/gate_mean"] == pytest.approx(0.5)
        assert metrics["sdar/loss"] == pytest.approx(0.01 * 0.5 * metrics["sdar/gap_mean"], rel=1e-5, abs=1e-12)
    assert len(dumped) == metrics["rows"] and all(d["episode_skill"] or d["step_skill"] for d in dumped)
    if algo == "opid":  # the real tokenizer's tokens, one teacher term each, per routed skill
        assert all(isinstance(t, str) for d in dumped for t in d["tokens"])
        assert all(len(v) == len(d["tokens"]) > 0 for d in dumped for v in d["teacher_logp_diff"].values())
        assert any(abs(x) > 0 for d in dumped for v in d["teacher_logp_diff"].values() for x in v)
    assert (run_dir / "final").exists()
