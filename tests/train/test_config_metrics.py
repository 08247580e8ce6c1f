"""Config from YAML and flags; metrics log, resume truncation and the curves PNG; demo cache."""

import json

import pytest

import tests.train.toy_expert  # noqa: F401
from opid_train.cli.train import parse_args
from opid_train.config import TrainConfig, load_yaml
from opid_train.metrics import MetricsLogger
from opid_train.rollout import EnvPool
from opid_train.warmstart import cached_demos, collect_demos
from tests.train.toy_expert import EXPERT_ID


def parse(argv):
    return parse_args(argv).run


def test_flags_override_nested_fields_with_their_types():
    cfg = parse(["--opid.w-ep", "2e-3", "--grpo.normalize-std", "false", "--eval.splits", "valid_seen,valid_unseen",
                 "--env-kwargs", '{"level": "easy"}', "--device", "none", "--updates", "3"])
    assert cfg.opid.w_ep == 2e-3 and cfg.grpo.normalize_std is False
    assert cfg.eval.splits == ["valid_seen", "valid_unseen"] and cfg.env_kwargs == {"level": "easy"}
    assert cfg.device is None and cfg.updates == 3 and cfg.sdar == TrainConfig().sdar
    assert parse(["--eval.splits", "test", "valid_seen"]).eval.splits == ["test", "valid_seen"]
    assert parse(["--eval.splits"]).eval.splits == []


def test_yaml_then_flags_and_unknown_keys_rejected(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("algo: opid\nopid:\n  w_step: 0.5\nupdates: 7\n")
    cfg = parse(["--config", str(path), "--updates", "9"])
    assert (cfg.algo, cfg.opid.w_step, cfg.updates) == ("opid", 0.5, 9)
    path.write_text("opid:\n  w_stepp: 0.5\n")
    with pytest.raises(ValueError, match="opid.w_stepp"):
        load_yaml(path)
    with pytest.raises(SystemExit):
        parse(["--updates", "many"])
    assert "--updates 'many': expected an integer" in capsys.readouterr().err


def test_metrics_jsonl_truncate_on_resume_and_png(tmp_path):
    log = MetricsLogger(tmp_path, {}, tensorboard=False)
    for u in range(3):
        log.log(u, {"success": u / 2, "loss": 1.0 - u / 4})
    log.truncate_after(2)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [0, 1]
    png = log.close()
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_resume_drops_a_metrics_line_torn_by_a_kill(tmp_path):
    log = MetricsLogger(tmp_path, {}, tensorboard=False)
    for u in range(2):
        log.log(u, {"success": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"update": 2, "succ')  # killed in the middle of a write
    log.truncate_after(2)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [0, 1]


def test_demo_cache_round_trips_and_rejects_garbage(tmp_path):
    pool = EnvPool(EXPERT_ID, 3)
    tasks = [("train", i) for i in range(3)]
    fresh, won = collect_demos(pool, tasks, seed=0, progress=False)
    first, won1 = cached_demos(pool, tasks, seed=0, env_kwargs={}, cache=tmp_path, progress=False)
    again, won2 = cached_demos(pool, tasks, seed=0, env_kwargs={}, cache=tmp_path, progress=False)
    assert won == won1 == won2 == 3
    assert again == first == fresh  # contexts (tuples) survive the JSON round trip
    next(tmp_path.glob("demos-*.jsonl")).write_text("not json\n")
    with pytest.raises(ValueError, match="not a demonstration cache"):
        cached_demos(pool, tasks, seed=0, env_kwargs={}, cache=tmp_path, progress=False)
