"""Fixtures of the verl backend's tests: verl's real classes, the tiny policy behind a stand-in server.

verl's LLM server is a vLLM (or SGLang) replica on a GPU; here `TinyServer` answers the same
`generate(request_id, prompt_ids=..., sampling_params=...)` call with the tiny HF policy, so the
agent loop runs unchanged on the CPU.
"""

from __future__ import annotations

import asyncio
import os

import pytest
import torch

import tests.train.toy_expert  # noqa: F401  (registers OPIDTest/KeyDoorExpert-v0)
from opid_train.policy import load_policy
from opid_train.policy.presets import TinyConfig
from opid_train.rollout import EnvPool
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
        return TokenOutput(token_ids=out, log_probs=logps if sampling_params.get("logprobs") else None)


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
