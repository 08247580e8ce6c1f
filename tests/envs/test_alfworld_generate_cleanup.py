"""Killed suite generation: its temporary folder is removed by the next generation, a live writer's never."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opid_envs.alfworld import generate

SMALL = {"train": 2, "valid_seen": 1, "valid_unseen": 1}


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.parent.glob(f".{root.name}.*") if not p.name.endswith(f"{root.name}.lock"))


def start_writer(root: Path) -> subprocess.Popen:
    """A real `python -m opid_envs.alfworld.generate` of a big level, back when its folder has games in it."""
    proc = subprocess.Popen([sys.executable, "-m", "opid_envs.alfworld.generate", "--level", "full", "--out", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    deadline = time.monotonic() + 120
    while not list(root.parent.glob(f".{root.name}.tmp-*/json_2.1.1/train/*")):
        assert proc.poll() is None and time.monotonic() < deadline, "the writer did not start writing"
        time.sleep(0.1)
    return proc


@pytest.mark.slow
def test_a_killed_generation_is_cleaned_and_a_live_one_is_not(tmp_path):
    root = tmp_path / "suite"
    writer = start_writer(root)
    try:
        generate.generate_suite("easy", root, sizes=SMALL, progress=False)  # while the writer writes
        live = [name for name in leftovers(root) if not name.endswith(".lock")]
        assert len(live) == 1 and (root.parent / live[0] / "json_2.1.1").is_dir()  # untouched
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert live[0] in leftovers(root)  # kill -9 leaves it (20-80 MB for a real level)
    generate.generate_suite("easy", root, sizes=SMALL, progress=False)
    assert leftovers(root) == [] and generate.read_manifest(root)["sizes"] == SMALL


def test_unlocked_leftovers_go_only_once_idle(tmp_path):
    root = tmp_path / "suite"
    old, fresh = tmp_path / ".suite.tmp-legacy", tmp_path / ".suite.old-abc"
    for folder in (old, fresh):
        (folder / "json_2.1.1").mkdir(parents=True)
        (folder / "json_2.1.1" / "game.tw-pddl").write_text("{}")
    an_hour_ago = time.time() - 3600
    for path in (old / "json_2.1.1" / "game.tw-pddl", old / "json_2.1.1", old):
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert generate.clean_stale_temp(root) == [old]
    assert fresh.is_dir()  # might be a live writer's: kept until idle
