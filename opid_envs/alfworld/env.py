"""`OPID/ALFWorld-v0`: ALFWorld's text games on the real TextWorld PDDL engine.

Games come from, in order: `data_dir=`, `$ALFWORLD_DATA` (official data in the
`json_2.1.1/{train,valid_seen,valid_unseen}` layout), or a suite generated offline on first
use into `$OPID_CACHE/alfworld/<level>` (see `generate.py`). Either way the engine is
textworld's `PddlEnv` with ALFWorld's entity names, as `AlfredTWEnv` runs it; `fastpath`
memoizes the engine's text generation so steps are faster with identical observations.

An invalid command is answered exactly as the engine answers it ("Nothing happens.", state
unchanged), without running the engine, and flagged `action_valid=False`.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opid_envs.alfworld import import_alfworld, user_data_dir
from opid_envs.alfworld.generate import (
    LEVELS, SPLITS, TASK_TYPES, ensure_suite, planner_walkthrough, read_manifest)
from opid_envs.core import Outcome, Task, TextEnv, require

INVALID_FEEDBACK = "Nothing happens."
TASK_PREFIX = "Your task is to: "


@contextmanager
def keep_argv():
    """fast-downward's translator overwrites sys.argv whenever it translates a problem."""
    saved = list(sys.argv)
    try:
        yield
    finally:
        sys.argv[:] = saved


def load_textworld(memoize: bool = True):
    """Import textworld's PDDL engine (with fast-downward) and install the memoized text paths."""
    import_alfworld()
    textworld = require("textworld", "alfworld")
    require("fast_downward", "alfworld")
    if memoize:
        from opid_envs.alfworld import fastpath

        fastpath.install()
    return textworld


class ALFWorldEngine:
    """textworld's `PddlEnv` with ALFWorld's entity names ("apple 1"), as AlfredTWEnv sets it up.

    `memoize=False` leaves textworld unpatched (for the benchmark's plain-engine baseline); once
    any engine in the process is memoized, all are.
    """

    def __init__(self, memoize: bool = True):
        textworld = load_textworld(memoize)
        from textworld.envs.pddl.pddl import PddlEnv

        from alfworld.agents.utils.misc import Demangler

        self._demangler_cls = Demangler
        with keep_argv():
            self.tw = PddlEnv(textworld.EnvInfos(won=True, admissible_commands=True))
        self.gamefile: str | None = None
        self.state = None

    def load(self, gamefile: str | dict) -> None:
        with keep_argv():
            self.tw.load(gamefile)
        self.gamefile = gamefile if isinstance(gamefile, str) else None
        demangler = self._demangler_cls(game_infos=self.tw._entity_infos, shuffle=False)
        for info in self.tw._entity_infos.values():
            info.name = demangler.demangle_alfred_name(info.id)

    def reset(self):
        with keep_argv():
            self.state = self.tw.reset()
        return self.state

    def step(self, command: str):
        self.state, _, _ = self.tw.step(command)
        return self.state

    def is_valid(self, command: str) -> bool:
        return command.strip() in self.state["_valid_commands"]

    def facts(self) -> list:
        """The current facts with entity names, as textworld reports them when asked."""
        return [self.tw._get_human_readable_fact(f) for f in self.state["_facts"]]

    def planner_plan(self) -> list[str]:
        """The PDDL planner's plan from the current state (0.2-15 s on large rooms).

        Fast only for an engine loaded and reset inside `fastpath.planning()`.
        """
        return list(self.tw._pddl_state.replan(self.tw._entity_infos))

    @property
    def walkthrough(self) -> list[str] | None:
        return self.tw.walkthrough


@dataclass
class GameRef:
    gamefile: str
    task_type: str


def _fix_hint(root: Path, generated: bool, level: str) -> str:
    if generated:
        return (f"delete {root} and it is regenerated on the next gym.make, or run "
                f"`python -m opid_envs.alfworld.generate --level {level}`")
    return ("point data_dir= or $ALFWORLD_DATA at a directory holding json_2.1.1/{train,valid_seen,valid_unseen} "
            "(official ALFWorld data), or unset it to use the generated offline games")


