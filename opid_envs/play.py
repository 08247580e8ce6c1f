"""Play every registered opid environment with a random admissible-action agent.

    python -m opid_envs.play --episodes 3 [--env OPID/ALFWorld-v0 ...]

Prints, per env, the episodes played, the success rate and the mean number of steps. An env
whose optional dependency is missing is reported and skipped.
"""

from __future__ import annotations

import argparse
import importlib
import random
import time

import gymnasium as gym

import opid_envs
from opid_envs.core import MissingDependencyError


def play(env_id: str, episodes: int, seed: int, **env_kwargs) -> dict:
    env = gym.make(env_id, **env_kwargs)
    rng = random.Random(seed)
    wins, steps, start = 0, 0, time.perf_counter()
    for episode in range(episodes):
        _, info = env.reset(seed=seed + episode)
        done = False
        while not done:
            action = env.unwrapped.random_action(rng)
            _, _, terminated, truncated, info = env.step(action)
            steps += 1
            done = terminated or truncated
        wins += int(info["won"])
    env.close()
    return {"env": env_id, "episodes": episodes, "success": wins / episodes,
            "mean_steps": steps / episodes, "seconds": time.perf_counter() - start}


class OneLineErrors(argparse.ArgumentParser):
    """An error is one line (option, value, what is allowed), exit status 2, without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrors(prog="opid-play", description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", help="env id (repeatable); default: every OPID env")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args(argv)
    # every option checked before any env is built
    for env_id in args.env or ():
        module, _, name = env_id.rpartition(":")  # 'package.module:NS/Name-v0' registers on import
        try:
            if module:
                importlib.import_module(module)
        except ImportError as exc:
            parser.error(f"--env {env_id!r}: cannot import {module!r} ({exc})")
        if name not in gym.registry:
            parser.error(f"--env {env_id!r}: not a registered env; expected one of {', '.join(opid_envs.OPID_ENV_IDS)}")
    for option, value, lowest in (("--episodes", args.episodes, 1), ("--seed", args.seed, 0),
                                  ("--max-steps", args.max_steps, 1)):
        if value is not None and value < lowest:
            parser.error(f"{option} {value}: expected an integer >= {lowest}")
    kwargs = {"max_steps": args.max_steps} if args.max_steps is not None else {}
    print(f"{'env':<22} {'episodes':>8} {'success':>8} {'mean steps':>10} {'seconds':>8}")
    for env_id in args.env or opid_envs.OPID_ENV_IDS:
        try:
            row = play(env_id, args.episodes, args.seed, **kwargs)
        except MissingDependencyError as exc:
            print(f"{env_id:<22} skipped: {exc}")
            continue
        print(f"{row['env']:<22} {row['episodes']:>8} {row['success']:>8.2f} "
              f"{row['mean_steps']:>10.1f} {row['seconds']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
