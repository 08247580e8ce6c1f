"""Metrics: one JSON line per update in metrics.jsonl, mirrored to TensorBoard (`tb/` in the run
folder; on by default when installed) and W&B (when asked for), and a PNG of the learning curves
when the run ends. Asking for a logger whose package is missing fails before the run starts."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from opid_envs.core import MissingDependencyError

LOGGER_EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # package -> the opid extra that installs it


def check_loggers(tensorboard: bool | None, wandb: bool | None) -> None:
    """Raise, naming the extra, when a logger asked for (True) is not installed; None means 'when installed'."""
    for package, wanted in (("tensorboard", tensorboard), ("wandb", wandb)):
        if wanted and not importlib.util.find_spec(package):
            raise MissingDependencyError(package, LOGGER_EXTRAS[package], needed_by=f"--{package}")


CURVES = ("success", "score", "loss", "pg_loss", "kl", "pg_clipfrac", "format_invalid_rate", "mean_steps")


class MetricsLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any], tensorboard: bool | None = None, wandb: bool | None = False):
        check_loggers(tensorboard, wandb)
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.tb = self.wb = None
        if tensorboard is not False and importlib.util.find_spec("tensorboard"):
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"))
        if wandb and importlib.util.find_spec("wandb"):
            import wandb as wb

            self.wb = wb.init(project=os.environ.get("WANDB_PROJECT", "opid"), config=config,
                              dir=str(self.run_dir), name=self.run_dir.name)

    def truncate_after(self, update: int) -> None:
        """On resume: drop lines of updates that the checkpoint does not contain, and a last line
        cut short by a kill (it was never a row)."""
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        keep = []
        for number, line in enumerate(lines, 1):
            try:
                if line.strip() and json.loads(line).get("update", -1) < update:
                    keep.append(line)
            except json.JSONDecodeError:
                if number < len(lines):  # not a torn last line: keep what we cannot read
                    keep.append(line)
        if len(keep) == len(lines):
            return
        tmp = self.path.with_name(self.path.name + ".tmp")  # a kill mid-write must not lose the kept rows
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)

    def log(self, update: int, metrics: dict[str, Any]) -> None:
        row = {"update": update, **{k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if isinstance(v, float) and k != "update":
                if self.tb:
                    self.tb.add_scalar(k, v, update)
        if self.wb:
            self.wb.log(row, step=update)

    def close(self) -> Path | None:
        if self.tb:
            self.tb.close()
        if self.wb:
            self.wb.finish()
        return plot_curves(self.path, self.run_dir / "curves.png")


def read_metrics(jsonl: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl, one per update; none for a run that has not logged any."""
    path = Path(jsonl)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(jsonl: Path, png: Path) -> Path | None:
    """One panel per tracked metric present in the log."""
    rows = read_metrics(jsonl)
    keys = [k for k in CURVES if any(k in r for r in rows)]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["update"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
