"""Does OPID beat GRPO here? A small-scale replication of the paper's comparison.

    python scripts/replicate.py --quick                 # ~10 minutes: a smoke run, too short to compare methods
    python scripts/replicate.py                         # 3 seeds, every method: hours (a benchmark)
    python scripts/replicate.py --env OPID/SearchQA-v0 --env-kwargs '{}' --splits test --warmstart-minutes 15 \\
        --fractions '' --out docs/searchqa      # per seed: a 15-minute warm start, then ~5 minutes a method
    python scripts/replicate.py --env OPID/WebShop-v0 --env-kwargs '{}' --splits test --policy smollm2-135m \\
        --lr 1e-6 --warmstart-lr 1e-5           # the tiny policy cannot copy WebShop's product ids (README)
    python scripts/replicate.py --policy smollm2-135m --lr 1e-6 --warmstart-lr 1e-5   # a GPU's job
    python scripts/replicate.py --policy smollm2-135m --lr 1e-5 --warmstart-lr 1e-4 --seeds 0 --fractions '' \\
        --updates 6 --tasks 4 --group 4 --demos 60 --skill-share 0 --warmstart-epochs 2 --warmstart-batch 8 \\
        --micro-batch 4 --eval-episodes 10 --env-kwargs '{"level": "easy-large", "max_steps": 8}' --methods GRPO
                                                # smollm2 on a 2-core CPU in 24 GB: ~55 minutes (README)

For the policy (`--policy`, tiny by default) and every seed: one behaviour-cloned warm start,
shared by every method, then GRPO, OPID, SDAR and OPID's three ablations (no episode skills, no
step skills, no routing) with the same budget (updates x tasks x group size), and GRPO and OPID again on 60 % and 80 % of
the training tasks (sample efficiency). Each final policy is evaluated on the same episodes of
each evaluation split with the main job's protocol (sampled at T=0.4, 4 per task), and every
method is compared with the warm start and with GRPO on the same episodes, pooled over seeds and
splits (a task-level randomization test, with the episode-level McNemar beside it), and, on
ALFWorld, set beside the paper's figures. Writes <out>/RESULTS.md (with the commands that trained
the runs and their minutes), curves.png, per_type.png and results.json. Finished runs are skipped, so a killed study resumes where it stopped;
`--report-only` writes the report from the finished runs alone (while other seeds still run).
Opt-in variants (e.g. `--methods "GRPO,OPID (teacher weight 0.1)"`) are methods with their own
config overrides, run folder and rows.
"""

from __future__ import annotations

import calendar
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opid_train.cli import ArgumentParser  # noqa: E402
from opid_train.cli.train import rl_task_ids, train  # noqa: E402
from opid_train.cli.main import main_config  # noqa: E402
from opid_train.config import TrainConfig, load_yaml, to_dict, with_overrides  # noqa: E402
from opid_train.evaluate import paired_comparison  # noqa: E402
from opid_train.metrics import describe_run, plot_comparison, read_metrics  # noqa: E402
from opid_train.presets import resolve_parity  # noqa: E402

METHODS = {  # name -> (algo, TrainConfig overrides as dotted keys); the name gives the run folder (run_tag)
    "GRPO": ("grpo", {}),
    "OPID": ("opid", {"opid.routing": "route"}),
    "SDAR": ("sdar", {}),
    "OPID w/o episode skills": ("opid", {"opid.routing": "step_only"}),
    "OPID w/o step skills": ("opid", {"opid.routing": "episode_only"}),
    "OPID w/o routing": ("opid", {"opid.routing": "additive"}),
    # opt-in variants (not in DEFAULT_METHODS): select with --methods "GRPO,OPID (teacher weight 0.1)"
    "OPID (teacher weight 0.01)": ("opid", {"opid.routing": "route", "opid.w_ep": 0.01, "opid.w_step": 0.01}),
    "OPID (teacher weight 0.1)": ("opid", {"opid.routing": "route", "opid.w_ep": 0.1, "opid.w_step": 0.1}),
    "OPID (teacher weight 1)": ("opid", {"opid.routing": "route", "opid.w_ep": 1.0, "opid.w_step": 1.0}),
    # z-normalized over the batch's active tokens: at weight 1 the raw term was one-signed (a push on every token)
    "OPID (centred teacher weight 0.1)": ("opid", {"opid.routing": "route", "opid.w_ep": 0.1, "opid.w_step": 0.1,
                                                     "opid.normalize_teacher": True}),
}
# The OPID paper's ALFWorld success % (Qwen2.5-3B, the full ALFWorld, ~150 steps of 16 x 8 on 8 GPUs; reference notes)
PAPER_ALFWORLD = {"GRPO": 75.0, "OPID": 84.3, "OPID w/o episode skills": 74.1, "OPID w/o step skills": 79.1,
                  "OPID w/o routing": 77.5}
