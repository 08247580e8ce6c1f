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


LABELS = {"success": "success rate", "score": "mean score", "loss": "loss", "pg_loss": "policy-gradient loss",
          "kl": "KL to the reference", "pg_clipfrac": "clipped token share", "format_invalid_rate": "malformed share",
          "mean_steps": "steps per episode"}


def describe_run(run_dir: Path) -> dict[str, str]:
    """{"env", "method", "run"} of a run folder, from its config.yaml ("" where unknown)."""
    run_dir = Path(run_dir)
    try:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, ValueError):
        cfg = {}
    env = str(cfg.get("env", "")).split(":")[-1]
    level = (cfg.get("env_kwargs") or {}).get("level")
    return {"env": f"{env} ({level})" if env and level else env, "method": str(cfg.get("algo", "")).upper(),
            "run": run_dir.resolve().name}


def run_title(run_dir: Path) -> str:
    """"env · method · run" of a run folder (the folder name alone without a config.yaml)."""
    return " · ".join(p for p in describe_run(run_dir).values() if p)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    return plt, MaxNLocator


def _grid(n: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return -(-n // cols), cols


def plot_curves(jsonl: Path, png: Path, title: str | None = None) -> Path | None:
    """A grid of the tracked metrics present in the log, by update counted from 1 as the console
    prints it; titled with env, method and run (from the run folder's config.yaml)."""
    rows = read_metrics(jsonl)
    keys = [k for k in CURVES if any(k in r for r in rows)]
    if not keys:
        return None
    plt, MaxNLocator = _pyplot()
    nrows, ncols = _grid(len(keys), 4)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows + 0.5), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r.get("update", i) + 1, r[key]) for i, r in enumerate(rows) if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) <= 60 else None, lw=1.4)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.set_ylabel(LABELS.get(key, key), fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(title or run_title(Path(jsonl).parent), fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def plot_comparison(curves: dict[str, list[list[float]]], png: Path, ylabel: str, title: str,
                    reference: str | None = None) -> Path | None:
    """Methods side by side, one panel each (mean over seeds, band = min..max over seeds), on one
    y scale, with the `reference` method's mean (default: the first) dashed in every other panel:
    nine bands in one panel hide each other."""
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    plt, MaxNLocator = _pyplot()
    reference = reference if reference in curves else next(iter(curves))
    nrows, ncols = _grid(len(curves), 3)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 2.7 * nrows + 0.6), squeeze=False,
                             sharex=True, sharey=True)

    def mean_band(runs):
        n = min(len(c) for c in runs)
        xs = list(range(1, n + 1))
        return xs, [sum(c[i] for c in runs) / len(runs) for i in range(n)], \
            [min(c[i] for c in runs) for i in range(n)], [max(c[i] for c in runs) for i in range(n)]

    ref_x, ref_mean, _, _ = mean_band(curves[reference])
    colors = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"] if c != "#7f7f7f"]  # grey: the reference
    for k, (ax, (method, runs)) in enumerate(zip(axes.flat, curves.items())):
        xs, mean, low, high = mean_band(runs)
        color = colors[k % len(colors)]
        if method != reference:
            ax.plot(ref_x, ref_mean, color="0.45", ls="--", lw=1.1)
        ax.plot(xs, mean, color=color, lw=1.6)
        if len(runs) > 1:
            ax.fill_between(xs, low, high, color=color, alpha=0.2, lw=0)
        ax.set_title(f"{method} ({len(runs)} seed{'s' if len(runs) > 1 else ''})", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("update", fontsize=8)
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    # the legend below the panels, off the data: the same three marks in every panel
    fig.legend([Line2D([], [], color="0.2", lw=1.6), Patch(color="0.2", alpha=0.2),
                Line2D([], [], color="0.45", ls="--", lw=1.1)],
               ["mean over seeds", "min..max over seeds", f"{reference} mean, for reference"],
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.7 / (2.7 * nrows + 0.6), 1, 1))
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
