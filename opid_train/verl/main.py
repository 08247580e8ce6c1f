"""`opid-train --backend verl --preset FILE [hydra overrides]`: GRPO / OPID on verl (Ray + FSDP + vLLM).

    opid-train --backend verl --preset alfworld actor_rollout_ref.model.path=/models/Qwen2.5-3B-Instruct
    opid-train --backend verl --preset my.yaml trainer.n_gpus_per_node=1 opid.algo=grpo
    opid-train --backend verl --preset alfworld --check      # compose, validate, write task files; no GPU

The preset is composed with verl's own config files and checked (`config.py`) before anything
else; the task files go to <opid.run_dir>/tasks, the composed config to <opid.run_dir>/verl_config.yaml.
Multi-node: `ray start --head` on one node, `ray start --address=HEAD:6379` on the others, then
run this command on the head with trainer.nnodes=N.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

PROG = "opid-train --backend verl"


def missing_for_a_run(rollout_engine: str) -> list[str]:
    """What this machine lacks for a verl run (empty when it can start)."""
    missing = []
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    except ImportError:
        missing.append("torch")
    if importlib.util.find_spec(rollout_engine) is None:
        missing.append(f"{rollout_engine} (verl's GPU extra, in its own environment: pip install 'verl[{rollout_engine}]')")
    return missing


def resumes_from_checkpoint(cfg) -> bool:
    """Whether verl's trainer will continue from a checkpoint (its `_load_checkpoint`: resume_mode auto
    reads the tracker file verl writes next to its newest checkpoint, resume_path names a checkpoint)."""
    mode = cfg.trainer.resume_mode
    if mode == "resume_path":
        return bool(cfg.trainer.resume_from_path)
    return mode == "auto" and (Path(cfg.trainer.default_local_dir) / "latest_checkpointed_iteration.txt").exists()


def one_line(exc: Exception) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def write_tasks(cfg, train, rollout) -> dict[str, int]:
    from opid_train.verl.dataset import write_task_file

    counts = {"train": write_task_file(cfg.data.train_files, train.env, train.env_kwargs, train.train_split,
                                       rollout.num_train_tasks, train.seed)}
    if rollout.eval_split:
        counts["val"] = write_task_file(cfg.data.val_files, train.env, train.env_kwargs, rollout.eval_split,
                                        rollout.num_eval_tasks, train.seed)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="a preset YAML file, or a bundled one: alfworld, webshop, searchqa")
    parser.add_argument("--check", action="store_true", help="compose, validate and write the task files, then stop")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of verl's and the preset's keys, key=value")
    args = parser.parse_args(argv)
    try:
        from omegaconf import OmegaConf

        from opid_train.cli.train import record_run
        from opid_train.verl.config import compose_preset
        from opid_train.verl.run_folder import run_config
    except ImportError as exc:
        raise SystemExit(f"{PROG}: the verl backend is not installed ({exc.name} is missing): pip install 'opid[verl]'")
    try:
        cfg, train, rollout = compose_preset(args.preset, args.overrides)
    except Exception as exc:  # Hydra's, OmegaConf's and our own config errors: one line, no traceback
        raise SystemExit(f"{PROG}: {type(exc).__name__}: {one_line(exc)}") from None
    missing = [] if args.check else missing_for_a_run(cfg.actor_rollout_ref.rollout.name)
    if missing:
        raise SystemExit(f"{PROG}: this machine cannot run verl: missing {'; '.join(missing)}. "
                         f"The config is valid ('--check' composes it and writes the task files without a GPU).")
    try:
        counts = write_tasks(cfg, train, rollout)
    except Exception as exc:
        raise SystemExit(f"{PROG}: the env {train.env} could not list its tasks: {type(exc).__name__}: {one_line(exc)}") from None
    run_dir = train.resolved_run_dir()
    cfg.trainer.v1.trainer_mode = "opid_sync"
    record_run(run_dir, run_config(cfg, train), continuing=resumes_from_checkpoint(cfg),
               backend="verl", tasks=counts)  # config.yaml, run_info.json
    OmegaConf.save(cfg, run_dir / "verl_config.yaml")
    print(f"{PROG}: {train.algo} on {train.env}: {counts} tasks, config in {run_dir / 'verl_config.yaml'}")
    if args.check:
        return
    from verl.trainer.main_ppo import run_ppo

    from opid_train.verl.trainer import task_runner

    run_ppo(cfg, task_runner_class=task_runner())
