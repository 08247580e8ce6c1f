"""A GRPO group as a PettingZoo ParallelEnv: N rollouts of one task, agents `rollout_0..N-1`.

Every copy is reset to the same split and task_id, so the group shares its initial state.

On stepping many text envs at once: text spaces batch as tuples of strings, so Gymnasium's
vector envs do work with opid envs (`gym.make_vec(id, n, vectorization_mode="async")`), but they reset
every sub-env with the same options and auto-reset finished ones, which a GRPO group of
variable-length episodes does not want, and they measured slower here.
`scripts/bench_vector.py` (8 envs x 20 random admissible steps, ALFWorld easy, 2-core CPU under
load): plain loop 518 steps/s, SyncVectorEnv 485 (x0.94), AsyncVectorEnv 349 (x0.67); on the toy
env the loop is 3-10x faster still. So the trainer steps plain env lists (in worker processes
only where an env is slow enough to pay for the pipes, see `opid_train.rollout`), and this
class is the PettingZoo view of one group.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

from opid_envs.core import TextSpace


class GroupEnv(ParallelEnv):
    metadata = {"name": "opid_group_v0", "render_modes": []}

    def __init__(self, env_fn: Callable[[], gym.Env] | str, n: int = 8, **env_kwargs):
        if n < 1:
            raise ValueError(f"a group needs n >= 1 rollouts, got {n}")
        make = (lambda: gym.make(env_fn, **env_kwargs)) if isinstance(env_fn, str) else env_fn
        self.possible_agents = [f"rollout_{i}" for i in range(n)]
        self.envs = {agent: make() for agent in self.possible_agents}
        self.agents: list[str] = []
        self._obs_space, self._act_space = TextSpace(), TextSpace()
        self.task_id: int | None = None

    def observation_space(self, agent: str) -> TextSpace:
        return self._obs_space

    def action_space(self, agent: str) -> TextSpace:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        options = dict(options or {})
        first = self.possible_agents[0]
        observations, infos = {}, {}
        observations[first], infos[first] = self.envs[first].reset(seed=seed, options=options)
        # The first copy picked the task (from the seed if none was given); the others follow it.
        options.update(task_id=infos[first]["task_id"], split=infos[first]["split"])
        self.task_id = infos[first]["task_id"]
        seeds = np.random.SeedSequence(seed).generate_state(len(self.possible_agents)) if seed is not None else None
        for i, agent in enumerate(self.possible_agents[1:], 1):
            agent_seed = int(seeds[i]) if seeds is not None else None
            observations[agent], infos[agent] = self.envs[agent].reset(seed=agent_seed, options=options)
        self.agents = list(self.possible_agents)
        return observations, infos

    def step(self, actions: dict[str, str]):
        observations, rewards, terminations, truncations, infos = {}, {}, {}, {}, {}
        for agent in self.agents:
            if agent not in actions:
                raise KeyError(f"no action for live agent {agent}")
            obs, rew, term, trunc, info = self.envs[agent].step(actions[agent])
            observations[agent], rewards[agent], infos[agent] = obs, float(rew), info
            terminations[agent], truncations[agent] = bool(term), bool(trunc)
        self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos

    def close(self):
        for env in self.envs.values():
            env.close()
