"""Rollout throughput, side by side in one run.

1. Generation: the batched collector's single generate call per turn against one generate call
   per env, on the same prompts (the envs' first prompts) and the same model: tokens/s and ratio.
2. Env stepping: a whole collection (G tasks x N rollouts) with envs in this process against envs
   in worker processes: env steps/s and ratio.

    python scripts/bench_rollout.py --env OPID/ALFWorld-v0 --env-kwargs '{"level": "easy"}' --envs 16
"""

from __future__ import annotations

import json
import time

import torch

import opid_envs  # noqa: F401
from opid_train.cli import ArgumentParser
from opid_train.policy.presets import TinyConfig, load_policy
from opid_train.rollout import collect, make_pool
from opid_train.warmstart import explore_corpus


def bench_generation(policy, prompts, max_new_tokens, repeats):
    def run(batched: bool):
        tokens, start = 0, time.perf_counter()
        for r in range(repeats):
            if batched:
                gens = policy.generate(prompts, max_new_tokens=max_new_tokens, seed=r)
            else:
                gens = [g for i, p in enumerate(prompts) for g in policy.generate([p], max_new_tokens=max_new_tokens, seed=r * 1000 + i)]
            tokens += sum(len(g.response_ids) for g in gens)
        return tokens / (time.perf_counter() - start)

    run(True)  # warm up
    return run(True), run(False)


def bench_envs(policy, args, env_kwargs):
    rates = {}
    tasks = [("train", i) for i in range(args.envs // args.group_size)]
    for workers in (0, args.workers):
        pool = make_pool(args.env, args.envs, env_kwargs, workers)
        try:
            collect(policy, pool, tasks[:1], 1, seed=0, max_new_tokens=args.max_new_tokens, progress=False)  # warm up
            start = time.perf_counter()
            trajs = collect(policy, pool, tasks, args.group_size, seed=1, max_new_tokens=args.max_new_tokens, progress=False)
            steps = sum(len(t.steps) for t in trajs)
            rates[workers] = steps / (time.perf_counter() - start)
        finally:
            pool.close()
    return rates


def main() -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="OPID/ALFWorld-v0", help="env id")
    parser.add_argument("--env-kwargs", default='{"level": "easy", "max_steps": 10}', help="JSON keyword arguments of gym.make")
    parser.add_argument("--envs", type=int, default=16, help="envs stepped together (G x N)")
    parser.add_argument("--group-size", type=int, default=4, help="trajectories per task (N)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="longest response per step")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions of each measurement")
    parser.add_argument("--workers", type=int, default=2, help="env worker processes to compare against in-process")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--policy", default="tiny", help="tiny (random init) or a policy folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env_kwargs = json.loads(args.env_kwargs)

    pool = make_pool(args.env, args.envs, env_kwargs)
    n = pool.num_tasks("train")
    prompts = [s.prompt for s in pool.reset(list(range(args.envs)), list(range(args.envs)),
                                            [{"split": "train", "task_id": i % n} for i in range(args.envs)])]
    texts = explore_corpus(pool, "train", seed=0) if args.policy == "tiny" else None
    pool.close()
    policy = load_policy(args.policy, texts=texts, tiny=TinyConfig())
    batched, per_env = bench_generation(policy, prompts, args.max_new_tokens, args.repeats)
    rates = bench_envs(policy, args, env_kwargs)

    print(f"\n{args.env}, {args.envs} envs, policy {args.policy}, {torch.get_num_threads()} torch threads")
    print(f"{'generation':<40} {'tokens/s':>10}")
    print(f"{'one batched call per turn':<40} {batched:>10.1f}")
    print(f"{'one call per env':<40} {per_env:>10.1f}")
    print(f"{'ratio batched / per env':<40} {batched / per_env:>10.2f}x")
    print(f"{'collection (G x N = %d envs)' % args.envs:<40} {'env steps/s':>10}")
    print(f"{'envs in the learner process':<40} {rates[0]:>10.1f}")
    print(f"{'envs in %d worker processes' % args.workers:<40} {rates[args.workers]:>10.1f}")
    print(f"{'ratio workers / in-process':<40} {rates[args.workers] / rates[0]:>10.2f}x")


if __name__ == "__main__":
    main()
