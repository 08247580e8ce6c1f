"""Trajectory recording: one JSON line per step, read back into the same `StepRecord`s.

Any str is recorded exactly: a lone surrogate (which UTF-8 cannot hold) is written as its JSON
escape (`\\ud800`), so the file stays valid UTF-8 and reads back to the same string (a high and
a low surrogate side by side read back as the one character they encode, as in UTF-16). A line that
cannot be written (a full disk) is kept and written with the next step; the step's result always
reaches the caller.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

log = logging.getLogger(__name__)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class StepRecord:
    episode: int
    t: int
    prompt: str
    response: str
    action: str | None
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    """Plain JSON types; numpy scalars and arrays become numbers and lists, anything else its str."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def record_line(record: StepRecord) -> str:
    """One JSON line, human-readable unicode kept; lone surrogates as JSON escapes (an exact round trip)."""
    line = json.dumps(asdict(record), ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", line) + "\n"


def read_records(path: str | Path) -> list[StepRecord]:
    """Read a recording; a malformed line raises ValueError naming the file and line."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(StepRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a step record ({exc})") from None
    return records


class RecordTrajectories(gym.Wrapper):
    """Appends every step to a JSONL file. Put it outermost, so `prompt` is what the model saw."""

    def __init__(self, env: gym.Env, path: str | Path):
        super().__init__(env)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._episode = -1
        self._t = 0
        self._prompt = ""
        self._unwritten: list[str] = []

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self._episode += 1
        self._t = 0
        self._prompt = observation
        return observation, info

    def step(self, response):
        observation, reward, terminated, truncated, info = self.env.step(response)
        record = StepRecord(
            episode=self._episode,
            t=self._t,
            prompt=self._prompt,
            response=response if isinstance(response, str) else repr(response),
            action=info.get("action", response if isinstance(response, str) else None),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            info=_jsonable(info),
        )
        self._unwritten.append(record_line(record))
        self._flush()
        self._t += 1
        self._prompt = observation
        return observation, reward, terminated, truncated, info

    def _flush(self) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("".join(self._unwritten))
            self._unwritten.clear()
        except OSError as error:
            log.warning("could not write to %s (%s); %d step(s) kept to write with the next one",
                        self.path, error, len(self._unwritten))
