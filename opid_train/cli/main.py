"""The main job (`make run`): on ALFWorld's easy level, warm-start a tiny policy by behaviour
cloning, RL-train it, then evaluate the warm start and the RL policy on the same valid_seen and
valid_unseen episodes and print both side by side.

    python -m opid_train.cli.main                      # seed 0
    python -m opid_train.cli.main --seeds 0,1,2 --algo grpo
    python -m opid_train.cli.main --updates 4          # any opid-train flag overrides the config
    python -m opid_train.cli.main --config my.yaml     # a copy of opid_train/configs/main.yaml, changed
    python -m opid_train.cli.main --seeds 0,1,2 --run-root runs/rl --init 'runs/main/grpo-seed{seed}/initial'

The job's config is opid_train/configs/main.yaml.

Both policies play the same evaluation episodes: every valid_seen and valid_unseen task (200 + 200),
sampled at T=0.4, 2 per task (the reference's evaluation temperature); `--also-greedy` adds greedy
decoding. A one-sided paired randomization test with the task as the unit
(`evaluate.task_level_test`), pooled over seeds and splits, decides whether RL is "measurably above"
the warm start. The episode-level McNemar test is printed beside it. The verdict is printed and
written to <run_root>/verdict.json. When it finds no gain it says how large a gain the evaluation
could have found and how to pool seeds. Each seed's comparison is stored with a key of both
policies' weights, so rerunning a finished job, for example to pool seeds, evaluates nothing again.
What the job measured, seed by seed: README.md ("The main job") and docs/STUDIES.md.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import tyro

from opid_train.cli import debugging, parse, option_value, reported_errors
from opid_train.cli.train import train
from opid_train.config import TrainConfig, bad, load_yaml, validate
from opid_train.evaluate import evaluate, paired_comparison, summarize
from opid_train.policy.presets import hf_policy
from opid_train.presets import CONFIG_DIR, agent_config_for, resolve_parity
from opid_train.rollout import make_pool

MAIN_CONFIG = CONFIG_DIR / "main.yaml"
MEASURED_VERSIONS = CONFIG_DIR / "measured-versions.txt"  # what the README's figures ran on; `make install` pins them


def main_config() -> TrainConfig:
    """The job's config: opid_train/configs/main.yaml (about 20 minutes a seed on a 2-core CPU)."""
    return load_yaml(MAIN_CONFIG)


def version_drift(constraints: Path = MEASURED_VERSIONS, installed=importlib.metadata.version) -> list[str]:
    """The packages this install has in other versions than the job's figures were measured with:
    other versions can change the games or the float order, so the same seed draws other rollouts."""
    drift = []
    for line in constraints.read_text().splitlines():
        name, _, measured = line.split("#")[0].strip().partition("==")
        if not measured:
            continue
        try:
            version = installed(name)
        except importlib.metadata.PackageNotFoundError:
            version = "none"
        if version.split("+")[0] != measured:  # 2.13.0+cpu is 2.13.0
            drift.append(f"{name} {version} (measured: {measured})")
    return drift


@dataclass
class MainCommand:
    run: Annotated[TrainConfig, tyro.conf.arg(name="")]
    seeds: str = "0"  # comma-separated seeds, one full run each
    run_root: str = "runs/main"  # the runs go to <run-root>/<algo>-seed<seed>; results.json and verdict.json here
    config: str | None = None  # a YAML run config instead of opid_train/configs/main.yaml; flags override it
    also_greedy: bool = False  # also compare both policies greedily, each task once (~1.5 min a seed on 2 cores)
    debug: bool = False  # show tracebacks of errors (also OPID_DEBUG=1)


def protocols(cfg: TrainConfig, also_greedy: bool = False) -> dict[str, dict]:
    """The evaluation protocols of the comparison: the configured one, then greedy if asked."""
    if cfg.eval.greedy:
        return {"greedy": {"greedy": True}}
    temperature = cfg.eval.temperature or cfg.temperature
    sampled = {"greedy": False, "samples": cfg.eval.samples, "temperature": temperature}
    return {f"sampled, T={temperature}, {cfg.eval.samples} per task": sampled} | (
        {"greedy": {"greedy": True}} if also_greedy else {})


def evaluation_key(cfg: TrainConfig, run_dir: Path, also_greedy: bool = False) -> str:
    """What the comparison depends on: both policies' weights and the evaluation protocol."""
    digest = hashlib.sha256()
    for name in ("initial", "final"):
        for weights in sorted((run_dir / name).glob("*.safetensors")):
            digest.update(weights.read_bytes())
    digest.update(json.dumps([protocols(cfg, also_greedy), cfg.env, cfg.env_kwargs, cfg.eval.splits, cfg.eval.episodes,
                              cfg.seed, cfg.max_new_tokens], sort_keys=True, default=str).encode())
    return digest.hexdigest()


