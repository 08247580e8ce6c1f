"""Steps per second and resident memory of OPID/WebShop-v0 with 1, 8 and 64 envs in one process.

    python scripts/bench_webshop.py [--num-products 1000] [--steps 3000] [--nouns auto]

All envs share one catalog, index and goal list, so memory should grow little with the env count
(goal: 64 envs < 2x the memory of 1) and clicks should run at >= 500 steps/s. Three kinds of
steps are timed apart: clicks (page navigation and option choices), searches (a BM25 query), and
whole expert episodes (search, open, options, buy + reward).
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import gymnasium as gym

import opid_envs  # noqa: F401

NON_NAVIGATION = {"click[buy now]", "click[back to search]"}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_clicks_and_searches(envs, steps: int, rng: random.Random) -> tuple[float, float]:
    """Round-robin over the envs: search once per episode, then click until the step limit."""
    click_s = search_s = 0.0
    clicks = searches = 0
    needs_search = {}
    for env in envs:
        env.reset(seed=rng.randrange(1 << 30))
        needs_search[id(env)] = True
    i = 0
    while clicks < steps:
        env = envs[i % len(envs)]
        i += 1
        if needs_search[id(env)]:
            action = env.random_action(rng)
            start = time.perf_counter()
            env.step(action)
            search_s += time.perf_counter() - start
            searches += 1
            needs_search[id(env)] = False
            continue
        actions = [a for a in env._info["admissible_actions"] if a not in NON_NAVIGATION] or ["click[< prev]"]
        action = rng.choice(actions)
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        click_s += time.perf_counter() - start
        clicks += 1
        if terminated or truncated:
            env.reset(seed=rng.randrange(1 << 30))
            needs_search[id(env)] = True
    return clicks / click_s, searches / search_s


def time_expert_episodes(envs, episodes: int, rng: random.Random) -> tuple[float, float]:
    steps, total, start = 0, 0.0, time.perf_counter()
    for k in range(episodes):
        env = envs[k % len(envs)]
        env.reset(seed=rng.randrange(1 << 30))
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.expert_action())
            steps += 1
            done = terminated or truncated
        total += reward
    return steps / (time.perf_counter() - start), total / episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num-products", type=int, default=1000, help="catalog size")
    parser.add_argument("--steps", type=int, default=3000, help="clicks timed per env count")
    parser.add_argument("--episodes", type=int, default=200, help="expert episodes timed per env count")
    parser.add_argument("--nouns", default="auto", choices=["auto", "spacy", "fallback"], help="noun finder of the search index")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 8, 64], help="numbers of envs built and stepped together")
    args = parser.parse_args()

    rng = random.Random(0)
    base = rss_mb()
    envs: list = []
    rows = []
    build_s = None
    for count in args.counts:
        start = time.perf_counter()
        while len(envs) < count:
            envs.append(gym.make("OPID/WebShop-v0", num_products=args.num_products, nouns=args.nouns).unwrapped)
        if build_s is None:
            build_s = time.perf_counter() - start
        clicks, searches = time_clicks_and_searches(envs, args.steps, rng)
        expert, mean_score = time_expert_episodes(envs, args.episodes, rng)
        rows.append((count, rss_mb(), clicks, searches, expert, mean_score))
        print(f"... {count} envs done", flush=True)

    print(f"\nOPID/WebShop-v0, {args.num_products} products, nouns={envs[0].noun_finder}; "
          f"first env (catalog + index + goals) built in {build_s:.2f} s; RSS before any env {base:.0f} MB")
    print(f"{'envs':>5} {'RSS MB':>8} {'RSS / 1 env':>12} {'MB / extra env':>15} {'clicks/s':>10} "
          f"{'searches/s':>11} {'expert steps/s':>15} {'expert score':>13}")
    count_one, rss_one = rows[0][:2]
    for count, rss, clicks, searches, expert, score in rows:
        per_env = f"{(rss - rss_one) / (count - count_one):.3f}" if count > count_one else "-"
        print(f"{count:>5} {rss:>8.1f} {rss / rss_one:>12.3f} {per_env:>15} {clicks:>10.0f} "
              f"{searches:>11.0f} {expert:>15.0f} {score:>13.3f}")


if __name__ == "__main__":
    main()
