"""The tools' flags as a person meets them: --help lists every flag with its description, default
and choices; booleans are --x/--no-x; a YAML config (a file, a shipped preset, a resumed run's own)
sits under the flags; a bad file or key is one line with exit status 2; the spelling of earlier
versions (--env_kwargs, --progress false) still works. Nothing here trains."""

from __future__ import annotations

import ast
import re
import typing
from dataclasses import replace
from pathlib import Path

import pytest

from opid_envs import play
from opid_train.algorithms import ALGORITHMS
from opid_train.algorithms.config import AnalyzerConfig, SDARConfig
from opid_train.algorithms.sdar import GATES, TEACHER_CONTEXTS
from opid_train.analyzers import BACKENDS
from opid_train.cli import eval as eval_cli
from opid_train.cli import main as main_job
from opid_train.cli import train as train_cli
from opid_train.config import EVAL_MODES, EvalJobConfig, TrainConfig, _leaves, load_yaml
from opid_train.presets import CONFIG_DIR, PARITY_MODES
from opid_train.view import app as view_app
from wrappers.skills import ROUTING_MODES


def help_entries(capsys, monkeypatch, entry) -> tuple[str, dict[str, str]]:
    """The help text of a tool and {flag: its entry (invocation, description, default)}."""
    monkeypatch.setenv("COLUMNS", "120")  # one column of option boxes
    with pytest.raises(SystemExit) as exit_info:
        entry(["--help"])
    assert exit_info.value.code in (0, None)
    text = capsys.readouterr().out
    entries: dict[str, str] = {}
    current = None
    boxed = "│" in text  # tyro draws the options in boxes, argparse lists them after "options:"
    for line in text.splitlines():
        if boxed and not line.startswith("│"):
            continue
        if not boxed and not line.startswith(" "):
            current = None
            continue
        line = line.strip(" │")
        head = re.match(r"(-h, )?(--[\w.-]+)", line)
        if head:
            current = head.group(2)
            entries[current] = line
        elif current and line and not line.startswith(("options", "usage")):
            entries[current] += " " + line
    return text, {flag: re.sub(r"\s+", " ", body) for flag, body in entries.items()}


def description_of(entry: str) -> str:
    """An entry less its invocation (`--x META` or `--x, --no-x`) and its default."""
    body = re.sub(r"^--[\w.-]+(, --[\w.-]+)?( \S+)?", "", entry)
    return re.sub(r"\((default: .*|required)\)$", "", body).strip()


def test_opid_train_help_shows_every_flag_with_description_default_and_choices(capsys, monkeypatch):
    text, entries = help_entries(capsys, monkeypatch, train_cli.main)
    for name, _ in _leaves(TrainConfig):
        flag = "--" + name.replace("_", "-")
        assert flag in entries, flag
        assert description_of(entries[flag]), entries[flag]  # every flag says what it does
        assert "(default: " in entries[flag], entries[flag]
    assert entries["--algo"].startswith("--algo {grpo,opid,sdar}") and "(default: grpo)" in entries["--algo"]
    assert "keyword arguments of gym.make, as JSON (default: '{}')" in entries["--env-kwargs"]
    assert entries["--grpo.clip-eps"].startswith("--grpo.clip-eps FLOAT PPO ratio clip")
    assert "(default: 0.2)" in entries["--grpo.clip-eps"]
    assert entries["--analyzer.backend"].startswith("--analyzer.backend {offline,openai,local}")
    assert entries["--sdar.gate"].startswith("--sdar.gate {sigmoid,entropy,soft_or}")
    assert entries["--progress"].startswith("--progress, --no-progress progress bars")
    assert entries["--eval.greedy"].startswith("--eval.greedy, --eval.no-greedy")
    assert "(default: 0.002)" in entries["--warmstart.lr"]
    for flag in ("--config", "--preset", "--resume", "--overwrite", "--backend", "--debug"):
        assert description_of(entries[flag]), flag
    assert "{None,main,alfworld,searchqa,webshop}" in entries["--preset"]
    # the usage example's continued line is shown as one a shell takes
    assert re.search(r"--algo grpo \\\n\s+--warmstart.episodes 300", text), text[:600]


