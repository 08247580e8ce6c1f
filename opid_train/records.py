"""Every trajectory a run plays, kept in one append-only file per run: `<run_dir>/records.jsonl.gz`.

One JSON line per trajectory (its steps inside it), one gzip member per write: a training update,
or one evaluation. Concatenated gzip members are one valid gzip file (`zcat records.jsonl.gz | jq`
reads it), appending never rewrites what is there, and a kill can only cut the last member, which
`read_records` drops: a run loses at most the update in flight. Why gzip JSON lines and not
Parquet: the stdlib writes and reads it (pyarrow is an optional extra here), a trajectory is a
nested record (steps, skills, per-token terms) that JSON holds as is, and the prompts of one update
repeat each other, which gzip's window compresses well.

A trajectory record: env_id, split, task, task_id, task_type, group_id, traj_id, score, won,
phase ("train" | "eval"), update (train), label (eval: which policy and protocol), method, and
steps: [{t, observation, prompt, response, action, format_valid, action_valid, reward}], the last
one also with `next_observation` (what the env said after the final action). For OPID/SDAR a
trajectory also has `analysis` (episode_summary, episode_skill, step_skills; null when it failed),
and each scored step has `skills` ({component: routed skill text}), `critical`, `tokens` (the
response tokens as decoded text) and `teacher` ({component: [log pi(y_l | h + skill) - log pi(y_l | h)]},
the raw teacher term per token, before the weights and any normalisation).
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from opid_train.types import Batch, Trajectory

RECORDS_FILE = "records.jsonl.gz"


def trajectory_record(traj: Trajectory, **fields: Any) -> dict[str, Any]:
    """A trajectory as plain JSON types; `fields` (phase, update, label, method, ...) are added on top."""
    steps = [{"t": s.t, "observation": s.observation, "prompt": s.prompt, "response": s.response, "action": s.action,
              "format_valid": s.format_valid, "action_valid": s.action_valid, "reward": float(s.reward)}
             for s in traj.steps]
    if steps and traj.final_observation is not None:
        steps[-1]["next_observation"] = traj.final_observation
    return {"env_id": traj.env_id, "split": traj.split, "task": traj.task, "task_id": traj.task_id,
            "task_type": traj.task_type, "group_id": traj.group_id, "traj_id": traj.traj_id,
            "score": float(traj.score), "won": bool(traj.won), **fields, "steps": steps}


class TokenText:
    """Each token id's decoded text (not the tokenizer's pieces such as 'Ġ13'), memoised per id."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, ids: Sequence[int]) -> list[str]:
        new = [i for i in dict.fromkeys(ids) if i not in self.cache]
        if new:
            if self.tokenizer is None:
                texts = [f"<{i}>" for i in new]
            else:
                texts = self.tokenizer.batch_decode([[i] for i in new], skip_special_tokens=False)
            self.cache.update(zip(new, texts))
        return [self.cache[i] for i in ids]


def add_teacher_details(records: list[dict[str, Any]], batch: Batch, details: dict[str, Any],
                        token_text: TokenText) -> None:
    """Put what OPID/SDAR computed for the batch (`PrepareContext.details`) into the trajectory records
    made from `batch.trajectories` (same order): the analysis, and per scored row its routed skills,
    decoded tokens and raw teacher term per token."""
    analyses, routed = details.get("analyses"), details.get("routed")
    if analyses is None or routed is None:
        return
    terms = details.get("teacher_terms") or {}
    for record, analysis in zip(records, analyses):
        record["analysis"] = analysis.to_json() if analysis is not None else None
    for row, (traj_index, t) in enumerate(batch.rows):
        if not routed[row]:
            continue
        step = records[traj_index]["steps"][t]
        analysis = analyses[traj_index]
        step["skills"] = dict(routed[row])
        step["critical"] = analysis is not None and batch.trajectories[traj_index].steps[t].t in analysis.step_skills
        n = int(batch.response_mask[row].sum())
        step["tokens"] = token_text(batch.response_ids[row, :n].tolist())
        # OPID: one term per routed skill ("episode", "step"); SDAR: one for its whole teacher prompt ("teacher")
        step["teacher"] = {c: [round(v, 4) for v in term[row, :n].tolist()] for c, term in terms.items()
                           if c in routed[row] or c == "teacher"}


