"""What the page shows, read from run folders: config, versions, command, metrics, evaluations and
the recorded trajectories (an index of one summary each, the full records in chunks)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from opid_train.metrics import read_metrics
from opid_train.records import RECORDS_FILE, read_records

CHUNK = 64  # trajectories per chunk the page loads when it opens one of them

SUMMARY_KEYS = ("phase", "update", "label", "method", "split", "task_id", "task_type", "task", "won", "score",
                "group_id", "traj_id")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def record_files(path: Path) -> list[Path]:
    """The records of a run folder (its own file, then opid-eval's beside a policy in it), or a records file."""
    if path.is_file():
        return [path]
    own = [path / RECORDS_FILE] if (path / RECORDS_FILE).exists() else []
    return own + sorted(path.glob("*.records.jsonl.gz")) + sorted(path.glob("*/*.records.jsonl.gz"))


def evaluations(path: Path) -> list[dict[str, Any]]:
    """Every evaluation result in a run folder, warm start first: [{name, results: {split: summary}}].

    main_eval.json (the main job: warm start and RL policy, per protocol), eval.json (opid-train's
    evaluation of its final policy), and opid-eval's eval_*.json beside a policy (initial/, final/)."""
    out = []
    main = _json(path / "main_eval.json")
    if isinstance(main, dict) and isinstance(main.get("results"), dict):
        for protocol, by_policy in main["results"].items():
            for policy, name in (("initial", "warm start"), ("final", "after RL")):
                if policy in by_policy:
                    out.append({"name": f"{name}, {protocol}", "results": by_policy[policy]})
    for folder in ("initial", "final", "."):
        for file in sorted((path / folder).glob("eval_*.json")) if path.is_dir() else []:
            report = _json(file)
            if isinstance(report, dict) and isinstance(report.get("results"), dict):
                for mode, results in report["results"].items():
                    out.append({"name": f"{'warm start' if folder == 'initial' else folder.strip('.') or path.name} "
                                        f"{mode} ({file.name})", "results": results})
    final = _json(path / "eval.json") if path.is_dir() else None
    if isinstance(final, dict) and final:
        out.append({"name": "after RL (eval.json)", "results": final})
    return out


@dataclass
class RunData:
    name: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def index(self) -> list[dict[str, Any]]:
        """One summary per trajectory (what the browser filters on), `i` its place in `records`."""
        return [{"i": i, **{k: r.get(k) for k in SUMMARY_KEYS}, "steps": len(r.get("steps", [])),
                 "analysed": r.get("analysis") is not None, "source": r.get("_source")}
                for i, r in enumerate(self.records)]

    def chunk(self, k: int) -> list[dict[str, Any]]:
        return self.records[k * CHUNK:(k + 1) * CHUNK]


def load_run(path: str | Path, name: str | None = None) -> RunData:
    """A run folder (or a records file) as the page's data; missing parts are simply absent."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run folder or records file")
    folder = path if path.is_dir() else path.parent
    config = {}
    if path.is_dir() and (path / "config.yaml").exists():
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    method = config.get("algo")
    records = []
    for file in record_files(path):
        source = str(file.relative_to(folder)) if file.is_relative_to(folder) else str(file)
        for r in read_records(file):
            if r.get("method") in (None, "eval") and method:
                r["method"] = method
            r["_source"] = source
            records.append(r)
    meta = {
        "name": name or path.name, "path": str(path.resolve()), "config": config,
        "run_info": _json(path / "run_info.json") if path.is_dir() else None,
        "warmstart": _json(path / "warmstart.json") if path.is_dir() else None,
        "metrics": read_metrics(path / "metrics.jsonl") if path.is_dir() else [],
        "evaluations": evaluations(path) if path.is_dir() else [],
        "trajectories": len(records), "chunk_size": CHUNK,
    }
    return RunData(meta["name"], path, meta, records)


def run_names(paths: list[Path]) -> list[str]:
    """Short names that tell the runs apart: the folder name, with its parent's where two share one."""
    names = [p.resolve().name for p in paths]
    return [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]