def test_opid_eval_and_the_main_job_help_show_their_defaults(capsys, monkeypatch):
    _, entries = help_entries(capsys, monkeypatch, eval_cli.main)
    for name, _ in _leaves(EvalJobConfig):
        entry = entries["--" + name.replace("_", "-")]
        assert description_of(entry) and ("(default: " in entry or "(required)" in entry), entry
    assert entries["--mode"].startswith("--mode {greedy,sampled,both}")
    assert "(default: valid_seen,valid_unseen)" in entries["--split"]
    assert entries["--record"].startswith("--record, --no-record")
    _, entries = help_entries(capsys, monkeypatch, main_job.main)
    assert "(default: runs/main)" in entries["--run-root"] and description_of(entries["--seeds"])
    main_yaml = load_yaml(CONFIG_DIR / "main.yaml")  # the job's config file is what its help shows
    assert f"(default: {main_yaml.updates})" in entries["--updates"]
    assert f"(default: {main_yaml.temperature})" in entries["--temperature"]


@pytest.mark.parametrize("entry", [play.main, view_app.main], ids=["opid-play", "opid-view"])
def test_opid_play_and_opid_view_help_describe_every_flag(capsys, monkeypatch, entry):
    _, entries = help_entries(capsys, monkeypatch, entry)
    options = {flag: body for flag, body in entries.items() if flag != "--help"}
    assert options
    for flag, body in options.items():
        assert description_of(body), body
        assert "(default: " in body or body.endswith(")"), body


def test_literal_choices_are_the_registries():
    hints = typing.get_type_hints(TrainConfig)
    assert set(typing.get_args(hints["algo"])) == set(ALGORITHMS)
    assert typing.get_args(hints["parity"]) == PARITY_MODES
    assert typing.get_args(typing.get_type_hints(EvalJobConfig)["mode"]) == EVAL_MODES
    assert typing.get_args(typing.get_type_hints(AnalyzerConfig)["backend"]) == BACKENDS
    sdar = typing.get_type_hints(SDARConfig)
    assert typing.get_args(sdar["routing"]) == ROUTING_MODES
    assert typing.get_args(sdar["gate"]) == GATES
    assert typing.get_args(sdar["teacher_context"]) == TEACHER_CONTEXTS


def test_booleans_are_x_and_no_x_and_an_optional_one_is_a_bare_flag():
    parse = lambda *argv: train_cli.parse_args(list(argv)).run  # noqa: E731
    default = parse()
    assert default.progress is True and default.tensorboard is None  # unset: written when tensorboard is installed
    cfg = parse("--no-progress", "--eval.no-greedy", "--exclude-demo-tasks", "--tensorboard", "--updates", "2",
                "--grpo.no-normalize-std")
    assert (cfg.progress, cfg.eval.greedy, cfg.exclude_demo_tasks, cfg.tensorboard, cfg.updates,
            cfg.grpo.normalize_std) == (False, False, True, True, 2, False)
    cfg = parse("--no-tensorboard", "--grpo.normalize-std", "--progress")
    assert (cfg.tensorboard, cfg.grpo.normalize_std, cfg.progress) == (False, True, True)
    assert parse("--tensorboard").tensorboard is True  # a bare flag at the end


def test_the_spelling_of_earlier_versions_still_works():
    old = train_cli.parse_args(["--env_kwargs", '{"level": "easy"}', "--group_size", "3", "--run_dir", "runs/x",
                                "--progress", "false", "--tensorboard", "false", "--eval.splits", "test,valid_seen",
                                "--grpo.clip_eps", "0.3", "--wandb=false", "--device", "none"]).run
    new = train_cli.parse_args(["--env-kwargs", '{"level": "easy"}', "--group-size", "3", "--run-dir", "runs/x",
                                "--no-progress", "--no-tensorboard", "--eval.splits", "test", "valid_seen",
                                "--grpo.clip-eps", "0.3", "--no-wandb"]).run
    assert old == new
    assert (new.env_kwargs, new.group_size, new.eval.splits, new.device) == ({"level": "easy"}, 3, ["test", "valid_seen"], None)
    job = eval_cli.parse(eval_cli.EvalCommand, ["--checkpoint", "c", "--env", "e", "--no_progress", "--no_record",
                                                "--record_max", "2", "--split", "a,b"], "opid-eval", "").job
    assert (job.progress, job.record, job.record_max, job.split) == (False, False, 2, ["a", "b"])
    assert main_job.parse_args(["--run_root", "r", "--seeds", "0,1"]).run_root == "r"