def compare(cfg: TrainConfig, run_dir: Path, also_greedy: bool = False) -> dict:
    """Success of the warm start (run_dir/initial) and of the RL policy (run_dir/final) on the same
    episodes: {protocol: {"initial" | "final": {split: summary}}}. Stored in main_eval.json with the
    key of what it measured, so a rerun (after a kill, or to pool seeds) does not evaluate again."""
    key, path = evaluation_key(cfg, run_dir, also_greedy), run_dir / "main_eval.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["results"]
    cfg = resolve_parity(cfg)  # the same prompts and env settings as training
    pool = make_pool(cfg.env, cfg.tasks_per_update * cfg.group_size, cfg.env_kwargs, cfg.env_workers,
                     agent_config_for(cfg))
    results: dict = {}
    start = time.monotonic()
    try:
        for name in ("initial", "final"):
            policy = hf_policy(run_dir / name, device=cfg.device, temperature=cfg.temperature)
            for protocol, how in protocols(cfg, also_greedy).items():
                results.setdefault(protocol, {})[name] = {
                    split: summarize(evaluate(policy, pool, split, episodes=cfg.eval.episodes, seed=cfg.seed,
                                              max_new_tokens=cfg.max_new_tokens, progress=cfg.progress, **how))
                    for split in cfg.eval.splits}
    finally:
        pool.close()
    path.write_text(json.dumps({"key": key, "results": results, "seconds": time.monotonic() - start}, indent=2))
    return results


def seed_minutes(run_dir: Path) -> float | None:
    """Minutes one seed of the job computed (demos + BC, RL updates, evaluation), from its run folder;
    None when a part is missing (a warm start reused with --init, an evaluation stored before this was kept)."""
    try:
        warm = json.loads((run_dir / "warmstart.json").read_text())
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        evaluation = json.loads((run_dir / "main_eval.json").read_text())["seconds"]
        seconds = warm["demo_seconds"] + warm["bc_seconds"] + evaluation + sum(
            row.get("rollout_seconds", 0) + row.get("update_seconds", 0) + row.get("record_seconds", 0) for row in rows)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return seconds / 60


def table(all_results: dict[int, dict]) -> str:
    lines = [f"{'seed':>4} {'split':<13} {'task type':<24} {'episodes':>8} {'warm start':>11} {'after RL':>9} {'delta':>7}"]
    for seed, res in all_results.items():
        for split in res["initial"]:
            ini, fin = res["initial"][split], res["final"][split]
            for ttype in ["ALL"] + list(ini["by_type"]):
                a = ini["all"] if ttype == "ALL" else ini["by_type"][ttype]
                b = fin["all"] if ttype == "ALL" else fin["by_type"][ttype]
                lines.append(f"{seed:>4} {split:<13} {ttype:<24} {a['episodes']:>8d} {100 * a['success']:>10.1f}% "
                             f"{100 * b['success']:>8.1f}% {100 * (b['success'] - a['success']):>+6.1f}")
    if len(all_results) > 1:
        for split in next(iter(all_results.values()))["initial"]:
            a = sum(r["initial"][split]["all"]["success"] for r in all_results.values()) / len(all_results)
            b = sum(r["final"][split]["all"]["success"] for r in all_results.values()) / len(all_results)
            n = next(iter(all_results.values()))["initial"][split]["all"]["episodes"]
            lines.append(f"{'mean':>4} {split:<13} {'ALL':<24} {n:>8d} {100 * a:>10.1f}% {100 * b:>8.1f}% {100 * (b - a):>+6.1f}")
    return "\n".join(lines)


def verdict(all_results: dict[int, dict], alpha: float = 0.05, minutes: float | None = None) -> tuple[str, dict]:
    """Is RL measurably above the warm start? Decided with the task as the unit (`task_level_test`:
    a task's episodes are not independent); the episode-level exact McNemar test is reported beside it.
    `minutes`: what a seed of the job took here, for the advice on pooling seeds."""
    episodes = paired_comparison((res["initial"][split], res["final"][split])
                                 for res in all_results.values() for split in res["initial"])
    by_task = episodes["task_level"]
    above = by_task["p_one_sided"] < alpha
    text = (f"{'RL is measurably above' if above else 'RL is NOT measurably above'} the warm start: "
            f"{100 * episodes['before']:.1f}% -> {100 * episodes['after']:.1f}% over {episodes['episodes']} paired "
            f"episodes of {by_task['tasks']} tasks ({len(all_results)} seed(s)); {by_task['improved']} tasks improved, "
            f"{by_task['worsened']} worsened, task-level one-sided randomization p = {by_task['p_one_sided']:.2g} "
            f"(threshold {alpha}); {episodes['gained']} episodes gained, {episodes['lost']} lost, "
            f"episode-level exact McNemar p = {episodes['p_one_sided']:.2g}")
    if not above:
        text += "\n" + what_one_run_shows(by_task, len(all_results), minutes)
    return text, {**episodes, "measurably_above": above, "alpha": alpha}


