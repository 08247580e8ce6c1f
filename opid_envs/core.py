"""What every opid text environment shares: the contract, a text space, and the base class.

The contract (README, "The text-environment contract"):
- observation and action are `str`;
- `reset(seed=, options={"split": ..., "task_id": ...})`; the same task_id gives the same state;
- `info` always carries `task`, `task_id`, `task_type`, `split`, `admissible_actions`, `won`,
  and after a step `action_valid`;
- reward is the task's outcome score in [0, 1] on the final step, 0 before;
- `terminated` when the task ends, `truncated` at the step limit.

`TextEnv` implements the bookkeeping once (task choice, step limit, invalid actions, info keys),
so an environment writes only how a task starts and what an action does.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import random
import re
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

MAX_ACTION_CHARS = 1_000_000  # the action space's bound: a longer action is invalid without being read
CONTRACT_INFO_KEYS = ("task", "task_id", "task_type", "split", "admissible_actions", "won")
STEP_INFO_KEYS = CONTRACT_INFO_KEYS + ("action_valid",)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Text from outside (a model, an endpoint, a user) made safe for files, JSON and tokenizers.

    Python's str can hold lone surrogates (e.g. from JSON's "\\ud800"), which no UTF-8 writer
    or tokenizer accepts: they become U+FFFD. Everything else is kept. Linear in the length.
    """
    return _LONE_SURROGATE.sub("\ufffd", text)


@lru_cache(maxsize=None)
def _tag_pattern(names: tuple[str, ...]) -> re.Pattern:
    return re.compile(rf"<(/?)({'|'.join(map(re.escape, names))})>", flags=re.I)


def tagged_blocks(text: str, names: tuple[str, ...]) -> tuple[list[tuple[str, str]], Counter, Counter]:
    """The `<name>...</name>` blocks of a text and each tag's opening and closing counts, in one pass.

    A block runs from an opening tag to the first closing tag of the same name; tags in between
    are its content. Names come back lower-case. One scan over the tags, so the time is linear in
    the text's length whatever its shape (a backreference regex rescans from every opening tag).
    """
    blocks, opens, closes = [], Counter(), Counter()
    pending: tuple[str, int] | None = None  # the open block: (name, where its content starts)
    for match in _tag_pattern(tuple(names)).finditer(text):
        closing, name = match.group(1) == "/", match.group(2).lower()
        (closes if closing else opens)[name] += 1
        if pending is None and not closing:
            pending = (name, match.end())
        elif pending is not None and closing and name == pending[0]:
            blocks.append((name, text[pending[1] : match.start()]))
            pending = None
    return blocks, opens, closes


class MissingDependencyError(ImportError):
    """An optional dependency is missing; the message names the extra that installs it."""

    def __init__(self, module: str, extra: str, needed_by: str = "this environment"):
        super().__init__(
            f"{needed_by} needs the optional dependency '{module}', which is not installed: "
            f"pip install 'opid[{extra}]'"
        )
        self.module, self.extra = module, extra