DEFAULT_METHODS = ("GRPO", "OPID", "SDAR", "OPID w/o episode skills", "OPID w/o step skills", "OPID w/o routing")
FRACTION_METHODS = ("GRPO", "OPID")


def method_config(cfg: TrainConfig, method: str) -> TrainConfig:
    """The shared config with the method's algorithm and overrides."""
    algo, overrides = METHODS[method]
    return with_overrides(cfg, {"algo": algo, **overrides})


def run_tag(method: str, frac: float = 1.0) -> str:
    """The run folder's name: "OPID w/o routing" -> opid_wo_routing, at 60 % of the tasks opid_wo_routing_60pct."""
    tag = re.sub(r"[^a-z0-9.]+", "_", method.lower().replace("/", "")).strip("_")
    return tag + ("" if frac == 1.0 else f"_{int(100 * frac)}pct")


def default_run_root(env: str) -> str:
    """runs/replicate for the embedded ALFWorld, runs/replicate-webshop for OPID/WebShop-v0: studies of
    different envs never share run folders."""
    return "runs/replicate" + ("" if env == "OPID/ALFWorld-v0" else "-" + env.split("/")[-1].split("-v")[0].lower())


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {', '.join(repr(m) for m in METHODS)}")
    return methods


def study_config(args) -> TrainConfig:
    """The shared budget: the main job's calibrated preset (`make run`), scaled by the command line."""
    cfg = main_config()
    return replace(
        cfg,
        env=args.env,
        env_kwargs=cfg.env_kwargs if args.env_kwargs is None else json.loads(args.env_kwargs),
        policy=args.policy,
        lr=args.lr or cfg.lr,
        updates=args.updates or cfg.updates,
        tasks_per_update=args.tasks or cfg.tasks_per_update,
        group_size=args.group or cfg.group_size,
        micro_batch_size=args.micro_batch or cfg.micro_batch_size,
        warmstart=replace(cfg.warmstart, episodes=args.demos, max_minutes=args.warmstart_minutes,
                          epochs=args.warmstart_epochs or cfg.warmstart.epochs,
                          batch_size=args.warmstart_batch or cfg.warmstart.batch_size,
                          skill_share=args.skill_share, lr=args.warmstart_lr or cfg.warmstart.lr),
        eval=replace(cfg.eval, splits=args.splits.split(","), episodes=args.eval_episodes),
        threads=args.threads or cfg.threads,
        progress=False,
    )


# Where and how fast a run goes, not what it learns (micro-batches accumulate to the same step): these may
# change between the sessions of one study.
MACHINE_FIELDS = {"run_dir", "threads", "device", "env_workers", "progress", "tensorboard", "wandb", "micro_batch_size"}


# What a warm start (a run of 0 updates) depends on: a study with another RL budget reuses it.
WARMSTART_FIELDS = {"env", "env_kwargs", "policy", "init", "tiny", "lora_rank", "seed", "train_split", "max_new_tokens",
                    "temperature", "warmstart", "eval"}


