"""Does a policy read skills? logp(expert action | prompt + skill) - logp(expert action | prompt).

On held-out expert episodes, every step's expert action is scored (summed over its tokens and the
end token, as the warm start trains it) under the plain prompt and under the prompt with a skill
injected the way OPID's self-teacher injects it:
    correct        the routed hindsight skill of the expert's own episode (offline analyzer,
                   critical-first routing): should RAISE the action's log-prob;
    contra-do      a step skill endorsing another admissible action ("Do 'X' now: ...");
    contra-avoid   a step skill rejecting the expert's action ("Avoid '<action>' ...");
    contra-episode another episode's (another task's) workflow skill:
                   all three contradict the action and should LOWER its log-prob.

    python scripts/skill_probe.py --model runs/alf/initial --env OPID/ALFWorld-v0 \\
        --env-kwargs '{"level": "easy"}' --split valid_seen --episodes 40

Measured (2026-11-22, this 2-core CPU machine, tiny preset d128 x 2 layers, 120 expert episodes of
ALFWorld easy, 15 BC epochs; probe on 40 held-out valid_seen episodes, 200 steps; mean delta in nats
+- standard error):
    warm start                                 correct       contra-do     contra-avoid  contra-episode
    plain demos only                           -3.00 +-0.35  -3.95 +-0.35  -4.12 +-0.38  -1.61 +-0.24
    --warmstart.skill-share 1.0 (the default   +0.48 +-0.14  -1.81 +-0.24  -0.19 +-0.15  -1.28 +-0.23
      rejection share 0.4)                     (step skills +0.81, episode skills +0.16)
A model that never saw skills is only disturbed by them; the skill-aware one gains from the
correct skill and loses from contradicting ones, so OPID's self-teacher carries signal.
"""

from __future__ import annotations

import json
import random
import statistics

import torch

import opid_envs  # noqa: F401  (registers the env ids)
from opid_train.cli import ArgumentParser
from opid_train.analyzers.offline import OfflineAnalyzer, avoid_skill, do_skill
from opid_train.analyzers.skill_demos import REJECTION_KINDS, expert_trajectories
from opid_train.policy.presets import hf_policy
from opid_train.rollout import make_pool
from opid_train.warmstart import collect_demos
from wrappers.skills import route_skills


def probe_prompts(trajectories, template, seed: int) -> list[tuple[str, int, str, str]]:
    """(variant, step id, prompt, response) for every held-out step; variant "plain" is the baseline."""
    rng = random.Random(seed)
    analyzer = OfflineAnalyzer()
    analyses = [analyzer.analyze(t) for t, _ in trajectories]
    out = []
    for i, ((traj, _), analysis) in enumerate(zip(trajectories, analyses)):
        strangers = [a for (t, _), a in zip(trajectories, analyses) if t.task != traj.task]
        for step in traj.steps:
            sid = len(out)
            ctx, action = step.context, step.action
            routed = route_skills("route", step.t, analysis.episode_skill, analysis.step_skills)
            variants = {"plain": {}, "correct": {f"{c}_skill": s for c, s in routed.items()}}
            variants["correct-step" if "step" in routed else "correct-episode"] = variants["correct"]
            others = [a for a in (ctx.admissible_actions or ()) if a != action]
            if others:
                variants["contra-do"] = {"step_skill": do_skill(rng.choice(others))}
            variants["contra-avoid"] = {"step_skill": avoid_skill(rng.choice(REJECTION_KINDS), action)}
            if strangers:
                variants["contra-episode"] = {"episode_skill": rng.choice(strangers).episode_skill}
            out += [(name, sid, template.render(ctx, **skills), step.response) for name, skills in variants.items()]
    return out


@torch.no_grad()
def score(policy, items: list[tuple[str, int, str, str]], batch: int = 64) -> list[float]:
    """Summed log-prob of each response (+ end token) under its prompt."""
    tok = policy.tokenizer
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    out: list[float] = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        prompts = [policy.encode_prompt(p) for _, _, p, _ in chunk]
        responses = [tok(r, add_special_tokens=False)["input_ids"] + eos for _, _, _, r in chunk]
        width = max(len(r) for r in responses)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width))
        for i, r in enumerate(responses):
            ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        out += policy.score(prompts, ids, mask).sum(-1).tolist()
    return out


def main(argv=None) -> dict:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a policy folder (a run's initial/ or final/, a HF model)")
    parser.add_argument("--env", default="OPID/ALFWorld-v0", help="env id")
    parser.add_argument("--env-kwargs", default="{}", help="JSON, e.g. '{\"level\": \"easy\"}'")
    parser.add_argument("--split", default="valid_seen", help="split whose tasks are probed")
    parser.add_argument("--episodes", type=int, default=40, help="expert episodes probed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (None: cuda when available)")
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    pool = make_pool(args.env, min(args.episodes, 8), json.loads(args.env_kwargs))
    try:
        n = pool.num_tasks(args.split)
        demos, won = collect_demos(pool, [(args.split, i % n) for i in range(args.episodes)], seed=args.seed,
                                   progress=False)
        template, fmt = pool.config.template, pool.config.response_format
    finally:
        pool.close()
    trajectories = expert_trajectories(demos, fmt)
    policy = hf_policy(args.model, device=args.device, temperature=1.0)
    items = probe_prompts(trajectories, template, args.seed)
    logp = score(policy, items)
    plain = {sid: lp for (name, sid, _, _), lp in zip(items, logp) if name == "plain"}
    deltas: dict[str, list[float]] = {}
    for (name, sid, _, _), lp in zip(items, logp):
        if name != "plain":
            deltas.setdefault(name, []).append(lp - plain[sid])
    figures = {name: {"steps": len(d), "mean_delta_nats": statistics.fmean(d),
                      "stderr": statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0,
                      "share_positive": sum(x > 0 for x in d) / len(d)} for name, d in deltas.items()}
    figures["_meta"] = {"model": args.model, "env": args.env, "env_kwargs": args.env_kwargs, "split": args.split,
                        "expert_episodes_won": won, "steps": len(plain),
                        "mean_plain_logp": statistics.fmean(plain.values())}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=2)
    print(f"skill probe: {args.model} on {args.env} {args.env_kwargs} {args.split}: {won} expert episodes, "
          f"{len(plain)} steps, mean logp(action | plain prompt) {figures['_meta']['mean_plain_logp']:.3f}")
    print(f"{'skill injected':<16} {'steps':>6} {'mean delta (nats)':>18} {'stderr':>8} {'share > 0':>10}")
    for name in ("correct", "correct-step", "correct-episode", "contra-do", "contra-avoid", "contra-episode"):
        if name in figures:
            f = figures[name]
            print(f"{name:<16} {f['steps']:>6} {f['mean_delta_nats']:>18.3f} {f['stderr']:>8.3f} {f['share_positive']:>10.2f}")
    return figures


if __name__ == "__main__":
    main()
