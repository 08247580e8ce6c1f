"""Batched group rollouts: G tasks x N trajectories, one generate call per turn for all live envs.

Env stepping sits behind `EnvPool` (in this process) and `ProcessEnvPool` (worker processes,
envs split round-robin, all workers stepping at once); the collector only sees
`reset(indices, ...)`, `step(indices, responses)` and `expert_actions(indices)`, so a Ray or
AsyncVectorEnv pool can replace them without touching the learner. Each env is the wrappers'
agent stack, so prompts, history and parsing come from `wrappers`.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from opid_envs.core import resolve_env_id
from opid_train.policy.base import Policy
from opid_train.types import Step, Trajectory
from wrappers import AgentConfig, AgentPrompt, ParseResponse, PromptContext, agent_config


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from a tuple of ints (run seed, update, turn, env index, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def spread_task_ids(n_tasks: int, count: int | None = None) -> list[int]:
    """`count` task ids spread evenly over 0..n_tasks-1 (all of them when count is None or <= 0).

    Suites list their tasks type by type, so a prefix would leave whole task types out.
    """
    count = n_tasks if not count or count <= 0 else min(count, n_tasks)
    return [i * n_tasks // count for i in range(count)]


def make_env(env_id: str, config: AgentConfig, env_kwargs: dict[str, Any]) -> gym.Env:
    return AgentPrompt(ParseResponse(gym.make(env_id, **env_kwargs), config.response_format), config.template)


@dataclass
class EnvResult:
    prompt: str
    context: PromptContext
    info: dict[str, Any]
    reward: float = 0.0
    done: bool = False


def _expert_action(env: gym.Env) -> str | None:
    expert = getattr(env.unwrapped, "expert_action", None)
    return expert() if expert else None


class EnvPool:
    """`size` agent envs of one id, stepped in this process; `agent` (prompt template, answer format)
    defaults to the one registered for the id."""

    def __init__(self, env_id: str, size: int, env_kwargs: dict[str, Any] | None = None,
                 agent: AgentConfig | None = None):
        env_id = resolve_env_id(env_id)
        self.env_id, self.size = env_id, size
        self.config = agent or agent_config(env_id)
        self.envs = [make_env(env_id, self.config, dict(env_kwargs or {})) for _ in range(size)]

    def reset(self, indices: Sequence[int], seeds: Sequence[int], options: Sequence[dict]) -> list[EnvResult]:
        out = []
        for i, seed, opts in zip(indices, seeds, options):
            prompt, info = self.envs[i].reset(seed=seed, options=opts)
            out.append(EnvResult(prompt, self.envs[i].context, info))
        return out

    def step(self, indices: Sequence[int], responses: Sequence[str]) -> list[EnvResult]:
        out = []
        for i, response in zip(indices, responses):
            prompt, reward, terminated, truncated, info = self.envs[i].step(response)
            out.append(EnvResult(prompt, self.envs[i].context, info, float(reward), terminated or truncated))
        return out

    def expert_actions(self, indices: Sequence[int]) -> list[str | None]:
        return [_expert_action(self.envs[i]) for i in indices]

    def num_tasks(self, split: str) -> int:
        return int(self.envs[0].unwrapped.num_tasks(split))

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _worker(conn, env_id: str, spec: gym.envs.registration.EnvSpec, config: AgentConfig, env_kwargs: dict, n: int):
    import opid_envs  # noqa: F401  (registers the opid ids in a fresh interpreter)

    if env_id not in gym.registry:  # a user env registered in the parent process only
        gym.register(id=env_id, entry_point=spec.entry_point, kwargs=spec.kwargs)
    pool = EnvPool.__new__(EnvPool)
    pool.env_id, pool.size, pool.config = env_id, n, config
    pool.envs = [make_env(env_id, config, env_kwargs) for _ in range(n)]
    conn.send("ready")
    while True:
        cmd, args = conn.recv()
        if cmd == "close":
            pool.close()
            conn.close()
            return
        try:
            conn.send(("ok", getattr(pool, cmd)(*args)))
        except Exception as exc:  # the parent re-raises it with the worker's message
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class ProcessEnvPool:
    """The same interface with envs in `workers` processes (env i lives in worker i % workers)."""

    def __init__(self, env_id: str, size: int, env_kwargs: dict[str, Any] | None = None, workers: int = 2,
                 agent: AgentConfig | None = None):
        env_id = resolve_env_id(env_id)
        self.env_id, self.size, self.workers = env_id, size, max(1, min(workers, size))
        self.config = agent or agent_config(env_id)
        ctx = mp.get_context("spawn")  # fork would copy the model's thread pools
        self.conns, self.procs = [], []
        for w in range(self.workers):
            n = len(range(w, size, self.workers))
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, env_id, gym.spec(env_id), self.config,
                                                     dict(env_kwargs or {}), n), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            conn.recv()

    def _call(self, cmd: str, indices: Sequence[int], *columns: Sequence) -> list:
        jobs: dict[int, list[int]] = {}
        for pos, i in enumerate(indices):
            jobs.setdefault(i % self.workers, []).append(pos)
        for w, positions in jobs.items():
            local = [indices[p] // self.workers for p in positions]
            self.conns[w].send((cmd, (local, *[[col[p] for p in positions] for col in columns])))
        out: list = [None] * len(indices)
        for w, positions in jobs.items():
            status, value = self.conns[w].recv()
            if status == "error":
                raise RuntimeError(f"env worker {w}: {value}")
            for p, v in zip(positions, value):
                out[p] = v
        return out

    def reset(self, indices, seeds, options):
        return self._call("reset", indices, seeds, options)

    def step(self, indices, responses):
        return self._call("step", indices, responses)

    def expert_actions(self, indices):
        return self._call("expert_actions", indices)

    def num_tasks(self, split: str) -> int:
        self.conns[0].send(("num_tasks", (split,)))
        status, value = self.conns[0].recv()
        if status == "error":
            raise RuntimeError(f"env worker 0: {value}")
        return value

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            try:
                conn.send(("close", ()))
            except (BrokenPipeError, OSError):
                pass
            proc.join(timeout=5)


def make_pool(env_id: str, size: int, env_kwargs: dict[str, Any] | None = None, workers: int = 0,
              agent: AgentConfig | None = None):
    """workers=0: envs in this process; otherwise that many worker processes. `agent`: the prompt
    template and answer format (default: the id's registered one; a run's: presets.agent_config_for)."""
    if workers > 0:
        return ProcessEnvPool(env_id, size, env_kwargs, workers, agent)
    return EnvPool(env_id, size, env_kwargs, agent)


def collect(
    policy: Policy,
    pool,
    tasks: Sequence[tuple[str, int]],
    group_size: int,
    *,
    seed: int,
    max_new_tokens: int,
    greedy: bool = False,
    group_offset: int = 0,
    progress: bool = True,
    desc: str = "rollout",
) -> list[Trajectory]:
    """Roll out `group_size` trajectories of each (split, task_id); one generate call per turn.

    Env k = g * group_size + j plays trajectory j of task g; the group shares the task and its
    initial state. Same seed, same policy weights -> same trajectories.
    """
    n = len(tasks) * group_size
    if n > pool.size:
        raise ValueError(f"{len(tasks)} tasks x {group_size} rollouts need {n} envs; the pool has {pool.size}")
    indices = list(range(n))
    options = [{"split": tasks[k // group_size][0], "task_id": int(tasks[k // group_size][1])} for k in indices]
    states = pool.reset(indices, [derive_seed(seed, k) for k in indices], options)
    trajs = [Trajectory(env_id=pool.env_id, split=s.info["split"], task=s.info["task"], task_id=s.info["task_id"],
                        task_type=str(s.info["task_type"]),
                        group_id=group_offset + k // group_size, traj_id=k) for k, s in enumerate(states)]
    active = indices
    bar = tqdm(total=None, desc=desc, unit="step", disable=not progress, leave=False)
    turn = 0
    while active:
        gens = policy.generate([states[k].prompt for k in active], max_new_tokens=max_new_tokens,
                               greedy=greedy, seed=derive_seed(seed, 1_000_003, turn))
        results = pool.step(active, [g.text for g in gens])
        for k, gen, res in zip(active, gens, results):
            prev = states[k]
            trajs[k].steps.append(Step(
                t=len(trajs[k].steps), observation=prev.context.observation, context=prev.context,
                prompt=prev.prompt, response=gen.text, action=res.info.get("action"), reward=res.reward,
                format_valid=bool(res.info.get("format_valid", True)), action_valid=bool(res.info.get("action_valid", True)),
                prompt_ids=gen.prompt_ids, response_ids=gen.response_ids, old_logprobs=gen.logprobs))
            states[k] = res
            if res.done:
                trajs[k].score, trajs[k].won = res.reward, bool(res.info.get("won", False))
                trajs[k].final_observation = res.context.observation
        bar.update(len(active))
        active = [k for k in active if not states[k].done]
        turn += 1
    bar.close()
    return trajs