def config_differences(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts: machine fields left out, and for a
    warm start everything RL alone reads."""
    keys = []
    for key, new in wanted.items():
        if not prefix and (key in MACHINE_FIELDS or wanted.get("updates") == 0 and key not in WARMSTART_FIELDS):
            continue
        old = stored.get(key)
        if isinstance(new, dict) and isinstance(old, dict) and key != "env_kwargs":
            keys += config_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            keys.append(prefix + key)
    return sorted(keys)


def run(cfg: TrainConfig, run_dir: Path, train_missing: bool = True) -> dict | None:
    """Train (or resume) one run and return its eval.json; None for an unfinished run not to be trained.
    A folder that holds a run of another config (another env, method or budget) stops the study:
    reporting its results under this config's name would be wrong, and resuming it would mix the two."""
    if (run_dir / "config.yaml").exists():
        # compared with the parity mode resolved on both sides (a run folder records resolved settings)
        differ = config_differences(to_dict(resolve_parity(load_yaml(run_dir / "config.yaml"))),
                                    to_dict(resolve_parity(replace(cfg, run_dir=None))))
        if differ:
            raise SystemExit(f"{run_dir} holds a run of another config (it differs in {', '.join(differ)}): "
                             "pass another --run-root, or remove the folder")
    done = run_dir / "eval.json"
    if not done.exists():
        if not train_missing:
            print(f"  [{run_dir.name}] not finished: left out of the report", flush=True)
            return None
        train(replace(cfg, run_dir=str(run_dir)), resume=True, log=lambda m: print(f"  [{run_dir.name}] {m}", flush=True))
    return json.loads(done.read_text())


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f}" if values else "-"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def versus(results: dict, base: str, method: str, splits: list[str]) -> dict | None:
    """`method` against `base` on the same episodes, pooled over the seeds both have and the splits."""
    seeds = sorted(set(results.get(base, {})) & set(results.get(method, {})))
    pairs = [(results[base][seed][split], results[method][seed][split]) for seed in seeds for split in splits]
    if not pairs or not all("won" in b and "won" in a for b, a in pairs):
        return None  # results written before per-episode outcomes were recorded
    return paired_comparison(pairs)


def versus_cell(results: dict, base: str, method: str, splits: list[str]) -> str:
    """Points gained with the one-sided p that the gain is noise; for a loss, the p that the loss is
    noise (the same tests with the two runs swapped)."""
    test = versus(results, base, method, splits)
    if test is None:
        return "-"
    tasks, kind = test["task_level"], ""
    p, p_task = test["p_one_sided"], tasks["p_one_sided"]
    if test["after"] < test["before"]:
        back, kind = versus(results, method, base, splits), "loss "
        p, p_task = back["p_one_sided"], back["task_level"]["p_one_sided"]
    return (f"{100 * (test['after'] - test['before']):+.1f} ({test['gained']}/{test['lost']}, {kind}p={p:.2g}; "
            f"tasks {tasks['improved']}/{tasks['worsened']}, {kind}p_task={p_task:.2g})")


def metric_means(run_dir: Path, prefixes=("opid/", "sdar/")) -> dict[str, float]:
    """Each algorithm metric averaged over the run's updates."""
    rows = read_metrics(run_dir / "metrics.jsonl")
    keys = {k for r in rows for k in r if k.startswith(prefixes)}
    return {k: statistics.mean(r[k] for r in rows if k in r) for k in sorted(keys)}


def run_minutes(run_dir: Path) -> tuple[float | None, float | None]:
    """(training minutes, wall minutes) of a finished run: the warm start's demos and behaviour cloning,
    or the updates' rollouts and learning, from its own logs; wall from its start to its eval.json
    (evaluation included; since the last resume for a resumed run)."""
    train_s = None
    warm = run_dir / "warmstart.json"
    if warm.exists():
        w = json.loads(warm.read_text())
        train_s = w.get("demo_seconds", 0.0) + w.get("bc_seconds", 0.0)
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        train_s = (train_s or 0.0) + sum(r.get("rollout_seconds", 0.0) + r.get("update_seconds", 0.0)
                                         for r in read_metrics(metrics))
    wall_s = None
    info, done = run_dir / "run_info.json", run_dir / "eval.json"
    if info.exists() and done.exists():
        record = json.loads(info.read_text())
        last_start = (record.get("resumed") or [record])[-1]["started"]
        started = calendar.timegm(time.strptime(last_start, "%Y-%m-%dT%H:%M:%SZ"))
        wall_s = done.stat().st_mtime - started
    return (None if train_s is None else train_s / 60), (None if wall_s is None else wall_s / 60)


