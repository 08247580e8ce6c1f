"""opid-play as a person uses it: a real pseudo-terminal, keystrokes in, the screen's text out."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import gymnasium as gym
import pytest

import opid_envs  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class PtySession:
    """A child process on a pseudo-terminal of 100 x 40; `expect` waits for text on its screen."""

    def __init__(self, args: list[str], env: dict | None = None, cwd: Path = ROOT):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        child_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        child_env.update(PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), TERM="xterm", **(env or {}))
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=child_env,
                                     start_new_session=True)
        os.close(slave)
        self.master, self.screen, self.seen = master, "", 0

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                chunk = os.read(self.master, 65536).decode(errors="replace")
            except OSError:  # the child closed the terminal
                chunk = ""
            self.screen += ANSI.sub("", chunk.replace("\r", ""))

    def expect(self, text: str, timeout: float = 60) -> str:
        """The screen text from the last match up to `text`; fails with the screen when it never shows."""
        deadline = time.monotonic() + timeout
        while text not in self.screen[self.seen:]:
            if time.monotonic() > deadline or (self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]):
                raise AssertionError(f"{text!r} never appeared; the screen shows:\n{self.screen[-3000:]}")
            self._read(0.2)
        end = self.screen.index(text, self.seen) + len(text)
        shown, self.seen = self.screen[self.seen:end], end
        return shown

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            os.close(self.master)


def play(*args: str, **env) -> PtySession:
    return PtySession([sys.executable, "-m", "opid_envs.play", *args], env=env)


@pytest.fixture(scope="module")
def easy_suite(tmp_path_factory) -> Path:
    pytest.importorskip("alfworld")
    from opid_envs.alfworld import generate

    out = tmp_path_factory.mktemp("alfworld") / "easy"
    return generate.generate_suite("easy", out, sizes={"train": 2, "valid_seen": 2, "valid_unseen": 1}, progress=False)


@pytest.mark.slow
def test_a_person_plays_alfworld_to_a_win(easy_suite):
    kwargs = {"data_dir": str(easy_suite)}
    expert = gym.make("OPID/ALFWorld-v0", **kwargs)
    _, info = expert.reset(seed=0, options={"split": "valid_seen", "task_id": 1})
    first_actions = info["admissible_actions"]

    session = play("alfworld", "--split", "valid_seen", "--task-id", "1", "--env-kwargs", f'{{"data_dir": "{easy_suite}"}}')
    screen = session.expect("[step 1/50] > ")
    assert f"Task: {info['task']}" in screen
    assert f"  1. {first_actions[0]}" in screen and f"{len(first_actions)}. {first_actions[-1]}" in screen
    session.send("help")
    assert "NUMBER      take the numbered action" in session.expect("[step 1/50] > ")
    session.send("history")
    assert "No steps yet." in session.expect("[step 1/50] > ")
    session.send("dance on the table")  # free text the engine cannot carry out: a step, nothing happens
    assert "Nothing happens." in session.expect("[step 2/50] > ")
    session.send("history")
    assert "1. dance on the table\n   -> Nothing happens." in session.expect("[step 2/50] > ")
    step = 2
    while True:  # the expert's moves, typed by hand: the first one by its number
        action = expert.unwrapped.expert_action()
        _, reward, terminated, _, info = expert.step(action)
        if step == 2 and action in first_actions:
            session.send(str(first_actions.index(action) + 1))
            session.expect(f"> {action}\n")  # the number is shown as the action it stands for
        else:
            session.send(action)
        step += 1
        if terminated:
            break
        session.expect(f"[step {step}/50] > ")
    end = session.expect("Press Enter for another task, or type q to quit: ")
    assert f"=== Episode over: you won · reward 1.00 · {step - 1} steps ===" in end
    session.send("q")
    assert "Played 1 episode(s): won 1, mean reward 1.00" in session.expect("Bye.")
    assert session.close() == 0


def test_searchqa_takes_free_text_and_shows_the_reward():
    session = play("searchqa", "--task-id", "0")
    screen = session.expect("[step 1/4] > ")
    assert "Free-form action: type <search> a query </search> to search" in screen
    session.send("<search> the capital </search>")
    assert "<information>Doc 1(Title: " in session.expect("[step 2/4] > ")  # Search-R1's result text
    session.send("<answer> certainly not this </answer>")
    end = session.expect("type q to quit: ")
    assert "Your answer: certainly not this. Incorrect." in end
    assert "=== Episode over: not won · reward 0.00 · 2 steps ===" in end
    session.send("q")
    session.expect("Bye.")
    assert session.close() == 0


@pytest.mark.slow
def test_webshop_number_with_a_placeholder_asks_for_the_query():
    session = play("webshop", "--task-id", "0", "--max-steps", "5")
    screen = session.expect("[step 1/5] > ")
    assert "  1. search[<your query>]" in screen
    session.send("1")
    session.expect("your query: ")
    session.send("wireless earbuds")
    screen = session.expect("[step 2/5] > ")
    assert "> search[wireless earbuds]" in screen
    assert "Wireless Earbuds" in screen and "click[next >]" in screen
    session.send("quit")
    session.expect("Bye.")
    assert session.close() == 0


def test_agents_play_behind_the_agent_flag():
    session = play("searchqa", "--agent", "expert", "--episodes", "2")
    out = session.expect("Bye.")
    assert "[step 1] expert > <search>" in out
    assert out.count("=== Episode over: the expert agent won") == 2
    assert "Played 2 episode(s): won 2, mean reward 1.00" in out
    assert session.close() == 0
    session = play("searchqa", "--agent", "random", "--seed", "3")
    assert "[step 1] random > <" in session.expect("Bye.")
    assert session.close() == 0


def test_unknown_env_and_bad_task_are_clear_errors():
    session = play("nosuch/Env-v0")
    assert "opid-play: error: env 'nosuch/Env-v0': no environment 'nosuch/Env-v0' is registered" in session.expect("registered")
    assert session.close() == 2
    session = play("searchqa", "--task-id", "100000")
    assert "opid-play: task_id must be an int in [0," in session.expect("for split")
    assert session.close() == 2
