"""What the page shows, read from run folders: config, versions, command, metrics, evaluations and
the recorded trajectories (an index of one summary each, the full records in chunks)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from opid_train.metrics import read_metrics
from opid_train.records import RECORDS_FILE, read_record_lines

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


def line_summary(line: str) -> dict[str, Any]:
    """A record line's fields without parsing its steps: `trajectory_record` writes them before
    "steps" (and the analysis after), and a quote inside a JSON string is always escaped, so the
    first ',"steps":[' ends them. Anything else is parsed whole."""
    cut = line.find(',"steps":[')
    if cut < 0:
        record = json.loads(line)
        return {**{k: v for k, v in record.items() if k != "steps"}, "steps": len(record.get("steps", [])),
                "analysed": record.get("analysis") is not None}
    head = json.loads(line[:cut] + "}")
    return {**head, "steps": line.count('{"t":', cut), "analysed": line.rfind(',"analysis":{') > cut}


@dataclass
class RunData:
    """A run's page data; records stay unparsed lines until a chunk of them is asked for."""

    name: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)  # per line: fields the page adds (method, source)

    def __len__(self) -> int:
        return len(self.lines)

    def record(self, i: int) -> dict[str, Any]:
        return {**json.loads(self.lines[i]), **self.extra[i]}

    def index(self) -> list[dict[str, Any]]:
        """One summary per trajectory (what the browser filters on), `i` its place in the run."""
        out = []
        for i, (line, extra) in enumerate(zip(self.lines, self.extra)):
            head = {**line_summary(line), **extra}
            out.append({"i": i, **{k: head.get(k) for k in SUMMARY_KEYS}, "steps": head["steps"],
                        "analysed": head["analysed"], "source": head["_source"]})
        return out

    def chunk(self, k: int) -> list[dict[str, Any]]:
        return [self.record(i) for i in range(k * CHUNK, min(len(self.lines), (k + 1) * CHUNK))]


def load_run(path: str | Path, name: str | None = None) -> RunData:
    """A run folder (or a records file) as the page's data; missing parts are simply absent."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run folder or records file")
    folder = path if path.is_dir() else path.parent
    config = {}
    if path.is_dir() and (path / "config.yaml").exists():
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    lines, extra = [], []
    for file in record_files(path):
        source = str(file.relative_to(folder)) if file.is_relative_to(folder) else str(file)
        for line in read_record_lines(file):
            lines.append(line)
            # opid-eval records its episodes as method "eval": the run's own method is more telling
            extra.append({"_source": source, **({"method": config["algo"]} if config.get("algo") and
                                                 ('"method":"eval"' in line[:line.find(',"steps":[')]) else {})})
    meta = {
        "name": name or path.name, "path": str(path.resolve()), "config": config,
        "run_info": _json(path / "run_info.json") if path.is_dir() else None,
        "warmstart": _json(path / "warmstart.json") if path.is_dir() else None,
        "metrics": read_metrics(path / "metrics.jsonl") if path.is_dir() else [],
        "evaluations": evaluations(path) if path.is_dir() else [],
        "trajectories": len(lines), "chunk_size": CHUNK,
    }
    return RunData(meta["name"], path, meta, lines, extra)


def run_names(paths: list[Path]) -> list[str]:
    """Short names that tell the runs apart: the folder name, with its parent's where two share one."""
    names = [p.resolve().name for p in paths]
    return [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]
