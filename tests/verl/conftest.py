"""Fixtures of the verl backend's tests: verl's real classes, the tiny policy behind a stand-in server.

verl's LLM server is a vLLM (or SGLang) replica on a GPU; here `TinyServer` answers the same
`generate(request_id, prompt_ids=..., sampling_params=...)` call with the tiny HF policy, so the
agent loop runs unchanged on the CPU.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest
import torch

import tests.train.toy_expert  # noqa: F401  (registers OPIDTest/KeyDoorExpert-v0)
from opid_train.policy import load_policy
from opid_train.policy.presets import TinyConfig
from opid_train.rollout import EnvPool, collect
from opid_train.warmstart import collect_demos
from tests.train.toy_expert import EXPERT_ID

TINY = TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=400)


class TinyServer:
    """Stand-in for verl's `LLMServerClient`: samples from the tiny policy, reports sampling log-probs."""

    def __init__(self, policy, seed: int = 0):
        self.policy = policy
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0
        self.on_call = None  # test hook: called with the call count
        self.global_steps = 0  # the weight version a verl server reports (set at each weight sync)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.calls += 1
        if self.on_call:
            self.on_call(self.calls)
        temperature = float(sampling_params.get("temperature", 1.0))
        out, logps = [], []
        model = self.policy.model
        with torch.no_grad():
            step = model(input_ids=torch.tensor([list(prompt_ids)]), use_cache=True)
            for _ in range(int(sampling_params["max_tokens"])):
                logits = step.logits[0, -1].float()
                if temperature <= 0:
                    logp = torch.log_softmax(logits, -1)
                    token = int(logp.argmax())
                else:
                    logp = torch.log_softmax(logits / temperature, -1)
                    token = int(torch.multinomial(logp.exp(), 1, generator=self.generator))
                out.append(token)
                logps.append(float(logp[token]))
                if token in self.policy.eos_ids:
                    break
                step = model(input_ids=torch.tensor([[token]]), use_cache=True, **self.policy._cache_kwargs(step))
        await asyncio.sleep(0)  # a real server answers asynchronously
        # verl's vLLM server reports its weight version; verl's LLMServerClient adds min/max from it
        versions = dict.fromkeys(("global_steps", "min_global_steps", "max_global_steps"), self.global_steps)
        return TokenOutput(token_ids=out, log_probs=logps if sampling_params.get("logprobs") else None,
                           extra_fields=versions)


@pytest.fixture(scope="session")
def opid_cache(tmp_path_factory):
    os.environ.setdefault("OPID_CACHE", str(tmp_path_factory.mktemp("opid-cache")))
    return os.environ["OPID_CACHE"]


@pytest.fixture(scope="session")
def tiny_policy(opid_cache):
    """The tiny policy, its tokenizer trained on the toy env's expert text (any text still encodes)."""
    pool = EnvPool(EXPERT_ID, 2)
    demos, _ = collect_demos(pool, [("train", i) for i in range(5)], seed=0, progress=False)
    return load_policy("tiny", texts=[d.prompt + d.response for d in demos], seed=0, tiny=TINY)


@pytest.fixture
def gloo_group(monkeypatch):
    """This process as a 1-rank torch.distributed gloo group, as each of verl's FSDP workers is one rank of its
    own; the rank's environment as verl's Ray worker group sets it (verl's `Worker` reads it, and writes it back)."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "REDIS_STORE_SERVER_HOST": "127.0.0.1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dist.init_process_group("gloo", init_method="env://", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def verl_config(overrides: list[str] | None = None):
    """The ALFWorld preset composed with verl's ppo_trainer, sized for the CPU tests."""
    from opid_train.verl.config import compose_preset

    cfg, _, _ = compose_preset("alfworld", ["data.max_prompt_length=768", "data.max_response_length=8",
                                            "trainer.n_gpus_per_node=1", "opid.env=OPIDTest/KeyDoorExpert-v0",
                                            "~opid.env_kwargs.level", "opid_rollout.env_workers=0",
                                            "opid_rollout.env_slots=8", *(overrides or [])])
    return cfg


def agent_loop(policy, config, server=None):
    """verl's agent-loop construction (`AgentLoopWorker._run_agent_loop`) with the stand-in server."""
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap

    from opid_train.verl.agent_loop import OpidEnvAgentLoop
    from opid_train.verl.dataset import OpidTaskDataset

    return OpidEnvAgentLoop(trainer_config=DictConfigWrap(config), server_manager=server or TinyServer(policy),
                            tokenizer=policy.tokenizer, processor=None, dataset_cls=OpidTaskDataset,
                            data_config=DictConfigWrap(config.data), hf_model_type="llama")


@pytest.fixture(scope="session")
def trajectories(tiny_policy):
    """Two groups of four toy-env episodes sampled from the tiny policy (up to 4 steps each)."""
    pool = EnvPool(EXPERT_ID, 8, {"max_steps": 4})
    try:
        return collect(tiny_policy, pool, [("train", 0), ("train", 1)], 4, seed=5, max_new_tokens=12, progress=False)
    finally:
        pool.close()


def traj_info(traj) -> dict:
    return {"env_id": traj.env_id, "split": traj.split, "task": traj.task, "task_id": traj.task_id,
            "task_type": traj.task_type, "score": traj.score, "won": traj.won,
            "uid": f"group-{traj.group_id}", "session": traj.traj_id, "final_observation": traj.final_observation}


def verl_batch(trajectories, pad_id: int, seed: int = 0):
    """The rows as verl's v1 trainer holds them: one AgentLoopOutput per step (the agent loop's own
    `step_output`) through verl's `as_dict`, rows shuffled, plus one padding row made by verl's own
    padding code (a copy of the first row, extra_fields included, tagged is_padding, response mask 0),
    as verl adds to divide a batch over GPUs; prompts left- and responses right-padded, records read
    by the trainer's `step_records`."""
    import numpy as np
    from tensordict import TensorDict
    from verl.protocol import DataProto
    from verl.trainer.ppo.padding_utils import construct_minimal_padding_template

    from opid_train.verl.advantage import step_records
    from opid_train.verl.agent_loop import step_output

    rows = [step_output(step, traj_info(traj)).as_dict() for traj in trajectories for step in traj.steps]
    random.Random(seed).shuffle(rows)
    tags = [{} for _ in rows]
    pad_row, pad_tag = construct_minimal_padding_template(rows[0], tags[0], pad_id)
    rows.append(pad_row)
    tags.append(pad_tag)
    P = max(len(r["prompts"]) for r in rows)
    T = max(len(r["responses"]) for r in rows)
    n = len(rows)
    prompts, attention = torch.full((n, P + T), pad_id), torch.zeros((n, P + T), dtype=torch.long)
    responses, mask, logp = torch.full((n, T), pad_id), torch.zeros((n, T), dtype=torch.long), torch.zeros((n, T))
    for i, r in enumerate(rows):
        p, k = len(r["prompts"]), len(r["responses"])
        prompts[i, P - p:P] = r["prompts"]
        attention[i, P - p:P + k] = 1
        responses[i, :k], mask[i, :k], logp[i, :k] = r["responses"], r["response_mask"], r["rollout_log_probs"]
    records = np.empty(n, dtype=object)
    records[:] = step_records([r["extra_fields"] for r in rows], tags)
    batch = TensorDict({"prompts": prompts[:, :P], "responses": responses, "response_mask": mask,
                        "attention_mask": attention, "rollout_log_probs": logp}, batch_size=n)
    return DataProto(batch=batch, non_tensor_batch={"opid": records})