def require(module: str, extra: str):
    """Import an optional dependency or raise an error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra) from exc


def resolve_env_id(env_id: str) -> str:
    """Gymnasium's "package.module:NS/Name-v0" form: import the module (it registers the id), return the id.

    The module is looked up from the working directory too, as `python -m` would, since console
    scripts (opid-train, opid-play) do not put it on the import path.
    """
    if ":" in env_id:
        module, env_id = env_id.split(":", 1)
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(f"cannot import {module!r} (for {env_id!r}) from {os.getcwd()} or the "
                                      f"installed packages: {exc}") from exc
    if env_id not in gym.registry:
        raise ValueError(f"no environment {env_id!r} is registered with gymnasium; register it, or pass "
                         f"'your.module:{env_id}' so the module that registers it is imported")
    return env_id


class TextSpace(gym.Space[str]):
    """Any Python `str` up to `max_length` characters, unicode included.

    `gymnasium.spaces.Text` only holds characters from a finite charset (alphanumerics by
    default), so observations with spaces or punctuation would fall outside it. Gymnasium's
    `AsyncVectorEnv` passes it through shared memory (below): `max_length` x 4 bytes per env.
    """

    _SAMPLE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 []<>/.,:'-"

    def __init__(self, max_length: int = MAX_ACTION_CHARS, seed: int | None = None):
        self.max_length = max_length
        super().__init__(shape=None, dtype=None, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        length = int(self.np_random.integers(1, min(self.max_length, 32) + 1))
        idx = self.np_random.integers(0, len(self._SAMPLE_CHARS), size=length)
        return "".join(self._SAMPLE_CHARS[i] for i in idx)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, TextSpace) and other.max_length == self.max_length


class SharedStrings(Sequence[str]):
    """A batch of strings in shared memory: what `AsyncVectorEnv` reads its workers' text
    observations from. Each env has a slot of `max_length` x 4 bytes (UTF-8 at its widest) and a
    byte count, so reading or writing costs the text's length, not the slot's. Any str comes back as
    written, lone surrogates included (`surrogatepass` both ways), as through a pipe. A deep copy (the
    vector env's default, `copy=True`) is a plain tuple of str, as without shared memory."""

    def __init__(self, space: TextSpace, shared, n: int):
        lengths, data = shared
        self.slot = space.max_length * 4
        self.lengths = np.frombuffer(lengths.get_obj(), dtype=np.int64, count=n)
        self.data = np.frombuffer(data.get_obj(), dtype=np.uint8, count=n * self.slot)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        index = range(len(self))[index]
        start = index * self.slot
        return self.data[start : start + int(self.lengths[index])].tobytes().decode("utf-8", errors="surrogatepass")

    def write(self, index: int, text: str) -> None:
        raw = np.frombuffer(text.encode("utf-8", errors="surrogatepass"), dtype=np.uint8)
        start = index * self.slot
        self.data[start : start + len(raw)] = raw
        self.lengths[index] = len(raw)

    def __deepcopy__(self, memo) -> tuple[str, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return f"SharedStrings({tuple(self)!r})"


@create_shared_memory.register(TextSpace)
def _create_text_shared_memory(space: TextSpace, n: int = 1, ctx=multiprocessing):
    return ctx.Array("q", n), ctx.Array("B", n * space.max_length * 4)


@read_from_shared_memory.register(TextSpace)
def _read_text_from_shared_memory(space: TextSpace, shared, n: int = 1) -> SharedStrings:
    return SharedStrings(space, shared, n)


@write_to_shared_memory.register(TextSpace)
def _write_text_to_shared_memory(space: TextSpace, index: int, value: str, shared) -> None:
    if not space.contains(value):
        raise ValueError(f"{space} cannot hold this observation ({type(value).__name__}, "
                         f"{len(value) if isinstance(value, str) else '-'} characters)")
    SharedStrings(space, shared, index + 1).write(index, value)


@dataclass
class Task:
    """The initial state of an episode, as `TextEnv._start` returns it."""

    observation: str
    instruction: str
    task_type: str
    admissible_actions: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one valid or invalid action did, as `TextEnv._act` returns it."""

    observation: str
    valid: bool = True
    done: bool = False
    score: float = 0.0
    won: bool = False
    admissible_actions: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class TextEnv(gym.Env[str, str]):
    """Base class of a contract-abiding text environment.

    Subclasses set `splits`, implement `num_tasks(split)`, `_start(split, task_id)` and
    `_act(action)`. The base class picks tasks, counts steps, truncates at `max_steps`, turns
    non-string, empty or over-long (> MAX_ACTION_CHARS) actions into an invalid step with a clear
    message (so `_act` always gets a non-empty str of bounded length), and fills the contract's info
    keys. The reward is `Outcome.score` on the step that ends the task and 0 otherwise.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}
    splits: tuple[str, ...] = ("train",)

    def __init__(self, split: str | None = None, max_steps: int = 50, render_mode: str | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.split = self._check_split(split or self.splits[0])
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.observation_space = TextSpace()
        self.action_space = TextSpace()
        self._info: dict[str, Any] = {}
        self._observation = ""
        self._steps = 0
        self._finished = True

    # -- what a subclass writes -------------------------------------------------------------
    def num_tasks(self, split: str) -> int:
        raise NotImplementedError

    def _start(self, split: str, task_id: int) -> Task:
        raise NotImplementedError

    def _act(self, action: str) -> Outcome:
        raise NotImplementedError

    # -- the contract -------------------------------------------------------------------------
    def _check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; this env has {list(self.splits)}")
        return split

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"split", "task_id"}
        if unknown:
            warnings.warn(f"{type(self).__name__} ignores unknown reset options {sorted(unknown)}; "
                          "it reads 'split' and 'task_id'", stacklevel=2)
        split = self._check_split(options.get("split") or self.split)
        n = self.num_tasks(split)
        if n < 1:
            raise ValueError(f"split {split!r} has no tasks")
        task_id = options.get("task_id")
        if task_id is None:
            task_id = int(self.np_random.integers(n))
        elif isinstance(task_id, bool) or not isinstance(task_id, (int, np.integer)) or not 0 <= task_id < n:
            raise ValueError(f"task_id must be an int in [0, {n}) for split {split!r}, got {task_id!r}")
        task = self._start(split, int(task_id))
        self._steps, self._finished = 0, False
        self._observation = task.observation
        self._info = {
            "task": task.instruction,
            "task_id": int(task_id),
            "task_type": task.task_type,
            "split": split,
            "admissible_actions": task.admissible_actions,
            "won": False,
            **task.info,
        }
        return self._observation, dict(self._info)

    def step(self, action: str):
        if self._finished:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        self._steps += 1
        if not isinstance(action, str) or len(action) > MAX_ACTION_CHARS or not action.strip():
            why = (f"expected a string, got {type(action).__name__}" if not isinstance(action, str) else
                   f"the action is {len(action)} characters long; the limit is {MAX_ACTION_CHARS}"
                   if len(action) > MAX_ACTION_CHARS else "the action is empty")
            outcome = Outcome(
                observation=f"Invalid action: {why}. Nothing happens.",
                valid=False,
                admissible_actions=self._info.get("admissible_actions"),
            )
        else:
            outcome = self._act(clean_text(action))  # an env that echoes the action stays UTF-8 safe
        terminated = bool(outcome.done)
        truncated = not terminated and self._steps >= self.max_steps
        self._finished = terminated or truncated
        reward = float(outcome.score) if terminated else 0.0
        self._observation = outcome.observation
        self._info.update(outcome.info)
        self._info.update(
            admissible_actions=outcome.admissible_actions,
            won=bool(outcome.won),
            action_valid=bool(outcome.valid),
        )
        return self._observation, reward, terminated, truncated, dict(self._info)

    def random_action(self, rng: random.Random) -> str:
        """An action for a random agent: an admissible one, or a free-form probe."""
        actions = self._info.get("admissible_actions")
        return rng.choice(actions) if actions else "look"

    def render(self):
        text = f"[{self._info.get('task', '')}]\n{self._observation}"
        if self.render_mode == "human":
            print(text)
            return None
        return text


def check_contract_info(info: dict[str, Any], after_step: bool = False) -> None:
    """Raise AssertionError when `info` misses a contract key or holds a wrong type."""
    keys = STEP_INFO_KEYS if after_step else CONTRACT_INFO_KEYS
    missing = [k for k in keys if k not in info]
    assert not missing, f"info misses contract keys {missing}"
    assert isinstance(info["task"], str) and info["task"], "info['task'] must be a non-empty str"
    assert isinstance(info["task_id"], int), "info['task_id'] must be an int"
    assert isinstance(info["task_type"], str), "info['task_type'] must be a str"
    assert isinstance(info["split"], str), "info['split'] must be a str"
    acts = info["admissible_actions"]
    assert acts is None or (isinstance(acts, list) and all(isinstance(a, str) for a in acts)), (
        "info['admissible_actions'] must be a list of str or None"
    )
    assert isinstance(info["won"], bool), "info['won'] must be a bool"
    if after_step:
        assert isinstance(info["action_valid"], bool), "info['action_valid'] must be a bool"
