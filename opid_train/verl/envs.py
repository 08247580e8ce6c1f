"""Env slots for the verl agent loop: the local backend's env pools, driven from asyncio.

An agent-loop worker runs many episodes as coroutines on one event loop. Each episode borrows a
slot of an `EnvPool` (envs in this process) or a `ProcessEnvPool` (envs in worker processes) and
every reset/step runs in a thread (`run_in_executor`), so a slow env step never stalls the event
loop that streams generation requests. The envs are `opid_train.rollout.make_env` stacks: the same
wrappers, prompt window and parsing as the local backend.
"""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import asynccontextmanager
from typing import Any

from opid_train.rollout import EnvResult, make_pool
from wrappers import AgentConfig


class EnvSlots:
    """`size` envs of one id; `async with slots.episode() as env:` lends one to a coroutine."""

    def __init__(self, env_id: str, size: int, env_kwargs: dict[str, Any] | None = None, workers: int = 0,
                 agent: AgentConfig | None = None):
        self.pool = make_pool(env_id, size, env_kwargs, workers, agent)
        self.template = self.pool.config.template
        self.workers = workers
        # a worker process answers one request at a time over its pipe; envs in this process need no lock
        self._locks = [threading.Lock() for _ in range(workers)]
        self._free: asyncio.Queue[int] | None = None

    def _call(self, method: str, slot: int, *args) -> EnvResult:
        if not self._locks:
            return getattr(self.pool, method)([slot], *[[a] for a in args])[0]
        with self._locks[slot % len(self._locks)]:
            return getattr(self.pool, method)([slot], *[[a] for a in args])[0]

    @asynccontextmanager
    async def episode(self):
        if self._free is None:  # made on the loop that uses it
            self._free = asyncio.Queue()
            for slot in range(self.pool.size):
                self._free.put_nowait(slot)
        slot = await self._free.get()
        try:
            yield _Episode(self, slot)
        finally:
            self._free.put_nowait(slot)

    def close(self) -> None:
        self.pool.close()


class _Episode:
    """One borrowed env: `reset` and `step` return the rollout's `EnvResult`, computed off the loop."""

    def __init__(self, slots: EnvSlots, slot: int):
        self.slots, self.slot = slots, slot

    async def reset(self, seed: int, options: dict) -> EnvResult:
        return await asyncio.get_running_loop().run_in_executor(None, self.slots._call, "reset", self.slot, seed, options)

    async def step(self, response: str) -> EnvResult:
        return await asyncio.get_running_loop().run_in_executor(None, self.slots._call, "step", self.slot, response)


_SLOTS: dict[tuple, asyncio.Future] = {}


async def shared_slots(env_id: str, env_kwargs: dict[str, Any], size: int, workers: int,
                       agent: AgentConfig | None = None) -> EnvSlots:
    """One `EnvSlots` per (loop, env id, env kwargs, agent interface) in this process, made on first use in
    a thread (env processes take seconds to start; the event loop keeps serving meanwhile)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), env_id, json.dumps(env_kwargs, sort_keys=True), size, workers, repr(agent))
    if key not in _SLOTS:
        _SLOTS[key] = loop.run_in_executor(None, EnvSlots, env_id, size, env_kwargs, workers, agent)
    return await _SLOTS[key]


def close_all() -> None:
    while _SLOTS:
        future = _SLOTS.popitem()[1]
        if future.done() and future.exception() is None:
            future.result().close()
