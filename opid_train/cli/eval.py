"""opid-eval: success (and score) of a checkpoint per split and per task type, as a table and JSON.

    opid-eval --checkpoint runs/alf/final --env OPID/ALFWorld-v0 --env_kwargs '{"level": "easy"}' \
        --split valid_seen,valid_unseen --episodes 60 --mode both --samples 4

`--checkpoint` takes a model folder (a run's initial/ or final/, a checkpoint's model/), a
checkpoint folder, a run folder (its final policy, else its latest checkpoint), `smollm2-135m`,
or any local HF model folder. WebShop reports score and success, search QA exact match (the
score) per data source.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import opid_envs  # noqa: F401  (registers the OPID env ids)
from opid_train.evaluate import evaluate, format_table, summarize
from opid_train.learner import latest_checkpoint
from opid_train.policy.presets import hf_policy, load_policy
from opid_train.records import RunRecorder
from opid_train.rollout import make_pool


def model_folder(path: str) -> str | Path:
    p = Path(path)
    if not p.exists():
        return path  # a preset name; load_policy explains what it accepts
    if (p / "config.json").exists() or (p / "adapter_config.json").exists():
        return p
    if (p / "model").is_dir():
        return p / "model"
    if (p / "final").is_dir():
        return p / "final"
    latest = latest_checkpoint(p)
    if latest is not None:
        return latest / "model"
    raise FileNotFoundError(f"{path}: not a model folder, checkpoint or run folder")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="opid-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--env", required=True, help="a registered id, or 'package.module:NS/Name-v0'")
    parser.add_argument("--env_kwargs", default="{}", help="JSON object passed to gym.make")
    parser.add_argument("--split", default="valid_seen,valid_unseen", help="comma-separated splits")
    parser.add_argument("--episodes", type=int, default=0, help="tasks per split (0: all)")
    parser.add_argument("--mode", choices=["greedy", "sampled", "both"], default="greedy")
    parser.add_argument("--samples", type=int, default=4, help="trajectories per task when sampling")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--envs", type=int, default=16, help="envs stepped together")
    parser.add_argument("--env_workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", help="JSON output (default: <checkpoint>/eval_<env>.json when it is a folder)")
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument("--records", help="where every episode played is recorded (default: beside the JSON "
                        "output, as <out>.records.jsonl.gz; `opid-view` reads it)")
    parser.add_argument("--no_record", action="store_true", help="do not record the episodes")
    parser.add_argument("--record_max", type=int, default=0, help="record at most this many episodes per split (0: all)")
    args = parser.parse_args(argv)
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--env_kwargs is not JSON: {exc}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = model_folder(args.checkpoint)
    policy = (load_policy(str(folder), device=args.device, temperature=args.temperature) if isinstance(folder, str)
              else hf_policy(folder, device=args.device, temperature=args.temperature))
    out = Path(args.out) if args.out else (Path(folder) / f"eval_{args.env.split(':')[-1].replace('/', '_')}.json"
                                           if isinstance(folder, Path) else None)
    records = None if args.no_record else args.records or (out and out.with_suffix(".records.jsonl.gz"))
    recorder = None
    if records:  # a new evaluation replaces the records of an earlier one in the same place
        Path(records).unlink(missing_ok=True)
        recorder = RunRecorder(records, method="eval", max_trajectories=args.record_max)
    modes = ["greedy", "sampled"] if args.mode == "both" else [args.mode]
    pool = make_pool(args.env, max(args.envs, args.samples), env_kwargs, args.env_workers)
    report = {"checkpoint": str(folder), "env": args.env, "env_kwargs": env_kwargs, "seed": args.seed, "results": {}}
    try:
        for mode in modes:
            results = {}
            for split in [s.strip() for s in args.split.split(",") if s.strip()]:
                trajs = evaluate(policy, pool, split, episodes=args.episodes, greedy=mode == "greedy",
                                 samples=args.samples, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                 progress=not args.no_progress)
                if recorder:
                    recorder.evaluation(trajs, f"{Path(str(folder)).name} {mode}")
                results[split] = summarize(trajs)
            report["results"][mode] = results
            print(format_table(results, f"{args.env} - {mode} - {folder}"))
    finally:
        pool.close()
    if out:
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    if recorder:
        print(f"episodes recorded in {recorder.path} (opid-view {recorder.path})")


if __name__ == "__main__":
    main()
