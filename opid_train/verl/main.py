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
import os
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


# CPUs verl's Ray actors hold for their lifetime, measured on a local Ray (tests/verl/test_verl_cli.py):
# the task runner and the TransferQueue's controller one each, each SimpleStorage unit one; read in verl:
# each GPU's bundle of the worker groups' placement group, ResourcePoolManager.max_colocate_count (3).
HELD_BY_RUNNER_AND_CONTROLLER, HELD_PER_GPU = 2, 3


def ray_cpus_short(cfg) -> str | None:
    """Why verl would wait forever on a local Ray (the Ray it starts itself on one node) that has fewer
    logical CPUs than its actors hold; None when there are enough, or the Ray is a cluster's."""
    ray_init = cfg.ray_kwargs.get("ray_init") or {}
    if os.environ.get("RAY_ADDRESS") or ray_init.get("address") or int(cfg.trainer.nnodes) > 1:
        return None  # a running cluster's resources are its nodes'
    queue = cfg.transfer_queue.backend
    units = int(queue.SimpleStorage.num_data_storage_units) if queue.storage_backend == "SimpleStorage" else 0
    gpus = int(cfg.trainer.n_gpus_per_node)
    needed = HELD_BY_RUNNER_AND_CONTROLLER + units + HELD_PER_GPU * gpus
    available = ray_init.get("num_cpus") or os.cpu_count() or 1
    if needed <= available:
        return None
    return (f"verl's Ray actors hold {needed} CPUs (task runner and TransferQueue controller 2, {units} storage units, "
            f"{HELD_PER_GPU} for each of {gpus} GPUs) and this Ray has {available}: verl would wait for them forever. "
            f"Pass ray_kwargs.ray_init.num_cpus={needed} (Ray's CPUs are logical: more than the cores is fine) "
            f"or fewer transfer_queue.backend.SimpleStorage.num_data_storage_units")


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
    short = None if args.check else ray_cpus_short(cfg)
    if short:
        raise SystemExit(f"{PROG}: {short}")
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
