"""Steps/s of the raw AlfredTWEnv and of OPID/ALFWorld-v0 on the same games and actions.

Runs a seeded random walk (admissible actions, a few invalid ones) through each game with
alfworld's own `AlfredTWEnv` (textworld gym env, batch size 1, as its users run it), then
replays the same actions through our env and checks that every observation and admissible
command list is identical. Then N envs stepped together: AlfredTWEnv with batch size N (its
worker processes) against N of our envs stepped one after another in this process.

    python scripts/bench_alfworld.py --level full --games 6 --steps 30 --n 8

Our env runs after the raw one, so its parse caches are warm, as they are after the first few
steps of any run, but its per-game caches are cleared: a reset loads and translates its game
from scratch. The ratio for a reset is raw time / our time (higher is better for us).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from contextlib import contextmanager

INVALID = "jump around"  # a command no ALFWorld game knows


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--level", default="full", help="generated level to benchmark on")
    p.add_argument("--games", type=int, default=6, help="games (valid_unseen) for the batch-1 comparison")
    p.add_argument("--steps", type=int, default=30, help="steps per game")
    p.add_argument("--n", type=int, default=8, help="envs stepped together")
    p.add_argument("--seed", type=int, default=0, help="seed of the games' order and the random actions")
    return p.parse_args()  # before any engine exists: fast-downward rewrites sys.argv


def walk(rng: random.Random, admissible: list[str]) -> str:
    return INVALID if rng.random() < 0.1 else rng.choice(admissible)


@contextmanager
def quiet_workers():
    """AlfredTWEnv's worker processes print an EOFError traceback when a reset replaces them;
    those started inside this block write their stderr to /dev/null."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def raw_env(game_files: list[str], batch_size: int):
    """alfworld's AlfredTWEnv set up for evaluation, playing exactly `game_files`."""
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    data = game_files[0].split("/json_2.1.1/")[0] + "/json_2.1.1"
    config = {
        "env": {"goal_desc_human_anns_prob": 0, "task_types": [1, 2, 3, 4, 5, 6], "domain_randomization": False,
                "expert_type": "handcoded"},
        "dataset": {"data_path": f"{data}/train", "eval_id_data_path": f"{data}/valid_seen",
                    "eval_ood_data_path": f"{data}/valid_unseen", "num_train_games": -1, "num_eval_games": -1},
        "general": {"training_method": "dagger"},
        "dagger": {"training": {"max_nb_steps_per_episode": 1000}},
    }
    env = AlfredTWEnv(config, train_eval="eval_out_of_distribution")
    env.game_files = list(game_files)
    with quiet_workers():
        return env.init_env(batch_size=batch_size)


def run_raw(game_files, steps, seed):
    """Per game: (actions, observations, admissibles); steps/s; mean seconds per reset."""
    runs, elapsed, count, reset_time = [], 0.0, 0, 0.0
    for i, gamefile in enumerate(game_files):
        env = raw_env([gamefile], 1)
        t = time.perf_counter()
        with quiet_workers():
            obs, infos = env.reset()
        reset_time += time.perf_counter() - t
        rng = random.Random(f"{seed}-{i}")
        actions, observations, admissibles = [], [obs[0]], [infos["admissible_commands"][0]]
        for _ in range(steps):
            action = walk(rng, [c for c in admissibles[-1] if c != "help"])
            t = time.perf_counter()
            obs, _, dones, infos = env.step([action])
            elapsed += time.perf_counter() - t
            count += 1
            actions.append(action)
            observations.append(obs[0])
            admissibles.append(infos["admissible_commands"][0])
            if dones[0]:
                break
        env.close()
        runs.append((gamefile, actions, observations, admissibles))
    return runs, count / elapsed, reset_time / len(game_files)


def run_plain(runs):
    """The same engine in this process, unpatched: what memoization gains apart from IPC."""
    from opid_envs.alfworld.env import ALFWorldEngine

    engine = ALFWorldEngine(memoize=False)
    elapsed, count = 0.0, 0
    for gamefile, actions, _, _ in runs:
        engine.load(gamefile)
        engine.reset()
        for action in actions:
            t = time.perf_counter()
            engine.step(action)
            elapsed += time.perf_counter() - t
            count += 1
    return count / elapsed


