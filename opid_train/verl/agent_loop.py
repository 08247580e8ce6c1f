"""The verl agent loop that plays an opid environment: one `AgentLoopOutput` per env step.

verl's v1 trainer hands each dataset row (one task: env id, split, task id) to `run` once per
rollout (`actor_rollout_ref.rollout.n` sessions). An episode is the local backend's collector loop
for one env: the wrappers render the prompt (the run's template and history window, as the local
backend's `agent_config_for` makes them; same parsing), the verl LLM server
samples the response, the env steps in a thread or env process (`envs.EnvSlots`). Every step comes
back as its own training row, as in verl-agent and the local learner; each row carries the
episode's outcome score (verl's `rm_scores`) and, in `extra_fields["opid"]`, what the advantage
step needs to rebuild the trajectory (observation, prompt pieces, action, validity, task).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

import opid_envs  # noqa: F401  (registers the opid env ids in the agent-loop worker)
from opid_train.rollout import derive_seed, resolve_env_id
from opid_train.types import Step
from opid_train.verl import AGENT_NAME
from opid_train.verl.envs import shared_slots
from opid_train.verl.records import step_to_record
from opid_train.policy.hf import keep_head_and_tail
from opid_train.presets import agent_config_for
from wrappers import AgentConfig


def run_agent_config(trainer_config, env_id: str) -> AgentConfig:
    """The agent interface (prompt template, history window, answer format) the local backend would use
    for this run on `env_id`: `presets.agent_config_for` of the composed config's `opid` section."""
    from omegaconf import OmegaConf

    from opid_train.verl.config import opid_config

    train = opid_config(OmegaConf.to_container(trainer_config.opid, resolve=True))
    return agent_config_for(dataclasses.replace(train, env=env_id))


@register(AGENT_NAME)
class OpidEnvAgentLoop(AgentLoopBase):
    """Plays one episode of the row's task; returns one output per step (verl v1 trainer)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        opts = self.config.get("opid_rollout", None) or {}
        self.env_slots = int(opts.get("env_slots", 64))
        self.env_workers = int(opts.get("env_workers", 0))
        self.max_turns = opts.get("max_turns", None)
        self.agent_configs: dict[str, AgentConfig] = {}  # env id -> the run's agent interface
        self.prompt_length = self.rollout_config.prompt_length
        self.response_length = self.rollout_config.response_length

    async def encode(self, text: str) -> list[int]:
        """verl's tokenization of a user turn (its Continuous Token builder), over-long prompts cut as the
        local policy cuts them (verl's own cap would keep only the tail, dropping the task)."""
        messages = [{"role": "user", "content": text}]
        ids = await self.loop.run_in_executor(None, self.continuous_token_builder.build_initial_tokens, messages)
        return keep_head_and_tail(ids, self.prompt_length)

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> list[AgentLoopOutput]:
        env_id = resolve_env_id(str(kwargs["env_id"]))
        env_kwargs = json.loads(kwargs.get("env_kwargs") or "{}")
        session = int(kwargs.get("session_id", 0))
        seed = derive_seed(int(kwargs.get("seed", 0)), session)
        options = {"split": str(kwargs["split"]), "task_id": int(kwargs["task_id"])}
        params = {**sampling_params, "max_tokens": self.response_length}
        request_id = uuid4().hex  # one sticky session per episode (prefix caching across turns)
        if env_id not in self.agent_configs:
            self.agent_configs[env_id] = run_agent_config(self.config, env_id)
        slots = await shared_slots(env_id, env_kwargs, self.env_slots, self.env_workers, self.agent_configs[env_id])

        steps: list[tuple[Step, Any, float, float]] = []
        async with slots.episode() as env:
            state = await env.reset(seed, options)
            traj = {"env_id": env_id, "split": state.info["split"], "task": state.info["task"],
                    "task_id": int(state.info["task_id"]), "task_type": str(state.info["task_type"]),
                    "uid": str(kwargs.get("uid", "")), "session": session}
            while not state.done and (self.max_turns is None or len(steps) < int(self.max_turns)):
                prompt_ids = await self.encode(state.prompt)
                t0 = time.perf_counter()
                out = await self.server_manager.generate(request_id=request_id, prompt_ids=prompt_ids,
                                                         sampling_params=params)
                t1 = time.perf_counter()
                response_ids = list(out.token_ids)[: self.response_length]
                text = self.tokenizer.decode(response_ids, skip_special_tokens=True)
                result = await env.step(text)
                step = Step(t=len(steps), observation=state.context.observation, context=state.context,
                            prompt=state.prompt, response=text, action=result.info.get("action"),
                            reward=float(result.reward), format_valid=bool(result.info.get("format_valid", True)),
                            action_valid=bool(result.info.get("action_valid", True)), prompt_ids=prompt_ids,
                            response_ids=response_ids, old_logprobs=list(out.log_probs or [])[: len(response_ids)])
                steps.append((step, out, t1 - t0, time.perf_counter() - t1))
                state = result
        traj["score"] = float(state.reward) if state.done else 0.0
        traj["won"] = bool(state.info.get("won", False)) if state.done else False
        traj["final_observation"] = state.context.observation if state.done else None  # the records' last text
        return [step_output(step, traj, out.num_preempted, gen_s, env_s, out.extra_fields)
                for step, out, gen_s, env_s in steps]


def step_output(step: Step, traj: dict, num_preempted: int | None = None, generate_s: float = 0.0,
                env_s: float = 0.0, server_fields: dict | None = None) -> AgentLoopOutput:
    """One training row: the step's tokens, its episode's score as verl's reward, its record.

    `server_fields` are the server's `extra_fields` for this step's generation: verl's v1 worker tags the
    row with their weight versions (`min_global_steps`, `max_global_steps`), which its metrics read."""
    return AgentLoopOutput(
        prompt_ids=step.prompt_ids, response_ids=step.response_ids, response_mask=[1] * len(step.response_ids),
        response_logprobs=step.old_logprobs or None, reward_score=traj["score"], num_turns=2,
        metrics=AgentLoopMetrics(generate_sequences=generate_s, tool_calls=env_s,
                                 num_preempted=-1 if num_preempted is None else num_preempted),
        # reward_extra_info: verl's v1 worker copies it from the last output to the others
        extra_fields={**(server_fields or {}), "opid": step_to_record(step, traj), "reward_extra_info": {},
                      "turn_scores": [], "tool_rewards": []},
    )
