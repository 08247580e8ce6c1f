"""Stepping N text envs together: a plain loop vs Gymnasium's SyncVectorEnv vs AsyncVectorEnv.

    python scripts/bench_vector.py --env OPID/ALFWorld-v0 --env-kwargs '{"level": "easy"}' --n 8 --steps 20

Text spaces batch as tuples of strings, so Gymnasium's vector envs work with opid envs
(AsyncVectorEnv passes observations through shared memory by default, or through pipes with
shared_memory=False; both are measured). Every variant plays the same random admissible
actions (chosen from a seeded generator per env), after one untimed warm-up pass (ALFWorld caches
generated text per process), and the script prints steps/s side by side.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import time

import gymnasium as gym

import opid_envs  # noqa: F401  (registers the ids)


def _actions(infos_list, rngs):
    return tuple(rng.choice(info["admissible_actions"] or ["look"]) for info, rng in zip(infos_list, rngs))


def run_loop(env_id, kwargs, n, steps, seed):
    envs = [gym.make(env_id, **kwargs) for _ in range(n)]
    infos = [env.reset(seed=seed + i)[1] for i, env in enumerate(envs)]
    rngs = [random.Random(seed + i) for i in range(n)]
    start = time.perf_counter()
    for _ in range(steps):
        for i, (env, action) in enumerate(zip(envs, _actions(infos, rngs))):
            _, _, term, trunc, infos[i] = env.step(action)
            if term or trunc:
                infos[i] = env.reset()[1]
    return n * steps / (time.perf_counter() - start)


def run_vector(env_id, kwargs, n, steps, seed, mode, **vector_kwargs):
    venv = gym.make_vec(env_id, num_envs=n, vectorization_mode=mode, vector_kwargs=vector_kwargs, **kwargs)
    _, info = venv.reset(seed=[seed + i for i in range(n)])
    rngs = [random.Random(seed + i) for i in range(n)]
    unbatch = lambda info: [{"admissible_actions": info["admissible_actions"][i]} for i in range(n)]  # noqa: E731
    start = time.perf_counter()
    for _ in range(steps):
        _, _, _, _, info = venv.step(_actions(unbatch(info), rngs))
    rate = n * steps / (time.perf_counter() - start)
    venv.close()
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--env", default="OPID/ALFWorld-v0", help="env id")
    parser.add_argument("--env-kwargs", default="{}", help="JSON dict passed to gym.make")
    parser.add_argument("--n", type=int, default=8, help="envs stepped together")
    parser.add_argument("--steps", type=int, default=20, help="steps per env")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resets and the random actions")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        help="module that registers a user env (e.g. tests.conftest)")
    args = parser.parse_args()
    for module in args.imports:
        importlib.import_module(module)
    kwargs = json.loads(args.env_kwargs)
    run_loop(args.env, kwargs, args.n, args.steps, args.seed)  # warm-up: engines cache text per process
    rates = {
        "loop": run_loop(args.env, kwargs, args.n, args.steps, args.seed),
        "sync_vector": run_vector(args.env, kwargs, args.n, args.steps, args.seed, "sync"),
        "async_vector": run_vector(args.env, kwargs, args.n, args.steps, args.seed, "async"),
        "async_no_shm": run_vector(args.env, kwargs, args.n, args.steps, args.seed, "async", shared_memory=False),
    }
    print(f"{args.env} {kwargs}: {args.n} envs x {args.steps} steps")
    for name, rate in rates.items():
        print(f"{name:<14} {rate:10.1f} steps/s   x{rate / rates['loop']:.2f} vs loop")


if __name__ == "__main__":
    main()