class ALFWorldEnv(TextEnv):
    """ALFWorld text games; `level` picks a generated suite, `data_dir` official data instead.

    Levels: "easy" (6 receptacles, 2 task types), "easy-large" (easy with 3x the training games
    and 200 evaluation games per split, the first 60 easy's),
    "medium" (6 types, one receptacle per type),
    "full" (default: the ALFWorld distribution). `task_types` keeps a subset of the six types.
    `info` adds `gamefile`. `expert_action()` is the handcoded expert's next action.
    """

    splits = SPLITS

    def __init__(self, level: str = "full", split: str | None = None, max_steps: int = 50,
                 data_dir: str | os.PathLike | None = None, task_types: list[str] | None = None,
                 suite_seed: int = 0, render_mode: str | None = None):
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; choose one of {sorted(LEVELS)}")
        unknown = set(task_types or ()) - set(TASK_TYPES)
        if unknown:
            raise ValueError(f"unknown task types {sorted(unknown)}; ALFWorld has {list(TASK_TYPES)}")
        self.level = level
        self.task_types = tuple(task_types) if task_types else TASK_TYPES
        data_dir = data_dir if data_dir is not None else user_data_dir()
        self.generated = data_dir is None
        if self.generated:
            self.data_root = ensure_suite(level, suite_seed)
        else:
            self.data_root = Path(data_dir).expanduser()
        self._check_root()
        self._games: dict[str, list[GameRef]] = {}
        self.engine = ALFWorldEngine()
        self._loaded: str | None = None
        self._game: GameRef | None = None
        self._expert = None
        self._history: list[tuple[Any, str, str]] = []  # (engine state, command, feedback) per step

    # -- games ----------------------------------------------------------------------------------
    def _check_root(self) -> None:
        games = self.data_root / "json_2.1.1"
        if not games.is_dir():
            raise FileNotFoundError(
                f"no ALFWorld games at {self.data_root}: {games} does not exist; "
                + _fix_hint(self.data_root, self.generated, self.level))

    def games(self, split: str) -> list[GameRef]:
        """The games of a split, in a fixed order (task_id indexes this list)."""
        if split not in self._games:
            self._games[split] = self._collect(split)
        return self._games[split]

    def _collect(self, split: str) -> list[GameRef]:
        split_dir = self.data_root / "json_2.1.1" / split
        refs = []
        for root, _dirs, files in sorted(os.walk(split_dir)):
            task_dir = Path(root).parent.name  # <task_type>-<Object>-<mrecep>-<Receptacle>-<scene>
            if "traj_data.json" not in files or "movable" in task_dir or "Sliced" in task_dir:
                continue  # AlfredTWEnv's filter: no movable-receptacle or sliced tasks
            task_type = task_dir.split("-", 1)[0]
            if task_type not in self.task_types:
                continue
            gamefile = os.path.join(root, "game.tw-pddl")
            if not self.generated and _marked_unsolvable(gamefile):
                continue
            refs.append(GameRef(gamefile, task_type))
        manifest = read_manifest(self.data_root) if self.generated else None
        if manifest and self.task_types == TASK_TYPES and len(refs) != manifest["sizes"][split]:
            raise ValueError(
                f"the generated ALFWorld suite at {self.data_root} is incomplete: {split} has {len(refs)} "
                f"games, expected {manifest['sizes'][split]}; " + _fix_hint(self.data_root, True, self.level))
        if not refs:
            raise ValueError(
                f"no playable ALFWorld games of types {list(self.task_types)} in {split_dir}; "
                + _fix_hint(self.data_root, self.generated, self.level))
        return refs

    def num_tasks(self, split: str) -> int:
        return len(self.games(split))

    def _load(self, ref: GameRef) -> None:
        if self._loaded == ref.gamefile:
            return
        try:
            self.engine.load(ref.gamefile)
        except (Exception, SystemExit) as exc:  # JSON, TatSu and fast-downward all have their own errors
            fix = (_fix_hint(self.data_root, True, self.level) if self.generated else
                   "replace it with the official file or delete its trial directory")
            raise ValueError(f"cannot load ALFWorld game {ref.gamefile} ({type(exc).__name__}: {exc}); {fix}") from exc
        self._loaded = ref.gamefile

    # -- the contract ---------------------------------------------------------------------------
    def _start(self, split: str, task_id: int) -> Task:
        ref = self.games(split)[task_id]
        self._load(ref)
        state = self.engine.reset()
        self._game, self._expert = ref, None
        self._history = [(state, "", state["feedback"])]
        feedback = state["feedback"]
        instruction = feedback.split(TASK_PREFIX, 1)[-1].strip()
        return Task(observation=feedback, instruction=instruction, task_type=ref.task_type,
                    admissible_actions=self._admissible(state), info={"gamefile": ref.gamefile})

    def _act(self, action: str) -> Outcome:
        command = action.strip()
        if not self.engine.is_valid(command):
            # The engine's own answer to an unknown command, without recomputing an unchanged state.
            self._history.append((self._history[-1][0], command, INVALID_FEEDBACK))
            return Outcome(INVALID_FEEDBACK, valid=False, admissible_actions=self._admissible(self.engine.state))
        state = self.engine.step(command)
        self._history.append((state, command, state["feedback"]))
        won = bool(state["won"])
        return Outcome(state["feedback"], valid=True, done=won, score=1.0 if won else 0.0, won=won,
                       admissible_actions=self._admissible(state))

    @staticmethod
    def _admissible(state) -> list[str]:
        return [c for c in state["admissible_commands"] if c != "help"]

    # -- experts --------------------------------------------------------------------------------
    def expert_action(self) -> str:
        """The (patched) handcoded expert's next action in the current state.

        The expert tracks the episode as a person would (where it has looked, what it holds), so
        it is fed every step since reset, lazily: calling this only now and then costs the same.
        """
        from opid_envs.alfworld.experts import HandcodedExpert

        if self._game is None:
            raise RuntimeError("expert_action() needs an episode: call reset() first")
        if self._expert is None:
            self._expert = HandcodedExpert(self._game.gamefile, seed=self._info.get("task_id", 0))
        return self._expert.catch_up(self.engine, self._history)

    def walkthrough(self) -> list[str]:
        """The planner's plan for the current game: stored at generation time, else planned now."""
        if self._game is None:
            raise RuntimeError("walkthrough() needs an episode: call reset() first")
        if self.engine.walkthrough:
            return list(self.engine.walkthrough)
        return planner_walkthrough(self._game.gamefile)


def _marked_unsolvable(gamefile: str) -> bool:
    """AlfredTWEnv's filter (the game says `"solvable": false`), read without parsing the JSON.

    A missing or unreadable file is kept, so that loading it reports what is wrong.
    """
    try:
        with open(gamefile, "rb") as f:
            text = f.read()
    except OSError:
        return False
    return b'"solvable": false' in text or b'"solvable":false' in text

