"""The verl agent loop (verl's real AgentLoopBase) plays opid envs against the tiny policy's stand-in server."""

from __future__ import annotations

import asyncio
import json
import threading

import gymnasium as gym
import pytest

pytest.importorskip("verl.experimental.agent_loop", reason="the verl extra is not (fully) installed: pip install 'opid[verl]'")  # before the imports that need it

from opid_train.config import TrainConfig
from opid_train.presets import agent_config_for
from opid_train.rollout import derive_seed, make_env
from opid_train.policy.hf import keep_head_and_tail
from opid_train.verl.envs import close_all
from tests.toy_env import KeyDoorEnv
from tests.train.toy_expert import EXPERT_ID
from tests.verl.conftest import TinyServer, agent_loop, verl_config


@pytest.fixture(scope="module")
def alfworld_suite(tmp_path_factory):
    pytest.importorskip("alfworld")
    from opid_envs.alfworld import generate

    out = tmp_path_factory.mktemp("alfworld") / "easy"
    return str(generate.generate_suite("easy", out, sizes={"train": 1, "valid_seen": 1, "valid_unseen": 1},
                                       progress=False))


def play(policy, config, env_id, env_kwargs, task_id=0, sessions=(0, 1), split="train", temperature=1.0, server=None):
    params = {"temperature": temperature, "top_p": 1.0, "top_k": -1, "logprobs": True}

    async def both():
        loop = agent_loop(policy, config, server)  # made on the running event loop, as verl's worker does
        runs = [loop.run(dict(params), env_id=env_id, env_kwargs=json.dumps(env_kwargs), split=split, task_id=task_id,
                         seed=3, uid="task-a", session_id=s, raw_prompt=[]) for s in sessions]
        return await asyncio.gather(*runs)

    try:
        return asyncio.run(both())
    finally:
        close_all()


def check_episode(outputs, env_id, env_kwargs, session, policy, prompt_length, split="train", task_id=0):
    """Each output is one step; replaying its responses through the local backend's env stack gives the
    same prompts, rewards and validity, and the prompt tokens are the local policy's."""
    # the local backend's agent interface for a pretrained policy (parity "reference"), as the verl presets' policy
    env = make_env(env_id, agent_config_for(TrainConfig(env=env_id, policy="/models/Qwen2.5-3B-Instruct")), env_kwargs)
    prompt, _ = env.reset(seed=derive_seed(3, session), options={"split": split, "task_id": task_id})
    for t, out in enumerate(outputs):
        rec = out.extra_fields["opid"]
        assert rec["t"] == t and rec["prompt"] == prompt
        assert out.prompt_ids == keep_head_and_tail(policy.encode_prompt(prompt), prompt_length)
        assert out.response_mask == [1] * len(out.response_ids) and len(out.response_logprobs) == len(out.response_ids)
        assert rec["response"] == policy.tokenizer.decode(out.response_ids, skip_special_tokens=True)
        prompt, reward, terminated, truncated, info = env.step(rec["response"])
        assert rec["reward"] == reward and rec["format_valid"] == info.get("format_valid", True)
        assert rec["traj"]["session"] == session and rec["traj"]["uid"] == "task-a"
    assert terminated or truncated  # the episode ran to its end
    assert {out.reward_score for out in outputs} == {outputs[-1].extra_fields["opid"]["reward"]}
    env.close()


ENVS = {
    "toy": (EXPERT_ID, {"max_steps": 4}),
    "alfworld": ("OPID/ALFWorld-v0", {"max_steps": 3}),
    "webshop": ("OPID/WebShop-v0", {"max_steps": 3, "num_products": 60, "nouns": "fallback"}),
    "searchqa": ("OPID/SearchQA-v0", {"max_steps": 3}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ENVS))
def test_agent_loop_plays_every_env_one_row_per_step(name, tiny_policy, request):
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput

    env_id, env_kwargs = ENVS[name]
    if name == "alfworld":
        env_kwargs = {**env_kwargs, "data_dir": request.getfixturevalue("alfworld_suite")}
    if name == "webshop":
        pytest.importorskip("bm25s")
    split = "test" if name == "webshop" else "train"
    # ALFWorld's parser is not thread-safe: its envs step in an env process
    config = verl_config(["opid_rollout.env_workers=1"] if name == "alfworld" else [])
    episodes = play(tiny_policy, config, env_id, env_kwargs, split=split)
    if name == "alfworld":  # the reference's prompt, as the parity preset says for a pretrained policy
        assert "operating in the ALFRED Embodied Environment" in episodes[0][0].extra_fields["opid"]["prompt"]
    for session, outputs in enumerate(episodes):
        assert outputs and all(isinstance(o, AgentLoopOutput) for o in outputs)
        check_episode(outputs, env_id, env_kwargs, session, tiny_policy, config.data.max_prompt_length, split=split)
        row = outputs[0].as_dict()  # verl's own conversion to a training row
        assert row["responses"].tolist() == outputs[0].response_ids and row["rm_scores"][-1] == outputs[0].reward_score