def minutes_cell(run_dirs) -> str:
    """Mean training / wall minutes over a method's seeds."""
    pairs = [run_minutes(Path(d)) for d in run_dirs]
    cells = [[p[i] for p in pairs if p[i] is not None] for i in (0, 1)]
    return " / ".join(f"{statistics.mean(c):.1f}" if c else "-" for c in cells)


def commands(run_dirs) -> list[str]:
    """The distinct command lines that trained the runs (each run records its argv)."""
    seen = []
    for d in run_dirs:
        info = Path(d) / "run_info.json"
        if info.exists():
            argv = json.loads(info.read_text())["argv"]
            line = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(argv[0], ROOT)] + argv[1:])
            if line not in seen:
                seen.append(line)
    return seen


def plot(results: dict, runs: dict, out: Path, splits: list[str]) -> list[str]:
    """Learning curves (training rollouts' success, or their score where the env grades) and per-type bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, key = [], "score" if partial_scores(results, splits) else "success"
    curves = {method: [c for c in ([row[key] for row in read_metrics(Path(d) / "metrics.jsonl") if key in row]
                                   for d in seeds.values()) if c]  # the warm start has no updates
              for method, seeds in runs.items()}
    env = next((e for seeds in runs.values() for d in seeds.values() if (e := describe_run(Path(d))["env"])), "")
    if plot_comparison(curves, out / "curves.png", f"training rollout {key}",
                       f"{env + ': ' if env else ''}learning curves of {out.resolve().name}", reference="GRPO"):
        names.append("curves.png")

    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4), squeeze=False)
    methods = list(results)  # the warm start, then the methods in the order they were run
    for ax, split in zip(axes[0], splits):
        types = sorted({t for m in methods for s in results[m].values() for t in s[split]["by_type"]})
        width = 0.8 / max(1, len(methods))
        for i, method in enumerate(methods):
            vals = [statistics.mean(s[split]["by_type"].get(t, {"success": 0})["success"] for s in results[method].values())
                    for t in types]
            ax.bar([j + i * width for j in range(len(types))], vals, width, label=method)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(types))], types, rotation=15, fontsize=7)
        ax.set_title(f"{split}: success per task type (mean over seeds)")
        ax.set_ylim(0, 1)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "per_type.png", dpi=120)
    plt.close(fig)
    names.append("per_type.png")
    return names


def partial_scores(results: dict, splits: list[str]) -> bool:
    """Whether the env grades episodes (WebShop's score) rather than only winning or losing them."""
    return any(abs(s[split]["all"].get("score", s[split]["all"]["success"]) - s[split]["all"]["success"]) > 1e-9
               for seeds in results.values() for s in seeds.values() for split in splits)


def report(args, cfg, results, fraction_results, runs, out: Path, seconds: float, plots: list[str]) -> str:
    splits = cfg.eval.splits
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    this = f"`python scripts/{Path(__file__).name} {' '.join(shlex.quote(a) for a in sys.argv[1:])}`"
    lines = ["# Results: OPID vs GRPO at small scale", "",
             f"Report written by {this} on {platform.platform()}, {os.cpu_count()} CPU cores, {gpu}, in "
             f"{seconds / 60:.1f} minutes (finished runs are reused, not retrained). The runs were trained by:", ""]
    lines += [f"    {c}" for c in commands(d for seeds in runs.values() for d in seeds.values())] or ["    (none recorded)"]
    lines += ["",
             f"Setup: `{cfg.env}` {cfg.env_kwargs}, policy `{cfg.policy}`, seeds {args.seeds}; warm start "
             + (f"`{args.warm_start}`" if args.warm_start else
                f"{cfg.warmstart.episodes} expert episodes (skill share {cfg.warmstart.skill_share})") + "; then "
             f"{cfg.updates} updates x {cfg.tasks_per_update} tasks x {cfg.group_size} rollouts per method; "
             + ("greedy evaluation" if cfg.eval.greedy else
                f"evaluation sampled at T={cfg.eval.temperature or cfg.temperature}, {cfg.eval.samples} episodes per task")
             + f", on {cfg.eval.episodes or 'all'} tasks (spread over the task types) of each split.", ""]
    variants = [m for m in results if m in METHODS and m not in DEFAULT_METHODS]
    if variants:
        lines += ["Variants: " + "; ".join(f"{m} = `{METHODS[m][0]}` with "
                                           + ", ".join(f"`{k}={v}`" for k, v in METHODS[m][1].items())
                                           for m in variants) + ".", ""]
    graded = partial_scores(results, splits)
    header = "| method | seeds | " + " | ".join(f"{s} success %" for s in splits) + " | " + " | ".join(
        [f"{s} score" for s in splits] if graded else []) + (" | " if graded else "") + " | ".join(
        f"{s} steps" for s in splits) + " | minutes: training / wall |"
    lines += ["## Success (mean ± sd over seeds)", "",
              "Minutes are per run, mean over seeds, on this machine (and shared with whatever else ran): training is "
              "the warm start's demonstrations and behaviour cloning, or a method's rollouts and updates; wall adds "
              "evaluation and setup." + (" Score is the mean reward per episode (partial credit; success is a score of 1)."
                                         if graded else ""), "", header, "|" + "---|" * (3 + (3 if graded else 2) * len(splits))]
    for method, seeds in results.items():
        cells = [mean_sd([s[split]["all"]["success"] for s in seeds.values()]) for split in splits]
        scores = [f"{statistics.mean(s[split]['all']['score'] for s in seeds.values()):.3f}"
                  for split in splits] if graded else []
        steps = [f"{statistics.mean(s[split]['all']['mean_steps'] for s in seeds.values()):.1f}" for split in splits]
        lines.append(f"| {method} | {','.join(map(str, seeds))} | " + " | ".join(cells + scores)
                     + " | " + " | ".join(steps)
                     + f" | {minutes_cell(runs.get(method, {}).values())} |")
    lines += ["", "## Episode by episode (pooled over seeds and splits)", "",
              "Points gained, (episodes gained / lost, the exact one-sided McNemar p that the gain, or for a loss "
              "the loss, is noise; tasks improved / worsened, the task-level randomization p, which counts a "
              "task's episodes once).",
              "", "| method | vs warm start | vs GRPO |", "|---|---|---|"]
    for method in results:
        if method != "warm start":
            lines.append(f"| {method} | {versus_cell(results, 'warm start', method, splits)} | "
                         f"{'' if method == 'GRPO' else versus_cell(results, 'GRPO', method, splits)} |")
    if cfg.env == "OPID/ALFWorld-v0" and "GRPO" in results:
        lines += ["", "## Against the paper (ALFWorld success %)", "",
                  f"The paper: Qwen2.5-3B on the full ALFWorld. Here: the {cfg.policy} policy on the level above, "
                  "mean over seeds and splits; the difference to GRPO is on the same episodes.", "",
                  "| method | paper | paper - GRPO | here | here - GRPO |", "|---|---|---|---|---|"]
        for method, paper in PAPER_ALFWORLD.items():
            if method not in results:
                continue
            here = statistics.mean(s[split]["all"]["success"] for s in results[method].values() for split in splits)
            test = None if method == "GRPO" else versus(results, "GRPO", method, splits)
            gap = "" if test is None else f"{100 * (test['after'] - test['before']):+.1f}"
            paper_gap = "" if method == "GRPO" else f"{paper - PAPER_ALFWORLD['GRPO']:+.1f}"
            lines.append(f"| {method} | {paper:.1f} | {paper_gap} | {100 * here:.1f} | {gap} |")
    if fraction_results:
        lines += ["", "## Sample efficiency (share of training tasks)", "",
                  "Each method's runs on fewer tasks beside its 100 % runs; the last column compares the 100 % run "
                  "with it on the same episodes (points the 100 % run is above).", "",
                  "| method | tasks | seeds | " + " | ".join(f"{s} success %" for s in splits) + " | 100 % vs this |",
                  "|---|---|---|" + "---|" * (len(splits) + 1)]
        full = {(m, 1.0): results[m] for m, _ in fraction_results if m in results}
        for (method, frac), seeds in sorted({**fraction_results, **full}.items()):
            cells = [mean_sd([s[split]["all"]["success"] for s in seeds.values()]) for split in splits]
            pair = {"less": seeds, "all": results.get(method, {})}
            lines.append(f"| {method} | {int(100 * frac)} % | {','.join(map(str, seeds))} | " + " | ".join(cells)
                         + f" | {'' if frac == 1.0 else versus_cell(pair, 'less', 'all', splits)} |")
    lines += ["", "## Per task type (success %, mean over seeds)", ""]
    for split in splits:
        types = sorted({t for seeds in results.values() for s in seeds.values() for t in s[split]["by_type"]})
        lines += [f"{split}:", "", "| method | " + " | ".join(types) + " |", "|---|" + "---|" * len(types)]
        for method, seeds in results.items():
            vals = [mean_sd([s[split]["by_type"][t]["success"] for s in seeds.values() if t in s[split]["by_type"]])
                    for t in types]
            lines.append(f"| {method} | " + " | ".join(vals) + " |")
        lines.append("")
    lines += ["## What the self-teacher did (algorithm metrics averaged over updates and seeds)", ""]
    for method, seeds in runs.items():
        means = [metric_means(Path(d)) for d in seeds.values()]
        keys = sorted({k for m in means for k in m})
        if keys:
            lines += [f"{method}:", ""] + [
                f"- `{k}`: {statistics.mean(m[k] for m in means if k in m):.4g}" for k in keys] + [""]
    skills = next((Path(d) / "skills.jsonl" for d in runs.get("OPID", {}).values()
                   if (Path(d) / "skills.jsonl").exists()), None)
    if skills:
        lines += ["Skills used at the first steps of OPID's first run (`skills.jsonl`):", "", "```"]
        lines += [line[:400] for line in skills.read_text().splitlines()[:4]] + ["```", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def main():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="OPID/ALFWorld-v0", help="env id")
    parser.add_argument("--env-kwargs", default=None, help="JSON (None: the main job's, easy-large with 20 steps)")
    parser.add_argument("--splits", default="valid_seen,valid_unseen", help="comma-separated splits evaluated")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one warm start and one run per method each")
    parser.add_argument("--policy", default="tiny", help="'tiny', 'smollm2-135m' or a model folder (runs go to "
                        "<run-root>-<policy> unless it is tiny)")
    parser.add_argument("--lr", type=float, default=None, help="RL learning rate (None: the main job's, for tiny)")
    parser.add_argument("--warmstart-lr", type=float, default=None,
                        help="behaviour-cloning learning rate (None: the main job's, for tiny; lower it for a pretrained model)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated; also: {', '.join(m for m in METHODS if m not in DEFAULT_METHODS)}")
    parser.add_argument("--fractions", default="0.6,0.8", help="training-task shares for GRPO and OPID ('' = none)")
    parser.add_argument("--updates", type=int, default=None, help="RL updates per run (None: the main job's)")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per update (None: the main job's)")
    parser.add_argument("--group", type=int, default=None, help="trajectories per task (None: the main job's)")
    parser.add_argument("--demos", type=int, default=300, help="expert demonstrations of the warm start")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (None: the main job's)")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="rows per forward/backward (None: the main job's 64; about 4 for smollm2 in 24 GB)")
    parser.add_argument("--warmstart-epochs", type=int, default=None,
                        help="behaviour-cloning epochs (None: the main job's 16, for tiny)")
    parser.add_argument("--warmstart-batch", type=int, default=None,
                        help="behaviour-cloning batch (None: the main job's 32; smaller for few, slow steps)")
    parser.add_argument("--skill-share", type=float, default=1.0,
                        help="share of warm-start demo steps also shown with a skill they follow (skill-aware tiny model)")
    parser.add_argument("--warmstart-minutes", type=float, default=None, help="cap on behaviour cloning")
    parser.add_argument("--warm-start", help="use this model folder as the warm start instead of training one; "
                        "'{seed}' is replaced, e.g. runs/main/grpo-seed{seed}/initial (make run's warm starts)")
    parser.add_argument("--eval-episodes", type=int, default=0, help="tasks per split (0 = all)")
    parser.add_argument("--out", default="docs", help="folder the report and its JSON go to")
    parser.add_argument("--run-root", default=None, help="default runs/replicate, with the env's name for another env "
                        "(runs/replicate-webshop) and the policy's for another policy")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the finished runs (e.g. while other seeds still run)")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 3 updates, 30 eval tasks per split, no fractions: about 10 minutes")
    args = parser.parse_args()
    args.run_root = args.run_root or default_run_root(args.env)
    if args.quick:
        args.seeds, args.updates, args.eval_episodes, args.fractions = "0", 3, 30, ""
        args.warmstart_minutes, args.demos = 2.0, 200
        args.run_root = args.run_root + "-quick"
    if args.policy != "tiny":
        args.run_root = f"{args.run_root}-{Path(args.policy).name}"
    cfg = study_config(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        methods = parse_methods(args.methods)
    except ValueError as exc:
        parser.error(str(exc))
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    root, out = Path(args.run_root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results, fraction_results, runs = {}, {}, {}
    for seed in seeds:
        warm_dir = root / f"seed{seed}" / "warmstart"
        print(f"== seed {seed}: warm start -> {warm_dir}", flush=True)
        given = args.warm_start.format(seed=seed) if args.warm_start else None
        warm = run(replace(cfg, seed=seed, updates=0, init=given), warm_dir, not args.report_only)
        if warm is None:
            continue
        results.setdefault("warm start", {})[seed] = warm
        runs.setdefault("warm start", {})[seed] = str(warm_dir)
        init = str(warm_dir / "initial")
        for method in methods:
            mcfg = replace(method_config(cfg, method), seed=seed, init=init)
            for frac in [1.0] + (fractions if method in FRACTION_METHODS else []):
                n = None
                if frac < 1.0:
                    from opid_train.rollout import make_pool

                    pool = make_pool(cfg.env, 1, cfg.env_kwargs, 0)
                    n = max(1, int(frac * len(rl_task_ids(cfg, pool.num_tasks(cfg.train_split)))))  # of RL's tasks
                    pool.close()
                run_dir = root / f"seed{seed}" / run_tag(method, frac)
                print(f"== seed {seed}: {method} on {int(100 * frac)} % of the training tasks -> {run_dir}", flush=True)
                res = run(replace(mcfg, num_train_tasks=n), run_dir, not args.report_only)
                if res is None:
                    continue
                if frac == 1.0:
                    results.setdefault(method, {})[seed] = res
                    runs.setdefault(method, {})[seed] = str(run_dir)
                else:
                    fraction_results.setdefault((method, frac), {})[seed] = res
    seconds = time.monotonic() - t0
    plots = plot(results, runs, out, cfg.eval.splits)
    text = report(args, cfg, results, fraction_results, runs, out, seconds, plots)
    (out / "RESULTS.md").write_text(text)
    (out / "results.json").write_text(json.dumps(
        {"results": results, "fractions": {f"{m}@{f}": r for (m, f), r in fraction_results.items()}}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