def cap_trajectories(trajs: Sequence[Trajectory], limit: int) -> list[Trajectory]:
    """The first `limit` trajectories (0: all), rounded up to whole groups so a group's outcomes stay comparable."""
    if limit <= 0 or limit >= len(trajs):
        return list(trajs)
    keep = {t.group_id for t in trajs[:limit]}
    return [t for t in trajs if t.group_id in keep]


class RecordWriter:
    """Appends records to a run's file, one gzip member per `write` (flushed and synced to disk)."""

    def __init__(self, path: str | Path, compresslevel: int = 6):
        self.path = Path(path)
        self.compresslevel = compresslevel
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, records: Iterable[dict[str, Any]]) -> int:
        """Append one member; returns the bytes written (0 when there is nothing to write)."""
        text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        if not text:
            return 0
        data = gzip.compress(text.encode("utf-8"), compresslevel=self.compresslevel, mtime=0)
        with open(self.path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return len(data)

    def forget_updates_from(self, update: int) -> None:
        """On resume: keep only the training records of updates before `update` (the rest is redone)."""
        if not self.path.exists():
            return
        kept = [r for r in read_records(self.path) if r.get("phase") == "train" and r.get("update", 0) < update]
        tmp = self.path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        RecordWriter(tmp, self.compresslevel).write(kept)
        tmp.touch()
        os.replace(tmp, self.path)


def _members(data: bytes) -> Iterator[bytes]:
    """The complete gzip members of `data`; stops at a cut or damaged one (the write a kill interrupted)."""
    view, pos = memoryview(data), 0
    while pos < len(data):
        inflater = zlib.decompressobj(wbits=31)
        try:
            out = inflater.decompress(view[pos:])
        except zlib.error:
            return
        if not inflater.eof:
            return
        yield out
        pos = len(data) - len(inflater.unused_data)


def records_path(path: str | Path) -> Path:
    """A records file, or the one in a run folder."""
    path = Path(path)
    return path / RECORDS_FILE if path.is_dir() else path


def read_record_lines(path: str | Path) -> list[str]:
    """The JSON lines (one trajectory each) of a records file's complete members, unparsed: opid-view
    reads a line's summary without parsing its steps. None when there is no file."""
    path = records_path(path)
    if not path.exists():
        return []
    return [line for member in _members(path.read_bytes()) for line in member.decode("utf-8").splitlines()
            if line.strip()]


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every trajectory record of a records file (or run folder), in the order written; none when
    there is no file. The member a kill cut short is left out; a line that is not JSON raises ValueError."""
    out = []
    for lineno, line in enumerate(read_record_lines(path), 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{records_path(path)}: record {lineno} is not JSON ({exc})") from None
    return out


class RunRecorder:
    """What opid-train and opid-eval call: training updates and evaluations into one records file."""

    def __init__(self, path: str | Path, *, method: str, tokenizer=None, every: int = 1, max_trajectories: int = 0):
        self.writer = RecordWriter(path)
        self.method, self.every, self.max_trajectories = method, every, max_trajectories
        self.token_text = TokenText(tokenizer)

    @property
    def path(self) -> Path:
        return self.writer.path

    def training_update(self, update: int, batch: Batch, details: dict[str, Any] | None = None) -> int:
        """Record an update's rollouts (with the algorithm's `details`); returns the bytes written."""
        if update % self.every:
            return 0
        records = [trajectory_record(t, phase="train", update=update, method=self.method) for t in batch.trajectories]
        if details:
            add_teacher_details(records, batch, details, self.token_text)
        keep = {id(t) for t in cap_trajectories(batch.trajectories, self.max_trajectories)}
        return self.writer.write(r for r, t in zip(records, batch.trajectories) if id(t) in keep)

    def evaluation(self, trajs: Sequence[Trajectory], label: str) -> int:
        """Record one evaluation's episodes under `label` (which policy, which protocol)."""
        return self.writer.write(trajectory_record(t, phase="eval", label=label, method=self.method)
                                 for t in cap_trajectories(trajs, self.max_trajectories))
