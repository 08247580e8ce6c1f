"""On-disk cache of analyses keyed by trajectory hash, so a rerun or a resume never pays twice.

One small JSON file per analysis under `<cache_dir>/<key[:2]>/<key>.json` (JSON, never pickle).
The key hashes what the analyzer reads (task, outcome, every step's observation, response and
reward) and the analyzer's identity (backend, model, prompt version, K). Failures are not cached,
so a resume retries them. A write goes to a private temporary file that is renamed into place, or
removed when the write fails: a reader sees a whole analysis or none, and a failed write (a full
disk) costs only that cache entry, never the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from opid_train.analyzers.base import Analysis, Analyzer
from opid_train.types import Trajectory

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("OPID_CACHE", Path.home() / ".cache" / "opid")) / "analyses"


def trajectory_key(trajectory: Trajectory, analyzer_identity: str) -> str:
    content = {
        "analyzer": analyzer_identity,
        "task": trajectory.task,
        "won": trajectory.won,
        "score": round(float(trajectory.score), 6),
        "steps": [[s.observation, s.response, round(float(s.reward), 6), s.format_valid, s.action_valid]
                  for s in trajectory.steps],
    }
    # surrogatepass: a lone surrogate in an observation hashes instead of raising
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False)
                          .encode("utf-8", "surrogatepass")).hexdigest()


class CachedAnalyzer(Analyzer):
    """Wraps a backend: cached analyses are read back, the others computed (together) and stored."""

    def __init__(self, inner: Analyzer, cache_dir: str | Path | None = None):
        self.inner = inner
        self.name = inner.name
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.hits = 0

    def identity(self) -> str:
        return self.inner.identity()

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _load(self, key: str) -> Analysis | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return Analysis.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("ignoring malformed cached analysis %s (%s); recomputing it", path, error)
            return None

    def _store(self, key: str, analysis: Analysis) -> None:
        path = self._path(key)
        data = json.dumps(analysis.to_json(), ensure_ascii=False).encode("utf-8")
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # atomic: a reader sees the whole file or none
        except OSError as error:
            log.warning("could not cache analysis %s (%s); the run goes on without it", path, error)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def analyze(self, trajectory: Trajectory) -> Analysis | None:
        return self.analyze_many([trajectory])[0]

    def analyze_many(self, trajectories: list[Trajectory]) -> list[Analysis | None]:
        keys = [trajectory_key(t, self.identity()) for t in trajectories]
        results = [self._load(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        self.hits += len(trajectories) - len(todo)
        fresh = self.inner.analyze_many([trajectories[i] for i in todo]) if todo else []
        for i, analysis in zip(todo, fresh):
            results[i] = analysis
            if analysis is not None:
                self._store(keys[i], analysis)
        return results
