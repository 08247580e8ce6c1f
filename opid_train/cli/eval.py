"""opid-eval: success (and score) of a checkpoint per split and per task type, as a table and JSON.

    opid-eval --checkpoint runs/alf/final --env OPID/ALFWorld-v0 --env-kwargs '{"level": "easy"}' \\
        --split valid_seen,valid_unseen --episodes 60 --mode both --samples 4

`--checkpoint` takes a model folder (a run's initial/ or final/, a checkpoint's model/), a
checkpoint folder, a run folder (its final policy, else its latest checkpoint), `smollm2-135m`,
or any local HF model folder. WebShop reports score and success, search QA exact match (the
score) per data source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import tyro

import opid_envs  # noqa: F401  (registers the OPID env ids)
from opid_train.cli import debugging, parse, reported_errors
from opid_train.config import EvalJobConfig, TrainConfig, validate_eval
from opid_train.evaluate import evaluate, format_table, summarize
from opid_train.policy.presets import hf_policy, load_policy
from opid_train.presets import agent_config_for, resolve_parity
from opid_train.records import RunRecorder
from opid_train.rollout import make_pool


@dataclass
class EvalCommand:
    job: Annotated[EvalJobConfig, tyro.conf.arg(name="")]
    debug: bool = False  # show tracebacks of errors (also OPID_DEBUG=1)


def run(job: EvalJobConfig) -> dict:
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
                                 progress=job.progress)
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
    args = parse(EvalCommand, argv, "opid-eval", __doc__)
    with reported_errors("opid-eval", debugging(args)):
        run(args.job)


if __name__ == "__main__":
    main()