def what_one_run_shows(by_task: dict, seeds: int, minutes: float | None = None) -> str:
    """When the test finds no gain: how large a gain this evaluation could have found, and how to see more."""
    runs = "One seed is one RL run" if seeds == 1 else f"{seeds} seeds are {seeds} RL runs"
    cost = f", about {minutes:.0f} minutes a seed here" if minutes else ""
    return (f"{runs}, and RL's gain varies between runs. An evaluation of {by_task['tasks']} tasks finds a mean gain "
            f"of about {100 * by_task['detectable_change']:.1f} points per task with 80 % power; this one measured "
            f"{100 * by_task['mean_change']:+.1f}. To see more, pool more seeds: `SEEDS=0,1,2 make run` "
            f"(each seed is a run of this job{cost}; finished seeds are reused, not rerun).")


def seed_configs(args, base: TrainConfig) -> dict[int, TrainConfig]:
    """One validated config per seed (its run folder under --run-root, '{seed}' in --init filled in),
    all checked before the first run starts."""
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise bad("seeds", args.seeds, "expected comma-separated integers >= 0") from None
    if not seeds or min(seeds) < 0:
        raise bad("seeds", args.seeds, "expected comma-separated integers >= 0")
    if Path(args.run_root).is_file():
        raise bad("run_root", args.run_root, "expected a folder (this is a file)")
    configs = {}
    for seed in seeds:
        init = base.init.replace("{seed}", str(seed)) if base.init else None  # reuse earlier warm starts per seed
        configs[seed] = validate(replace(base, seed=seed, run_dir=str(Path(args.run_root) / f"{base.algo}-seed{seed}"),
                                         init=init))
    return configs


def parse_args(argv: list[str]) -> MainCommand:
    """The job's flags over its config (--config's file, else main.yaml); a bad one exits with status 2."""
    with reported_errors("opid-main", debugging(None) or "--debug" in argv):
        config = option_value(argv, "config")
        base = load_yaml(config) if config else main_config()
    return parse(MainCommand, argv, "opid-main", __doc__, default=MainCommand(run=base))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    with reported_errors("opid-main", debugging(args)):
        run(args)


def run(args: MainCommand) -> None:
    base = args.run
    configs = seed_configs(args, base)
    if drift := version_drift():
        print(f"note: this install differs from the one the README's figures were measured with: {', '.join(drift)}; "
              f"the same seed may give another run (`make install` installs {MEASURED_VERSIONS.name}'s versions)",
              flush=True)
    all_results: dict[int, dict] = {}
    for seed, cfg in configs.items():
        run_dir = Path(cfg.run_dir)
        print(f"== seed {seed}: warm start + {cfg.updates} {cfg.algo} updates -> {run_dir}", flush=True)
        train(replace(cfg, eval=replace(cfg.eval, splits=[])), resume=True)  # evaluated below, both policies
        all_results[seed] = compare(cfg, run_dir, args.also_greedy)
        for protocol, res in all_results[seed].items():
            print(f"{protocol}:\n{table({seed: res})}", flush=True)
    verdicts = {}
    known = [m for m in (seed_minutes(Path(cfg.run_dir)) for cfg in configs.values()) if m]
    minutes = sum(known) / len(known) if known else None
    for protocol in protocols(base, args.also_greedy):
        by_seed = {seed: res[protocol] for seed, res in all_results.items()}
        print(f"\nSuccess on the same evaluation episodes ({protocol}), warm start (BC) vs after RL:")
        print(table(by_seed))
        text, verdicts[protocol] = verdict(by_seed, minutes=minutes)
        print(text)
    Path(args.run_root).mkdir(parents=True, exist_ok=True)
    (Path(args.run_root) / "results.json").write_text(json.dumps({str(k): v for k, v in all_results.items()}, indent=2))
    (Path(args.run_root) / "verdict.json").write_text(json.dumps(verdicts, indent=2))


if __name__ == "__main__":
    main()
