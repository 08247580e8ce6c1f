"""opid-eval: success (and score) of a checkpoint per split and per task type, as a table and JSON.

    opid-eval --checkpoint runs/alf/final --env OPID/ALFWorld-v0 --env_kwargs '{"level": "easy"}' \
        --split valid_seen,valid_unseen --episodes 60 --mode both --samples 4

`--checkpoint` takes a model folder (a run's initial/ or final/, a checkpoint's model/), a
checkpoint folder, a run folder (its final policy, else its latest checkpoint), `smollm2-135m`,
or any local HF model folder. WebShop reports score and success, search QA exact match (the
score) per data source.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import opid_envs  # noqa: F401  (registers the OPID env ids)
from opid_train.cli import ArgumentParser, debugging, reported_errors
from opid_train.config import EVAL_MODES, EvalJobConfig, bad, validate_eval
from opid_train.evaluate import evaluate, format_table, summarize
from opid_train.policy.presets import hf_policy, load_policy
from opid_train.config import TrainConfig
from opid_train.presets import PARITY_MODES, agent_config_for, resolve_parity
from opid_train.records import RunRecorder
from opid_train.rollout import make_pool


def job_from_args(args) -> EvalJobConfig:
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        raise bad("env_kwargs", args.env_kwargs, f"expected a JSON object ({exc})") from None
    if not isinstance(env_kwargs, dict):
        raise bad("env_kwargs", args.env_kwargs, "expected a JSON object")
    return EvalJobConfig(
        checkpoint=args.checkpoint, env=args.env, env_kwargs=env_kwargs,
        split=[s.strip() for s in args.split.split(",") if s.strip()], episodes=args.episodes, mode=args.mode,
        samples=args.samples, temperature=args.temperature, max_new_tokens=args.max_new_tokens, envs=args.envs,
        env_workers=args.env_workers, seed=args.seed, device=args.device, threads=args.threads, out=args.out,
        parity=args.parity, records=args.records, record=not args.no_record, record_max=args.record_max)


def run(job: EvalJobConfig, progress: bool = True) -> dict:
    folder = validate_eval(job)
    if job.threads:
        torch.set_num_threads(job.threads)
    policy = (load_policy(folder, device=job.device, temperature=job.temperature) if isinstance(folder, str)
              else hf_policy(folder, device=job.device, temperature=job.temperature))
    out = Path(job.out) if job.out else (Path(folder) / f"eval_{job.env.split(':')[-1].replace('/', '_')}.json"
                                         if isinstance(folder, Path) else None)
    records = (job.records or (out and out.with_suffix(".records.jsonl.gz"))) if job.record else None
    recorder = None
    if records:  # a new evaluation replaces the records of an earlier one in the same place
        Path(records).unlink(missing_ok=True)
        recorder = RunRecorder(records, method="eval", max_trajectories=job.record_max)
    modes = ["greedy", "sampled"] if job.mode == "both" else [job.mode]
    setting = resolve_parity(TrainConfig(env=job.env, env_kwargs=job.env_kwargs, policy=str(folder), parity=job.parity))
    env_kwargs = setting.env_kwargs  # the parity mode's env settings, under what the user set
    pool = make_pool(job.env, max(job.envs, job.samples), env_kwargs, job.env_workers, agent_config_for(setting))
    report = {"checkpoint": str(folder), "env": job.env, "env_kwargs": env_kwargs, "parity": setting.parity,
              "seed": job.seed, "results": {}}
    try:
        for mode in modes:
            results = {}
            for split in job.split:
                trajs = evaluate(policy, pool, split, episodes=job.episodes, greedy=mode == "greedy",
                                 samples=job.samples, seed=job.seed, max_new_tokens=job.max_new_tokens,
                                 progress=progress)
                if recorder:
                    recorder.evaluation(trajs, f"{Path(str(folder)).name} {mode}")
                results[split] = summarize(trajs)
            report["results"][mode] = results
            print(format_table(results, f"{job.env} - {mode} - {folder}"))
    finally:
        pool.close()
    if out:
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    if recorder:
        print(f"episodes recorded in {recorder.path} (opid-view {recorder.path})")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="opid-eval", description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--env", required=True, help="a registered id, or 'package.module:NS/Name-v0'")
    parser.add_argument("--env_kwargs", default="{}", help="JSON object passed to gym.make")
    parser.add_argument("--split", default="valid_seen,valid_unseen", help="comma-separated splits")
    parser.add_argument("--episodes", type=int, default=0, help="tasks per split (0: all)")
    parser.add_argument("--mode", choices=EVAL_MODES, default="greedy")
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
    parser.add_argument("--parity", choices=PARITY_MODES, default="auto",
                        help="prompts and env settings: the OPID reference's or ours (auto: ours for a tiny-policy "
                             "checkpoint, the reference's for any other model)")
    parser.add_argument("--records", help="where every episode played is recorded (default: beside the JSON "
                        "output, as <out>.records.jsonl.gz; `opid-view` reads it)")
    parser.add_argument("--no_record", action="store_true", help="do not record the episodes")
    parser.add_argument("--record_max", type=int, default=0, help="record at most this many episodes per split (0: all)")
    args = parser.parse_args(argv)
    with reported_errors(parser.prog, debugging(args)):
        run(job_from_args(args), progress=not args.no_progress)


if __name__ == "__main__":
    main()
