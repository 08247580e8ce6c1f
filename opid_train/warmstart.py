"""Warm start: behaviour cloning on expert demonstrations, so a small model starts above zero.

An environment offers demonstrations through `env.unwrapped.expert_action()` (the next expert
action from the current state, or None). Demonstrations are collected with the same agent
stack the policy acts through, so the SFT prompts are exactly the prompts it will see; the
target response is the expert action in the env's answer format, followed by end-of-sequence.
Only episodes the expert won are kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from opid_train.rollout import derive_seed
from wrappers import PromptContext, TagFormat


@dataclass
class Demo:
    prompt: str
    response: str
    context: PromptContext | None = None  # the prompt's pieces, to re-render it with skills injected
    episode: int = -1  # which expert episode the step belongs to


def format_action(action: str, response_format: TagFormat) -> str:
    """The expert action as a response: kept when it already carries a tag, else wrapped in the first tag."""
    if response_format.parse(action).valid:
        return action
    tag = response_format.tags[0]
    return f"<{tag}>{action}</{tag}>"


def collect_demos(pool, tasks: Sequence[tuple[str, int]], *, seed: int, progress: bool = True,
                  skill_share: float = 0.0) -> tuple[list[Demo], int]:
    """Play the expert on each task (in parallel over the pool); returns demos of won episodes and #won.

    `skill_share` > 0 adds that share of the steps again with hindsight skills injected that the
    expert's action follows (a skill-aware warm start for OPID/SDAR: `analyzers.skill_demos`).
    """
    demos: list[Demo] = []
    won = 0
    bar = tqdm(total=len(tasks), desc="expert demos", unit="ep", disable=not progress, leave=False)
    for start in range(0, len(tasks), pool.size):
        batch = list(tasks[start:start + pool.size])
        idx = list(range(len(batch)))
        states = pool.reset(idx, [derive_seed(seed, 555, start + k) for k in idx],
                            [{"split": s, "task_id": int(t)} for s, t in batch])
        episodes: list[list[Demo]] = [[] for _ in idx]
        active = idx
        while active:
            actions = pool.expert_actions(active)
            if any(a is None for a in actions):
                missing = [k for k, a in zip(active, actions) if a is None]
                if len(missing) == len(active) and not any(episodes[k] for k in active):
                    raise RuntimeError(f"{pool.env_id} has no expert: env.unwrapped.expert_action() returned None")
                active = [k for k in active if k not in missing]
                actions = [a for a in actions if a is not None]
                if not active:
                    break
            responses = [format_action(a, pool.config.response_format) for a in actions]
            results = pool.step(active, responses)
            for k, response, res in zip(active, responses, results):
                episodes[k].append(Demo(states[k].prompt, response, states[k].context, start + k))
                states[k] = res
                if res.done and res.info.get("won"):
                    demos.extend(episodes[k])
                    won += 1
            active = [k for k in active if not states[k].done]
        bar.update(len(batch))
    bar.close()
    if skill_share > 0:
        from opid_train.analyzers.skill_demos import skill_demos

        demos += skill_demos(demos, pool.config.template, pool.config.response_format, share=skill_share, seed=seed)
    return demos, won


def _demo_from_json(row: dict) -> Demo:
    ctx = row.get("context")
    if ctx is not None:
        ctx = PromptContext(task=ctx["task"], history=tuple(tuple(pair) for pair in ctx["history"]),
                            observation=ctx["observation"], step=ctx["step"],
                            admissible_actions=tuple(ctx["admissible_actions"]) if ctx["admissible_actions"] else None)
    return Demo(prompt=row["prompt"], response=row["response"], context=ctx, episode=row.get("episode", -1))


def cached_demos(pool, tasks: Sequence[tuple[str, int]], *, seed: int, env_kwargs: dict, cache: Path,
                 progress: bool = True, skill_share: float = 0.0) -> tuple[list[Demo], int]:
    """`collect_demos`, the expert's part stored as JSONL under `cache` by (env, kwargs, tasks, seed):
    experts are slow, and every seed of a study warm-starts from the same demonstrations."""
    key = json.dumps([pool.env_id, env_kwargs, list(map(list, tasks)), seed], sort_keys=True, default=str)
    path = Path(cache) / f"demos-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"
    if path.exists():
        lines = path.read_text().splitlines()
        try:
            won = int(json.loads(lines[0])["won"])
            demos = [_demo_from_json(json.loads(line)) for line in lines[1:]]
        except (IndexError, KeyError, json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{path}: not a demonstration cache ({exc}); delete it to rebuild") from None
    else:
        demos, won = collect_demos(pool, tasks, seed=seed, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("\n".join([json.dumps({"won": won, "key": key})] + [json.dumps(asdict(d)) for d in demos]) + "\n")
        os.replace(tmp, path)
    if skill_share > 0:
        from opid_train.analyzers.skill_demos import skill_demos

        demos = demos + skill_demos(demos, pool.config.template, pool.config.response_format, share=skill_share, seed=seed)
    return demos, won


def behaviour_clone(policy, demos: list[Demo], *, epochs: int, lr: float, batch_size: int, seed: int,
                    micro_batch_size: int | None = None, max_minutes: float | None = None,
                    progress: bool = True, on_epoch: Callable[[int, float, float], None] | None = None,
                    ) -> dict[str, float]:
    """Cross-entropy on the response tokens (and the end token); returns the last epoch's mean loss.

    `on_epoch(epoch, mean loss, seconds so far)` reports each finished epoch: a pretrained model's
    epoch takes minutes on a CPU, and a log without progress bars would otherwise say nothing.

    A batch runs as micro-batches of `micro_batch_size` rows with accumulated gradients (the same
    step as one pass): a pretrained model's long prompts do not fit 32 at a time in a laptop's memory.
    The batch's rows go longest prompt first, so each micro-batch pads its prompts little.
    """
    if not demos:
        raise ValueError("no demonstrations to clone")
    tok = policy.tokenizer
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    prompts = [policy.encode_prompt(d.prompt) for d in demos]
    responses = [tok(d.response, add_special_tokens=False)["input_ids"] + eos for d in demos]
    opt = torch.optim.AdamW(policy.parameters(), lr=lr)
    steps_total = epochs * math.ceil(len(demos) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps_total))
    gen = torch.Generator().manual_seed(derive_seed(seed, 999))
    start = time.monotonic()
    bar = tqdm(total=steps_total, desc="warm start (BC)", unit="step", disable=not progress, leave=False)
    epoch_loss = float("nan")
    for epoch in range(epochs):
        losses = []
        for chunk in torch.randperm(len(demos), generator=gen).split(batch_size):
            batch_rows = sorted(chunk.tolist(), key=lambda r: len(prompts[r]), reverse=True)
            batch_tokens = sum(len(responses[r]) for r in batch_rows)
            opt.zero_grad(set_to_none=True)
            loss = 0.0
            micro = micro_batch_size or len(batch_rows)
            for first in range(0, len(batch_rows), micro):
                rows = batch_rows[first:first + micro]
                width = max(len(responses[r]) for r in rows)
                ids = torch.zeros((len(rows), width), dtype=torch.long)
                mask = torch.zeros((len(rows), width))
                for i, r in enumerate(rows):
                    ids[i, : len(responses[r])] = torch.tensor(responses[r])
                    mask[i, : len(responses[r])] = 1
                with policy.at_temperature(1.0):  # BC fits the model's own distribution; temperature is for sampling
                    logp = policy.logprobs([prompts[r] for r in rows], ids, mask)
                micro_loss = -(logp.sum() / batch_tokens)  # this micro-batch's part of the batch's token mean
                micro_loss.backward()
                loss += micro_loss.item()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}")
        epoch_loss = sum(losses) / len(losses)
        elapsed = time.monotonic() - start
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss, elapsed)
        if max_minutes is not None and elapsed > 60 * max_minutes:
            break
    bar.close()
    return {"bc_loss": epoch_loss, "bc_epochs": epoch + 1, "bc_demos": len(demos),
            "bc_seconds": time.monotonic() - start}


def explore_corpus(pool, split: str, *, seed: int, episodes: int = 16, max_steps: int = 12) -> list[str]:
    """Prompts and formatted actions from random admissible play: text to train a tokenizer on."""
    import random

    rng = random.Random(seed)
    n_tasks = pool.num_tasks(split)
    texts: list[str] = []
    for start in range(0, episodes, pool.size):
        idx = list(range(min(pool.size, episodes - start)))
        states = pool.reset(idx, [derive_seed(seed, 777, start + k) for k in idx],
                            [{"split": split, "task_id": (start + k) % n_tasks} for k in idx])
        active = idx
        for _ in range(max_steps):
            if not active:
                break
            responses = []
            for k in active:
                actions = states[k].info.get("admissible_actions") or ["look"]
                responses.append(format_action(rng.choice(actions), pool.config.response_format))
                texts.append(states[k].prompt + "\n" + responses[-1])
            for k, res in zip(active, pool.step(active, responses)):
                states[k] = res
            active = [k for k in active if not states[k].done]
    return texts
