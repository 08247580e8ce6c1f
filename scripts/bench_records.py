"""What recording every trajectory costs on the main job, and how fast opid-view opens 32 updates of it.

One update of the main job's preset (`opid_train.cli.main.main_config`: ALFWorld easy-large,
max_steps 20, 16 tasks x 4 rollouts, tiny policy, 16 new tokens) is collected and learned with each
algorithm asked (grpo is the main job; opid adds the analysis and a teacher term per response
token); then `RunRecorder.training_update` writes it, as opid-train does, and is timed. Printed:
bytes per trajectory and per step, and recording as a share of the update (rollout + learning).

Then a records file of `--open-updates` such updates (the recorded one written again with each
update index; 32 = the main job) is opened the way opid-view does it (read every record, build the
index, serialise the first page's data: runs.js and the index) and timed.

    python scripts/bench_records.py                               # untrained tiny policy
    python scripts/bench_records.py --policy runs/main/grpo-seed0/initial --algos grpo,opid

An untrained policy plays every episode to max_steps with invalid answers: the largest records per
trajectory and the longest updates. A warm start plays shorter episodes; both shares are printed
per run of this script, so run it on the policy that matters.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import opid_envs  # noqa: F401  (registers the env ids)
from opid_train.cli import ArgumentParser
from opid_train.algorithms import PrepareContext, make_algorithm
from opid_train.cli.main import main_config
from opid_train.cli.train import task_draw
from opid_train.learner import Learner, make_batch
from opid_train.policy.presets import hf_policy, load_policy
from opid_train.records import RECORDS_FILE, RecordWriter, RunRecorder, read_records
from opid_train.rollout import collect, derive_seed, make_pool
from opid_train.view.app import data_script
from opid_train.view.data import load_run
from opid_train.warmstart import explore_corpus


def main(argv=None) -> dict:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--policy", default="tiny", help="tiny (random init) or a policy folder (e.g. a run's initial/)")
    parser.add_argument("--algos", default="grpo,opid", help="comma-separated algorithms whose update is recorded")
    parser.add_argument("--open-updates", type=int, default=32, help="updates in the records file opened as opid-view does")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = replace(main_config(), progress=False)
    pool = make_pool(base.env, base.tasks_per_update * base.group_size, base.env_kwargs)
    tmp = Path(tempfile.mkdtemp(prefix="bench_records_"))
    result = {}
    try:
        if args.policy == "tiny":
            policy = load_policy("tiny", texts=explore_corpus(pool, "train", seed=0), seed=0, tiny=base.tiny)
        else:
            policy = hf_policy(args.policy)
        tasks = task_draw(base, 0, list(range(pool.num_tasks(base.train_split))))
        t0 = time.perf_counter()
        trajs = collect(policy, pool, tasks, base.group_size, seed=derive_seed(0, 0, 22),
                        max_new_tokens=base.max_new_tokens, progress=False)
        rollout_s = time.perf_counter() - t0
        steps = sum(len(t.steps) for t in trajs)
        print(f"main job update: {len(trajs)} trajectories, {steps} steps, rollout {rollout_s:.1f} s "
              f"(policy {args.policy}, {args.threads} thread(s))")
        for algo in args.algos.split(","):
            cfg = replace(base, algo=algo)
            run_dir = tmp / algo
            learner = Learner(policy, make_algorithm(algo, cfg), cfg)
            batch = make_batch(trajs)
            ctx = PrepareContext(policy=policy, template=pool.config.template, run_dir=run_dir, update=0)
            t0 = time.perf_counter()
            learner.update(batch, ctx)
            learn_s = time.perf_counter() - t0
            recorder = RunRecorder(run_dir / RECORDS_FILE, method=algo, tokenizer=policy.tokenizer)
            times, cpu, size = [], [], 0
            for update in range(3):  # the first write also pays for the tokenizer's decode cache
                t0, c0 = time.perf_counter(), time.process_time()
                size = recorder.training_update(update, batch, ctx.details)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            record_s = statistics.median(times)
            update_s = rollout_s + learn_s
            print(f"{algo:<5} update {update_s:6.1f} s (learning {learn_s:.1f} s); recording {record_s * 1e3:6.0f} ms "
                  f"(CPU {statistics.median(cpu) * 1e3:.0f} ms; first write {times[0] * 1e3:.0f} ms) "
                  f"= {100 * record_s / update_s:.2f} % of the update; "
                  f"{size / len(trajs) / 1024:.1f} KiB per trajectory, {size / steps:.0f} B per step, "
                  f"{size / 2**20:.2f} MiB per update")
            result[algo] = {"update_s": update_s, "record_s": record_s, "first_record_s": times[0],
                            "bytes_per_trajectory": size / len(trajs), "bytes_per_update": size}

            # opid-view on a main-job-sized run: this update written `open_updates` times
            one = [r for r in read_records(run_dir) if r["update"] == 0]
            big = tmp / f"{algo}-open"
            writer = RecordWriter(big / RECORDS_FILE)
            for update in range(args.open_updates):
                writer.write({**r, "update": update} for r in one)
            t0, c0 = time.perf_counter(), time.process_time()
            run = load_run(big)
            first_page = len(data_script("runs", [run.meta])) + len(data_script("run0-index", run.index()))
            first_page += len(data_script("run0-chunk0", run.chunk(0)))  # the first trajectory opened
            open_s, open_cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"{algo:<5} opid-view opens {args.open_updates} updates ({len(run)} trajectories, "
                  f"{(big / RECORDS_FILE).stat().st_size / 2**20:.1f} MiB) in {open_s:.2f} s ({open_cpu:.2f} s CPU; "
                  f"first page data {first_page / 2**20:.2f} MiB)")
            result[algo].update(open_s=open_s, open_cpu_s=open_cpu, open_trajectories=len(run))
    finally:
        pool.close()
    print(f"load average while measuring: {os.getloadavg()} on {os.cpu_count()} CPUs (wall times stretch with it)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