def test_a_yaml_config_sits_under_the_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("algo: opid\nupdates: 7\nopid:\n  w_step: 0.5\neval: {splits: [test]}\n")
    cfg = train_cli.parse_args(["--config", str(path), "--updates", "9", "--opid.w-ep", "0.25"]).run
    assert (cfg.algo, cfg.updates, cfg.opid.w_step, cfg.opid.w_ep, cfg.eval.splits) == ("opid", 9, 0.5, 0.25, ["test"])
    assert cfg.lr == TrainConfig().lr  # what the file leaves out keeps its default
    # a shipped preset: the main job's file, and a paper preset; flags over both
    main = train_cli.parse_args(["--preset", "main", "--updates", "4"]).run
    assert main == replace(load_yaml(CONFIG_DIR / "main.yaml"), updates=4)
    paper = train_cli.parse_args(["--preset", "alfworld", "--lr", "3e-6"]).run
    assert (paper.algo, paper.parity, paper.group_size, paper.lr) == ("opid", "reference", 8, 3e-6)
    # --resume starts from the run's own config.yaml
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("updates: 5\nseed: 3\n")
    resumed = train_cli.parse_args(["--run-dir", str(run_dir), "--resume", "--updates", "6"])
    assert resumed.resume and (resumed.run.updates, resumed.run.seed) == (6, 3)


def test_the_main_job_runs_its_yaml_file():
    args = main_job.parse_args([])
    assert args.run == main_job.main_config() == load_yaml(CONFIG_DIR / "main.yaml")
    (seed, cfg), = main_job.seed_configs(args, args.run).items()
    assert seed == 0 and cfg == replace(load_yaml(CONFIG_DIR / "main.yaml"), run_dir="runs/main/grpo-seed0")


@pytest.mark.parametrize("text, expected", [
    ("opid:\n  w_stepp: 0.5\n", "unknown config keys ['opid.w_stepp']"),
    ("updates: [1, 2\n", "expected a readable YAML file"),
    ("algo: ppo\n", "--algo 'ppo': expected one of grpo, opid, sdar"),
    ("- 1\n- 2\n", "a config file must be a YAML mapping"),
])
def test_a_bad_yaml_file_is_one_line_with_exit_status_2(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    for entry in (train_cli.main, main_job.main):
        with pytest.raises(SystemExit) as exit_info:
            entry(["--config", str(path), "--run-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert expected in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--nosuch", "3"], "unrecognized arguments: --nosuch 3"),
    (["--lr", "fast"], "--lr 'fast': expected a number"),
    (["--history-k", "x"], "--history-k 'x': expected an integer or none"),
    (["--env-kwargs", "{bad"], "--env-kwargs '{bad': expected a JSON object"),
    (["--preset", "nope"], "--preset 'nope': expected one of main, alfworld"),
])
def test_a_bad_flag_is_one_line_with_exit_status_2(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("opid-train: error: ") and expected in err, err


SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_every_script_flag_is_hyphenated_and_described(script):
    """The scripts' argparse flags: one spelling (hyphens) and a help text each (their --help adds
    the default)."""
    calls = [node for node in ast.walk(ast.parse(script.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"]
    assert calls
    for call in calls:
        names = [a.value for a in call.args if isinstance(a, ast.Constant)]
        assert any(k.arg == "help" for k in call.keywords), f"{script.name}: {names} has no help"
        assert not any(n.startswith("--") and "_" in n for n in names), f"{script.name}: {names}"
    text = script.read_text()
    assert "ArgumentDefaultsHelpFormatter" in text or "from opid_train.cli import ArgumentParser" in text, script.name
