"""The README's "Register your own environment" runs as written: its code in a fresh folder, its
commands through the installed console scripts (which do not put the working directory on the
import path), to a trained and evaluated policy."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# For speed the test shrinks the model (to 1 layer of 32) and clones longer to make up for it
# (30 epochs: BC loss 0.04, against 2.1 after the default 8); the rest is the README's command.
SMALL = ["--tiny.hidden-size", "32", "--tiny.num-layers", "1", "--tiny.num-heads", "2", "--tiny.intermediate-size", "64",
         "--tiny.vocab-size", "300", "--warmstart.epochs", "30", "--threads", "1", "--no-progress"]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def own_env_folder(tmp_path_factory) -> tuple[Path, dict]:
    section = readme_section("Register your own environment")
    env_code, usage_code = code_blocks(section, "python")
    folder = tmp_path_factory.mktemp("user")
    (folder / "countdown.py").write_text(env_code)
    (folder / "usage.py").write_text(usage_code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OPID_CACHE=str(folder / "cache"))
    return folder, env


def readme_command(tool: str) -> list[str]:
    (commands,) = code_blocks(readme_section("Register your own environment"), "bash")
    (line,) = [c for c in commands.splitlines() if c.startswith(tool + " ")]
    args = shlex.split(line)
    return [str(BIN / args[0]), *args[1:]]


def test_the_python_usage_runs_as_written(own_env_folder):
    folder, env = own_env_folder
    proc = subprocess.run([sys.executable, "usage.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_opid_play_finds_the_module_in_the_working_directory(own_env_folder):
    folder, env = own_env_folder
    proc = subprocess.run(readme_command("opid-play") + ["--agent", "expert"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "=== Episode over: the expert agent won" in proc.stdout


@pytest.mark.slow
def test_opid_train_runs_the_readme_command_to_a_trained_policy(own_env_folder):
    folder, env = own_env_folder
    proc = subprocess.run(readme_command("opid-train") + SMALL, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = folder / "runs" / "countdown"
    warm = json.loads((run / "warmstart.json").read_text())
    assert warm["demo_episodes"] == warm["demo_won"] == 100  # the default warm start
    assert (run / "final" / "model.safetensors").exists()
    result = json.loads((run / "eval.json").read_text())["test"]["all"]
    assert result["episodes"] == 10 and result["success"] >= 0.8, result
    assert "evaluation of" in proc.stdout
