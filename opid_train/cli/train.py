"""opid-train: warm start (optional), then RL (GRPO / OPID / SDAR) on any contract env.

    opid-train --env OPID/ALFWorld-v0 --env-kwargs '{"level": "easy"}' --algo grpo \\
        --warmstart.episodes 300 --updates 20 --seed 0 --run-dir runs/alf
    opid-train --run-dir runs/alf --resume         # continue from the newest checkpoint that loads
    opid-train --config my.yaml --lr 3e-4          # a YAML config (e.g. a run's config.yaml); flags win
    opid-train --preset main --updates 4           # a shipped config: main (the main job's) or a paper preset

The run folder holds config.yaml, run_info.json (seed, versions, command), metrics.jsonl,
curves.png, initial/ (the policy RL starts from, also the KL reference) and checkpoints/.
Starting without --resume in a folder that holds a run is refused unless --overwrite is given.
Every option is checked before any work starts.
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro
import yaml

import opid_envs  # noqa: F401  (registers the OPID env ids)
from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.cli import debugging, option_value, parse, reported_errors
from opid_train.config import ConfigError, TrainConfig, bad, load_yaml, to_dict, validate
from opid_train.evaluate import evaluate, format_table, summarize
from opid_train.learner import Learner, load_newest_checkpoint, make_batch
from opid_train.learning_signal import SignalWatch, rollout_metrics, with_learning_defaults
from opid_train.metrics import MetricsLogger
from opid_train.policy.presets import cache_dir, hf_policy, load_policy
from opid_train.presets import agent_config_for, preset_config, resolve_parity, run_config_names
from opid_train.records import RECORDS_FILE, RunRecorder
from opid_train.rollout import collect, derive_seed, make_pool, spread_task_ids
from opid_train.warmstart import behaviour_clone, cached_demos, explore_corpus


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    import gymnasium
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[2], timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "gymnasium": gymnasium.__version__, "opid_commit": commit, "platform": platform.platform()}


# What a run writes into its folder (a fresh start with --overwrite removes these, and only these).
RUN_FILES = ("config.yaml", "run_info.json", "metrics.jsonl", "warmstart.json", "eval.json", "curves.png",
             "skills.jsonl", "main_eval.json", RECORDS_FILE, "tb", "checkpoints", "initial", "final")


def claim_run_folder(run_dir: Path, overwrite: bool) -> None:
    """A fresh start needs a folder without another run's files, so two runs never mix: refuse,
    or with `overwrite` remove that run's files (not anything else in the folder)."""
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not found:
        return
    if not overwrite:
        raise bad("run_dir", str(run_dir), f"holds another run ({', '.join(found)}); "
                                           "pass --resume to continue it or --overwrite to replace it")
    for name in found:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def record_run(run_dir: Path, cfg: TrainConfig, continuing: bool = False, **extra) -> None:
    """config.yaml and run_info.json (`extra` added to the latter: the verl backend's task counts).
    A run `continuing` from its checkpoints keeps its first start's record (seed, command, versions,
    time) and adds this start to `resumed`, so the folder tells every command and install that wrote it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    start = {"argv": sys.argv, "versions": versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             **extra}
    path = run_dir / "run_info.json"
    first = None
    if continuing and path.exists():
        try:
            first = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            first = None  # unreadable: this start's record replaces it
    if isinstance(first, dict):
        earlier = first.get("resumed")
        info = {**first, "resumed": [*(earlier if isinstance(earlier, list) else []), start]}
    else:
        info = {"seed": cfg.seed, **start}
    path.write_text(json.dumps(info, indent=2))


def demo_tasks(split: str, n_tasks: int, episodes: int) -> list[tuple[str, int]]:
    """The tasks the expert demonstrates: spread over the split (every task type), cycling when
    there are more episodes than tasks."""
    ids = spread_task_ids(n_tasks, episodes)
    return [(split, ids[i % len(ids)]) for i in range(episodes)]


def initial_policy(cfg: TrainConfig, pool, run_dir: Path, log) -> tuple:
    """The policy RL starts from: the preset, behaviour-cloned on expert demos when asked."""
    demos, metrics = [], {}
    if cfg.warmstart.episodes > 0:
        tasks = demo_tasks(cfg.warmstart.split, pool.num_tasks(cfg.warmstart.split), cfg.warmstart.episodes)
        t0 = time.monotonic()
        # Demonstrations depend on the tasks only; every seed of a study shares them.
        demos, won = cached_demos(pool, tasks, seed=0, env_kwargs=cfg.env_kwargs, cache=cache_dir() / "demos",
                                  progress=cfg.progress, skill_share=cfg.warmstart.skill_share)
        metrics.update(demo_episodes=len(tasks), demo_won=won, demo_steps=len(demos), demo_seconds=time.monotonic() - t0)
        log(f"expert: won {won}/{len(tasks)} demonstration episodes, {len(demos)} steps")
        if not demos:
            raise RuntimeError(f"the expert won none of {len(tasks)} episodes: no demonstrations to warm-start from")
    texts = None
    if cfg.policy == "tiny":
        texts = [d.prompt + "\n" + d.response for d in demos] or explore_corpus(pool, cfg.train_split, seed=cfg.seed)
    policy = load_policy(cfg.policy, texts=texts, seed=cfg.seed, device=cfg.device, lora_rank=cfg.lora_rank,
                         temperature=cfg.temperature, tiny=cfg.tiny)
    if demos:
        metrics.update(behaviour_clone(policy, demos, epochs=cfg.warmstart.epochs, lr=cfg.warmstart.lr,
                                       batch_size=cfg.warmstart.batch_size, seed=cfg.seed,
                                       micro_batch_size=cfg.warmstart.micro_batch_size or cfg.micro_batch_size,
                                       max_minutes=cfg.warmstart.max_minutes, progress=cfg.progress,
                                       on_epoch=lambda e, loss, secs: log(
                                           f"BC epoch {e + 1}/{cfg.warmstart.epochs}: loss {loss:.3f} ({secs:.0f} s)")))
        log(f"warm start: BC loss {metrics['bc_loss']:.3f} after {metrics['bc_epochs']} epochs "
            f"({metrics['bc_seconds']:.0f} s)")
    return policy, metrics


def rl_task_ids(cfg: TrainConfig, n_tasks: int) -> list[int]:
    """The training tasks RL draws from: `num_train_tasks` spread over the split, or over the tasks
    the warm start did not demonstrate with `exclude_demo_tasks`."""
    candidates = list(range(n_tasks))
    if cfg.exclude_demo_tasks and cfg.warmstart.split == cfg.train_split and cfg.warmstart.episodes > 0:
        demonstrated = {t for _, t in demo_tasks(cfg.warmstart.split, n_tasks, cfg.warmstart.episodes)}
        candidates = [t for t in candidates if t not in demonstrated]
        if not candidates:
            raise ValueError(f"exclude_demo_tasks: the warm start's {cfg.warmstart.episodes} episodes demonstrate "
                             f"all {n_tasks} {cfg.train_split} tasks; lower --warmstart.episodes")
    return [candidates[i] for i in spread_task_ids(len(candidates), cfg.num_train_tasks)]


def task_draw(cfg: TrainConfig, update: int, task_ids: list[int]) -> list[tuple[str, int]]:
    rng = np.random.default_rng(derive_seed(cfg.seed, update, 11))
    picks = rng.choice(len(task_ids), size=cfg.tasks_per_update, replace=cfg.tasks_per_update > len(task_ids))
    return [(cfg.train_split, task_ids[int(i)]) for i in picks]


def recorded(trajs: list, recorder: RunRecorder | None, label: str) -> list:
    """`trajs`, after recording them as one evaluation when recording is on."""
    if recorder:
        recorder.evaluation(trajs, label)
    return trajs


def train(cfg: TrainConfig, resume: bool = False, log=print, overwrite: bool = False) -> Path:
    """Run (or resume) one training run; returns its run folder. A fresh start (no `resume`) in a
    folder that holds a run raises ConfigError unless `overwrite`."""
    # the reference's or our prompts, env text and advantage, and the warm start that lets the tiny
    # policy learn: resolved here, so config.yaml records them
    cfg = validate(with_learning_defaults(resolve_parity(cfg), log))
    run_dir = cfg.resolved_run_dir()
    if not resume:
        claim_run_folder(run_dir, overwrite)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    load = lambda folder: hf_policy(folder, device=cfg.device, temperature=cfg.temperature)  # noqa: E731
    resumed = load_newest_checkpoint(run_dir, load, log) if resume else None  # before anything is written
    warm_started = (run_dir / "initial" / "config.json").exists()
    if resume and resumed is None and (run_dir / "config.yaml").exists() and not warm_started:
        log(f"no checkpoint in {run_dir}; starting from scratch")
    # room for a rollout group and for the evaluation's samples of one task (an env whose optional
    # package is missing fails here, before the run folder is written)
    envs = max(cfg.tasks_per_update * cfg.group_size, 1 if cfg.eval.greedy else cfg.eval.samples)
    pool = make_pool(cfg.env, envs, cfg.env_kwargs, cfg.env_workers, agent_config_for(cfg))
    try:
        record_run(run_dir, cfg, continuing=resumed is not None or (resume and warm_started))
        if resumed is not None:
            policy, start = resumed.policy, resumed.update
        elif resume and warm_started:  # killed after the warm start
            policy = load(run_dir / "initial")
            start = 0
            log(f"resuming from the warm start in {run_dir / 'initial'}")
        elif cfg.init:
            policy = hf_policy(cfg.init, device=cfg.device, lora_rank=cfg.lora_rank, temperature=cfg.temperature)
            policy.save(run_dir / "initial")
            start = 0
        else:
            policy, warm_metrics = initial_policy(cfg, pool, run_dir, log)
            policy.save(run_dir / "initial")
            (run_dir / "warmstart.json").write_text(json.dumps(warm_metrics, indent=2))
            start = 0
        reference = None
        if cfg.grpo.kl_coef > 0:  # loaded from disk, so a resumed run has the very same reference
            reference = hf_policy(run_dir / "initial", device=cfg.device, temperature=cfg.temperature)
            reference.model.requires_grad_(False)
        learner = Learner(policy, make_algorithm(cfg.algo, cfg), cfg, reference)
        if resumed is not None:
            learner.optimizer.load_state_dict(resumed.optimizer_state)
        logger = MetricsLogger(run_dir, to_dict(cfg), cfg.tensorboard, cfg.wandb)
        logger.truncate_after(start)
        train_task_ids = rl_task_ids(cfg, pool.num_tasks(cfg.train_split))
        watch = SignalWatch(warm_started=bool(cfg.warmstart.episodes or cfg.init))
        recorder = None
        if cfg.record.enabled:
            recorder = RunRecorder(run_dir / RECORDS_FILE, method=cfg.algo, tokenizer=getattr(policy, "tokenizer", None),
                                   every=cfg.record.every, max_trajectories=cfg.record.max_trajectories)
            recorder.writer.forget_updates_from(start)
        for update in range(start, cfg.updates):
            t0 = time.monotonic()
            trajs = collect(policy, pool, task_draw(cfg, update, train_task_ids), cfg.group_size,
                            seed=derive_seed(cfg.seed, update, 22), max_new_tokens=cfg.max_new_tokens,
                            group_offset=update * cfg.tasks_per_update, progress=cfg.progress, desc=f"rollout {update}")
            t1 = time.monotonic()
            batch = make_batch(trajs)
            ctx = PrepareContext(policy=policy, template=pool.config.template, run_dir=run_dir, update=update)
            metrics = learner.update(batch, ctx)
            metrics.update(rollout_metrics(trajs), rollout_seconds=t1 - t0, update_seconds=time.monotonic() - t1)
            if recorder:
                t2 = time.monotonic()
                metrics.update(record_bytes=recorder.training_update(update, batch, ctx.details),
                               record_seconds=time.monotonic() - t2)
            logger.log(update, metrics)
            log(f"update {update + 1}/{cfg.updates}: success {metrics['success']:.2f} "
                f"format-invalid {metrics['format_invalid_rate']:.2f} groups with signal {metrics['signal_groups']:.2f} "
                f"loss {metrics.get('loss', 0):.4f} rollout {t1 - t0:.1f}s update {metrics['update_seconds']:.1f}s")
            warning = watch.update(metrics)
            if warning:
                log(warning)
            if (update + 1) % cfg.checkpoint_every == 0 or update + 1 == cfg.updates:
                learner.save_checkpoint(run_dir, update + 1)
        if start < cfg.updates or resumed is None:
            policy.save(run_dir / "final")
        png = logger.close()
        if png:
            log(f"learning curves: {png}")
        if cfg.eval.splits:
            label = f"final {'greedy' if cfg.eval.greedy else 'sampled'}"
            results = {split: summarize(recorded(evaluate(
                policy, pool, split, episodes=cfg.eval.episodes, greedy=cfg.eval.greedy, samples=cfg.eval.samples,
                temperature=cfg.eval.temperature, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens,
                progress=cfg.progress), recorder, label)) for split in cfg.eval.splits}
            (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
            log(format_table(results, f"evaluation of {run_dir / 'final'}"))
    finally:
        pool.close()
    return run_dir


def split_backend(argv: list[str]) -> tuple[str, list[str]]:
    """`--backend local|verl` (default local) and the other arguments."""
    rest, backend, i = [], "local", 0
    while i < len(argv):
        if argv[i] == "--backend" and i + 1 < len(argv):
            backend, i = argv[i + 1], i + 2
        elif argv[i].startswith("--backend="):
            backend, i = argv[i].split("=", 1)[1], i + 1
        else:
            rest, i = rest + [argv[i]], i + 1
    if backend not in ("local", "verl"):
        print(f"opid-train: error: --backend {backend!r}: expected one of local, verl", file=sys.stderr)
        raise SystemExit(2)
    return backend, rest


Preset = Literal[tuple(run_config_names())]  # opid_train/configs/*.yaml and the paper presets


@dataclass
class TrainCommand:
    run: Annotated[TrainConfig, tyro.conf.arg(name="")]
    config: str | None = None  # a YAML file with a run's config (e.g. a run's config.yaml); flags override it
    # a shipped config to start from: main (the main job's, opid_train/configs/main.yaml) or the paper's
    # hyperparameters for an env (opid_train/presets/NAME.yaml); flags override it
    preset: Preset | None = None
    resume: bool = False  # continue from the run folder's newest checkpoint that loads (and its config.yaml)
    overwrite: bool = False  # start afresh in a folder that holds a run, removing its files
    # local: this package's trainer; verl: verl's trainer (its own flags: opid-train --backend verl --help)
    backend: Literal["local", "verl"] = "local"
    debug: bool = False  # show tracebacks of errors (also OPID_DEBUG=1)


def base_config(argv: list[str]) -> TrainConfig:
    """The config the flags override: --config's file, else --preset's, else a resumed run's own
    config.yaml, else the defaults."""
    config, preset, run_dir = (option_value(argv, name) for name in ("config", "preset", "run-dir"))
    if config is not None:
        return load_yaml(config)
    if preset is not None:
        return preset_config(preset)
    resume = any(token.replace("_", "-") == "--resume" for token in argv)
    if resume and run_dir and (Path(run_dir) / "config.yaml").exists():
        return load_yaml(Path(run_dir) / "config.yaml")
    return TrainConfig()


def parse_args(argv: list[str]) -> TrainCommand:
    """opid-train's flags over the base config; a bad flag or config file exits with status 2."""
    with reported_errors("opid-train", debugging(None) or "--debug" in argv):
        base = base_config(argv)
    return parse(TrainCommand, argv, "opid-train", __doc__, default=TrainCommand(run=base))


def main(argv: list[str] | None = None) -> None:
    backend, argv = split_backend(list(sys.argv[1:] if argv is None else argv))
    if backend == "verl":  # its own entry and config (presets + Hydra overrides); imported only here
        from opid_train.verl.main import main as verl_main

        return verl_main(argv)
    args = parse_args(argv)
    with reported_errors("opid-train", debugging(args)):
        if args.resume and args.overwrite:
            raise ConfigError("--resume continues the run in the folder, --overwrite replaces it: pass one of them")
        train(validate(args.run), resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