def test_an_over_long_prompt_is_cut_as_the_local_policy_cuts_it(tiny_policy, monkeypatch):
    """Head (the task) and tail (the current state) kept, by the one shared rule, on both backends."""
    text = "Your task is to: open the door. " + "You see a wall. " * 150 + "Now you see a key."
    full = tiny_policy.encode_prompt(text)
    assert len(full) > 40

    async def encode():
        return await agent_loop(tiny_policy, verl_config(["data.max_prompt_length=40"])).encode(text)

    ids = asyncio.run(encode())
    assert ids == full[:20] + full[-20:]
    monkeypatch.setattr(tiny_policy, "max_prompt_tokens", 40)
    assert tiny_policy.encode_prompt(text) == ids


@pytest.mark.slow
def test_history_window_comes_from_the_preset(tiny_policy):
    (outputs,) = play(tiny_policy, verl_config(["opid.history_k=1"]), EXPERT_ID, {"max_steps": 4}, sessions=(0,))
    assert len(outputs) >= 3
    assert all(len(o.extra_fields["opid"]["context"]["history"]) <= 1 for o in outputs)
    assert len(outputs[2].extra_fields["opid"]["context"]["history"]) == 1


def test_rows_carry_the_weight_version_the_server_reported(tiny_policy):
    """verl's v1 worker tags each row with `extra_fields` min/max_global_steps (the weight versions its
    server generated with) and verl's `_compute_metrics` reads them as ints: rows without them fail there."""
    server = TinyServer(tiny_policy)
    server.global_steps = 3
    (outputs,) = play(tiny_policy, verl_config(), EXPERT_ID, {"max_steps": 2}, sessions=(0,), server=server)
    assert outputs
    for out in outputs:
        assert out.extra_fields["min_global_steps"] == 3 and out.extra_fields["max_global_steps"] == 3
        assert out.extra_fields["opid"]["t"] >= 0  # the record is still there


class BlockingKeyDoor(KeyDoorEnv):
    """Task 0's first step blocks until the server has answered a third request."""

    released = threading.Event()

    def step(self, action):
        if self._info["task_id"] == 0 and self._steps == 0 and not self.released.wait(timeout=20):
            raise TimeoutError("the blocked step was never released: generation stalled behind it")
        return super().step(action)


BLOCKING_ID = "OPIDTest/BlockingKeyDoor-v0"
if BLOCKING_ID not in gym.registry:
    gym.register(id=BLOCKING_ID, entry_point="tests.verl.test_verl_agent_loop:BlockingKeyDoor")


def test_a_blocking_env_step_does_not_stall_other_episodes(tiny_policy):
    """Episode A's first step waits for a generate call that only episode B's second turn makes: with env
    steps on the event loop this deadlocks (the wait times out); off the loop B keeps generating."""
    BlockingKeyDoor.released.clear()
    server = TinyServer(tiny_policy)
    server.on_call = lambda n: n >= 3 and BlockingKeyDoor.released.set()
    config = verl_config()

    async def both():
        loop = agent_loop(tiny_policy, config, server)
        common = dict(env_id=BLOCKING_ID, env_kwargs=json.dumps({"max_steps": 3}), split="train", seed=0,
                      uid="u", session_id=0, raw_prompt=[])
        params = {"temperature": 1.0, "logprobs": True}
        return await asyncio.gather(loop.run(dict(params), task_id=0, **common), loop.run(dict(params), task_id=1, **common))

    try:
        a, b = asyncio.run(both())
    finally:
        close_all()
    assert len(a) >= 1 and len(b) >= 2


@pytest.mark.slow
def test_env_processes_play_the_same_episodes_as_threads(tiny_policy):
    episodes = {}
    for workers in (0, 2):
        config = verl_config([f"opid_rollout.env_workers={workers}", "opid_rollout.env_slots=2"])
        episodes[workers] = play(tiny_policy, config, EXPERT_ID, {"max_steps": 4}, temperature=0)
    strip = lambda eps: [[(o.prompt_ids, o.response_ids, o.extra_fields["opid"]) for o in ep] for ep in eps]  # noqa: E731
    assert strip(episodes[0]) == strip(episodes[2])