def run_ours(runs):
    from opid_envs.alfworld import fastpath
    from opid_envs.alfworld.env import ALFWorldEnv

    fastpath.forget_games()  # the batch run loaded these games: time their resets from scratch

    root = runs[0][0].split("/json_2.1.1/")[0]
    env = ALFWorldEnv(data_dir=root, split="valid_unseen")
    index = {g.gamefile: i for i, g in enumerate(env.games("valid_unseen"))}
    elapsed, count, mismatches, reset_time = 0.0, 0, 0, 0.0
    for gamefile, actions, observations, admissibles in runs:
        t = time.perf_counter()
        obs, info = env.reset(options={"task_id": index[gamefile]})
        reset_time += time.perf_counter() - t
        mismatches += obs != observations[0]
        for k, action in enumerate(actions, start=1):
            t = time.perf_counter()
            obs, _, term, trunc, info = env.step(action)
            elapsed += time.perf_counter() - t
            count += 1
            raw_admissible = [c for c in admissibles[k] if c != "help"]
            mismatches += obs != observations[k] or info["admissible_actions"] != raw_admissible
    return count / elapsed, mismatches, reset_time / len(runs)


def run_batch(game_files, steps, seed):
    """N games stepped together: raw batch env vs N of our envs, the same actions; steps/s each."""
    from opid_envs.alfworld.env import ALFWorldEnv

    n = len(game_files)
    env = raw_env(game_files, n)
    with quiet_workers():
        obs, infos = env.reset()
    slots = list(infos["extra.gamefile"])
    rng = random.Random(f"{seed}-batch")
    actions, trace, active = [], [list(obs)], [True] * n
    raw_time, raw_count = 0.0, 0
    admissible = infos["admissible_commands"]
    for _ in range(steps):
        batch = [walk(rng, [c for c in admissible[j] if c != "help"]) if active[j] else "look" for j in range(n)]
        t = time.perf_counter()
        obs, _, dones, infos = env.step(batch)
        raw_time += time.perf_counter() - t
        raw_count += sum(active)
        actions.append((batch, list(active)))
        trace.append(list(obs))
        admissible = infos["admissible_commands"]
        active = [a and not d for a, d in zip(active, dones)]
    env.close()

    root = game_files[0].split("/json_2.1.1/")[0]
    ours = [ALFWorldEnv(data_dir=root, split="valid_unseen", max_steps=10 * steps) for _ in range(n)]
    index = {g.gamefile: i for i, g in enumerate(ours[0].games("valid_unseen"))}
    mismatches = 0
    for j, e in enumerate(ours):
        o, _ = e.reset(options={"task_id": index[slots[j]]})
        mismatches += o != trace[0][j]
    our_time, our_count = 0.0, 0
    for k, (batch, was_active) in enumerate(actions, start=1):
        t = time.perf_counter()
        outs = [e.step(a)[0] if live else None for e, a, live in zip(ours, batch, was_active)]
        our_time += time.perf_counter() - t
        our_count += sum(was_active)
        mismatches += sum(o is not None and o != trace[k][j] for j, o in enumerate(outs))
    return raw_count / raw_time, our_count / our_time, mismatches


def main():
    args = parse_args()
    from opid_envs.alfworld.generate import generate_suite

    with tempfile.TemporaryDirectory() as tmp:
        n_games = max(args.games, args.n)
        root = generate_suite(args.level, f"{tmp}/suite", seed=args.seed,
                              sizes={"train": 0, "valid_seen": 0, "valid_unseen": n_games}, progress=False)
        import glob

        games = sorted(glob.glob(f"{root}/json_2.1.1/valid_unseen/*/*/game.tw-pddl"))
        runs, raw_rate, raw_reset = run_raw(games[: args.games], args.steps, args.seed)  # before our patches exist
        plain_rate = run_plain(runs)
        raw_n, ours_n, batch_mismatch = run_batch(games[: args.n], args.steps, args.seed)
        our_rate, mismatches, our_reset = run_ours(runs)

    steps = sum(len(r[1]) for r in runs)
    print(f"\nALFWorld '{args.level}' level, {args.games} games, {steps} steps (random walk, 10% invalid)")
    print(f"{'':28s}{'AlfredTWEnv':>14s}{'OPID/ALFWorld-v0':>18s}{'ratio':>8s}")
    print(f"{'batch 1, steps/s':28s}{raw_rate:14.1f}{our_rate:18.1f}{our_rate / raw_rate:8.2f}")
    print(f"{'reset of a new game, s':28s}{raw_reset:14.2f}{our_reset:18.2f}{raw_reset / our_reset:8.2f}")
    print(f"{f'{args.n} envs together, steps/s':28s}{raw_n:14.1f}{ours_n:18.1f}{ours_n / raw_n:8.2f}")
    print(f"(plain engine in this process, unmemoized: {plain_rate:.1f} steps/s; ours is "
          f"{our_rate / plain_rate:.2f}x that: the memoization's share of the gain)")
    print(f"identical observations and admissible commands: "
          f"{'yes' if mismatches == 0 and batch_mismatch == 0 else f'NO ({mismatches + batch_mismatch} differ)'}")


if __name__ == "__main__":
    main()
