"""The tiny HF policy and the batched collector on the toy env (fast, in process)."""

import math
import time

import pytest

import torch

import tests.train.toy_expert  # noqa: F401  (registers OPIDTest/KeyDoorExpert-v0)
from opid_train.learner import make_batch
from opid_train.policy import load_policy
from opid_train.policy.presets import TinyConfig
from opid_train.rollout import EnvPool, ProcessEnvPool, collect
from opid_train.warmstart import collect_demos, format_action
from tests.train.toy_expert import EXPERT_ID
from wrappers import ACTION_FORMAT, SEARCH_FORMAT

TINY = TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=400)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    import os

    os.environ.setdefault("OPID_CACHE", str(tmp_path_factory.mktemp("cache")))
    pool = EnvPool(EXPERT_ID, 4)
    demos, won = collect_demos(pool, [("train", i) for i in range(5)], seed=0, progress=False)
    assert won == 5 and demos
    return load_policy("tiny", texts=[d.prompt + d.response for d in demos], seed=0, tiny=TINY)


def test_generation_logprobs_match_scoring_and_seed_reproduces(policy):
    prompts = ["Your task is to: open the door", "Current observation: cell 2", "x"]
    a = policy.generate(prompts, max_new_tokens=6, seed=3)
    b = policy.generate(prompts, max_new_tokens=6, seed=3)
    assert [g.response_ids for g in a] == [g.response_ids for g in b]
    width = max(len(g.response_ids) for g in a)
    ids = torch.zeros(len(a), width, dtype=torch.long)
    mask = torch.zeros(len(a), width)
    for i, g in enumerate(a):
        ids[i, : len(g.response_ids)] = torch.tensor(g.response_ids)
        mask[i, : len(g.response_ids)] = 1
    scored = policy.score([g.prompt_ids for g in a], ids, mask)
    sampled = torch.zeros_like(scored)
    for i, g in enumerate(a):
        sampled[i, : len(g.logprobs)] = torch.tensor(g.logprobs)
    assert torch.allclose(scored, sampled, atol=1e-4)
    assert (scored[mask == 0] == 0).all()


def test_batched_greedy_equals_one_prompt_at_a_time(policy):
    prompts = ["Your task is to: open the door", "Current observation: you are in cell 3 of a corridor."]
    batched = policy.generate(prompts, max_new_tokens=5, greedy=True)
    for prompt, g in zip(prompts, batched):
        alone = policy.generate([prompt], max_new_tokens=5, greedy=True)[0]
        assert alone.response_ids == g.response_ids


class CountingPolicy:
    """Wraps a policy to count generate calls (the collector must batch every turn)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def generate(self, prompts, **kw):
        self.calls.append(len(prompts))
        return self.inner.generate(prompts, **kw)


def test_collect_groups_share_tasks_and_one_generate_call_per_turn(policy):
    pool = EnvPool(EXPERT_ID, 6, {"max_steps": 4})
    counting = CountingPolicy(policy)
    trajs = collect(counting, pool, [("train", 1), ("train", 3)], 3, seed=5, max_new_tokens=6, progress=False)
    assert [t.group_id for t in trajs] == [0, 0, 0, 1, 1, 1]
    assert [t.task_id for t in trajs] == [1, 1, 1, 3, 3, 3]
    longest = max(len(t.steps) for t in trajs)
    assert len(counting.calls) == longest  # one call per turn, for every live env at once
    assert counting.calls[0] == 6
    for t in trajs:
        assert all(len(s.response_ids) == len(s.old_logprobs) > 0 for s in t.steps)
        assert t.steps[0].context.task == "take the key and open the door"
    batch = make_batch(trajs)
    assert len(batch) == sum(len(t.steps) for t in trajs)
    again = collect(policy, pool, [("train", 1), ("train", 3)], 3, seed=5, max_new_tokens=6, progress=False)
    assert [[s.response for s in t.steps] for t in again] == [[s.response for s in t.steps] for t in trajs]


@pytest.mark.slow  # worker processes, each importing the stack
def test_process_pool_gives_the_same_trajectories(policy):
    tasks = [("train", 0), ("train", 2)]
    local = collect(policy, EnvPool(EXPERT_ID, 4, {"max_steps": 3}), tasks, 2, seed=9, max_new_tokens=6, progress=False)
    pool = ProcessEnvPool(EXPERT_ID, 4, {"max_steps": 3}, workers=2)
    try:
        remote = collect(policy, pool, tasks, 2, seed=9, max_new_tokens=6, progress=False)
        assert pool.num_tasks("test") == 3
    finally:
        pool.close()
    assert [[(s.prompt, s.response, s.reward) for s in t.steps] for t in remote] == \
           [[(s.prompt, s.response, s.reward) for s in t.steps] for t in local]


def test_collect_rejects_more_rollouts_than_envs(policy):
    with pytest.raises(ValueError, match="need 6 envs"):
        collect(policy, EnvPool(EXPERT_ID, 2), [("train", 0), ("train", 1)], 3, seed=0, max_new_tokens=4, progress=False)


def test_format_action_wraps_plain_actions_only():
    assert format_action("go left", ACTION_FORMAT) == "<action>go left</action>"
    assert format_action("<search> who </search>", SEARCH_FORMAT) == "<search> who </search>"
    assert ACTION_FORMAT.parse(format_action("take key", ACTION_FORMAT)).action == "take key"


def test_a_cache_folder_built_twice_at_once_keeps_the_first_copy(tmp_path):
    from opid_train.policy.presets import publish

    folder = tmp_path / "bpe"
    for writer in ("first", "second"):  # two processes finished the same tokenizer
        tmp = tmp_path / f"bpe.tmp-{writer}"
        tmp.mkdir()
        (tmp / "tokenizer.json").write_text(writer)
        publish(tmp, folder)
        assert not tmp.exists()
    assert (folder / "tokenizer.json").read_text() == "first"


def test_behaviour_cloning_fits_the_untempered_model_whatever_the_sampling_temperature():
    from opid_train.warmstart import behaviour_clone

    pool = EnvPool(EXPERT_ID, 2)
    demos, _ = collect_demos(pool, [("train", i) for i in range(3)], seed=0, progress=False)
    texts = [d.prompt + d.response for d in demos]
    weights = []
    for temperature in (1.0, 0.4):
        p = load_policy("tiny", texts=texts, seed=0, tiny=TINY, temperature=temperature)
        behaviour_clone(p, demos, epochs=2, lr=1e-2, batch_size=4, seed=0, progress=False)
        assert p.temperature == temperature  # restored after cloning: rollouts still sample at it
        weights.append(torch.cat([w.detach().flatten() for w in p.parameters()]))
    assert torch.equal(weights[0], weights[1])
    with p.at_temperature(0.7):
        assert p.temperature == 0.7
    assert p.temperature == 0.4


def test_behaviour_cloning_in_micro_batches_takes_the_same_steps():
    from opid_train.warmstart import behaviour_clone

    pool = EnvPool(EXPERT_ID, 2)
    demos, _ = collect_demos(pool, [("train", i) for i in range(3)], seed=0, progress=False)
    texts = [d.prompt + d.response for d in demos]
    weights, losses = [], []
    for micro in (None, 3):  # a batch of 8 in one pass, then as 3 + 3 + 2 with accumulated gradients
        p = load_policy("tiny", texts=texts, seed=0, tiny=TINY)
        rows = []
        own_logprobs = p.logprobs
        p.logprobs = lambda ids, r, m: rows.append([len(x) for x in ids]) or own_logprobs(ids, r, m)
        began, epochs_seen = time.monotonic(), []
        out = behaviour_clone(p, demos, epochs=2, lr=1e-2, batch_size=8, seed=0, micro_batch_size=micro, progress=False,
                              on_epoch=lambda *report: epochs_seen.append(report))
        assert 0 < out["bc_seconds"] <= time.monotonic() - began  # the clock the time cap reads
        assert [e for e, _, _ in epochs_seen] == [0, 1] and epochs_seen[-1][1] == out["bc_loss"]  # progress without bars
        assert max(map(len, rows)) == (8 if micro is None else 3)
        if micro is None:
            batch_sizes = list(map(len, rows))  # one call per batch: 8 rows, the last of an epoch maybe fewer
        else:  # longest prompts first within each batch, so micro-batches pad little
            calls, per_batch = iter(rows), []
            for size in batch_sizes:
                per_batch.append(sum((next(calls) for _ in range(math.ceil(size / micro))), []))
            assert next(calls, None) is None
            assert all(lengths == sorted(lengths, reverse=True) for lengths in per_batch)
            assert any(len(set(lengths)) > 1 for lengths in per_batch)  # not a vacuous order: lengths differ
        weights.append(torch.cat([w.detach().flatten() for w in p.parameters()]))
        losses.append(out["bc_loss"])
    assert torch.allclose(weights[0], weights[1], atol=1e-5, rtol=1e-4)
    assert abs(losses[0] - losses[1]) < 1e-4


def test_update_skips_rows_without_loss_and_takes_the_same_step(policy, tmp_path):
    import copy

    from opid_train.algorithms import PrepareContext
    from opid_train.algorithms.grpo import GRPO
    from opid_train.config import TrainConfig
    from opid_train.learner import Learner

    class EveryRow(GRPO):
        has_extra_loss = True  # the learner then runs every row, as it must with an extra loss

    pool = EnvPool(EXPERT_ID, 6, {"max_steps": 4})
    trajs = collect(policy, pool, [("train", 1), ("train", 3)], 3, seed=5, max_new_tokens=6, progress=False)
    for t in trajs:
        t.score = 0.0
    trajs[0].score = 1.0  # group 0 has two outcomes; group 1 one: no signal, zero advantage
    cfg = TrainConfig(minibatch_size=256, micro_batch_size=2)
    cfg.grpo.kl_coef, cfg.grpo.invalid_format_penalty = 0.0, 0.0
    runs = []
    for algorithm in (GRPO(cfg), EveryRow(cfg)):
        p = copy.deepcopy(policy)
        rows, grads = [], []
        own_logprobs = p.logprobs
        p.logprobs = lambda ids, r, m: rows.append(len(ids)) or own_logprobs(ids, r, m)
        learner = Learner(p, algorithm, cfg)
        own_step = learner.optimizer.step
        learner.optimizer.step = lambda: grads.append([w.grad.clone() for w in p.parameters()]) or own_step()
        learner.update(make_batch(trajs), PrepareContext(policy=p, template=pool.config.template, run_dir=tmp_path, update=0))
        runs.append((sum(rows), grads))
    (skipping_rows, skipping_grads), (all_rows, all_grads) = runs
    assert all_rows == len(make_batch(trajs))
    assert skipping_rows == sum(len(t.steps) for t in trajs[:3])  # group 1's rows were not run
    assert len(skipping_grads) == len(all_grads) == 1
    assert any(g.abs().sum() > 0 for g in all_grads[0])
    for a, b in zip(skipping_grads[0], all_grads[0]):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-4)


def test_trajectories_carry_the_envs_task_type(policy):
    import opid_envs  # noqa: F401  (registers OPID/SearchQA-v0)

    pool = EnvPool("OPID/SearchQA-v0", 3)
    trajs = collect(policy, pool, [("test", 0), ("test", 150), ("test", 300)], 1, seed=0, max_new_tokens=4,
                    progress=False)
    # the synthetic set's hop types (its data source, "synthetic", would hide them), as the env reports them
    wanted = [pool.reset([k], [0], [{"split": "test", "task_id": t}])[0].info["task_type"]
              for k, t in enumerate((0, 150, 300))]
    assert [t.task_type for t in trajs] == wanted and set(wanted) <= {"1-hop", "bridge", "comparison"}
    pool.close()


class RecordingPolicy:
    """Wraps a policy to record how each generate call was made (batch size, greedy, temperature, tokens)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def at_temperature(self, temperature):
        return self.inner.at_temperature(temperature)

    def generate(self, prompts, **kw):
        self.calls.append((len(prompts), kw["greedy"], self.inner.temperature, kw["max_new_tokens"]))
        return self.inner.generate(prompts, **kw)


def test_evaluate_plays_the_chosen_tasks_in_pool_sized_chunks(policy, capfd):
    from opid_train.evaluate import evaluate

    own = policy.temperature
    pool = EnvPool(EXPERT_ID, 4, {"max_steps": 2})
    greedy = RecordingPolicy(policy)
    # every test task (3), once each: greedy episodes would repeat each other, so `samples` is for sampling only
    trajs = evaluate(greedy, pool, "test", samples=2, max_new_tokens=5, progress=False)
    assert [(t.split, t.task_id, t.group_id) for t in trajs] == [("test", 0, 0), ("test", 1, 1), ("test", 2, 2)]
    assert {c[1:] for c in greedy.calls} == {(True, own, 5)} and greedy.calls[0][0] == 3
    sampled = RecordingPolicy(policy)
    trajs = evaluate(sampled, pool, "train", episodes=3, greedy=False, samples=2, temperature=0.5, seed=1,
                     max_new_tokens=6, progress=False)
    # tasks 0, 1, 3 spread over the 5 train tasks, 2 samples each: 4 envs hold two tasks, so two chunks
    assert [(t.task_id, t.group_id) for t in trajs] == [(0, 0), (0, 0), (1, 1), (1, 1), (3, 2), (3, 2)]
    assert sampled.calls[0][0] == 4 and {c[1:] for c in sampled.calls} == {(False, 0.5, 6)}
    assert policy.temperature == own  # restored after the evaluation
    again = evaluate(policy, pool, "train", episodes=3, greedy=False, samples=2, temperature=0.5, seed=1,
                     max_new_tokens=6, progress=False)
    assert [[s.response for s in t.steps] for t in again] == [[s.response for s in t.steps] for t in trajs]
    capfd.readouterr()
    defaults = RecordingPolicy(policy)  # sampled, once per task, seed 0, 24 new tokens, a progress bar
    trajs = evaluate(defaults, pool, "test", greedy=False, temperature=0.5)
    assert [t.task_id for t in trajs] == [0, 1, 2] and {c[1:] for c in defaults.calls} == {(False, 0.5, 24)}
    assert "eval test" in capfd.readouterr().err
    seeded = evaluate(policy, pool, "test", greedy=False, temperature=0.5, seed=0, progress=False)
    assert [[s.response for s in t.steps] for t in seeded] == [[s.response for s in t.steps] for t in trajs]


def test_evaluate_samples_by_its_seed_and_prints_nothing_without_progress(policy, capfd):
    """A sampled evaluation is the seed's: another seed draws other responses (the same seed the same
    ones, above); `progress=False` keeps stderr clean for logs and scripts."""
    from opid_train.evaluate import evaluate

    pool = EnvPool(EXPERT_ID, 4, {"max_steps": 2})
    capfd.readouterr()
    runs = [evaluate(policy, pool, "train", episodes=3, greedy=False, samples=2, temperature=1.0, seed=seed,
                     max_new_tokens=6, progress=False) for seed in (0, 1)]
    assert [[s.response for s in t.steps] for t in runs[0]] != [[s.response for s in t.steps] for t in runs[1]]
    assert "eval train" not in capfd.readouterr().err


def test_evaluate_draws_each_chunk_from_its_own_seed(policy):
    """Tasks are independent evidence (the task-level test counts them so): a chunk of tasks does not
    replay another chunk's random draws. In a 7-cell corridor every train task starts the same (the key
    at cell 0), so chunks [0, 1] and [2, 3] see the same prompts, and only their seeds tell them apart."""
    from opid_train.evaluate import evaluate

    pool = EnvPool(EXPERT_ID, 4, {"max_steps": 2, "length": 7})
    trajs = evaluate(policy, pool, "train", episodes=4, greedy=False, samples=2, temperature=1.0, max_new_tokens=6,
                     progress=False)
    assert len({t.steps[0].prompt for t in trajs}) == 1 and [t.group_id for t in trajs] == [0, 0, 1, 1, 2, 2, 3, 3]
    first, second = ([[s.response for s in t.steps] for t in trajs[i:i + 4]] for i in (0, 4))
    assert first != second


def test_evaluate_with_fewer_envs_than_a_tasks_samples_twice_plays_one_task_at_a_time(policy):
    from opid_train.evaluate import evaluate

    small = RecordingPolicy(policy)
    trajs = evaluate(small, EnvPool(EXPERT_ID, 3, {"max_steps": 2}), "train", episodes=2, greedy=False, samples=2,
                     temperature=0.5, max_new_tokens=5, progress=False)
    assert [(t.task_id, t.group_id) for t in trajs] == [(0, 0), (0, 0), (2, 1), (2, 1)]
    assert max(c[0] for c in small.calls) == 2  # one task's two samples per generate call


@pytest.mark.parametrize("warmstart_micro, expected", [(None, 5), (2, 2)])
def test_warm_start_runs_its_own_micro_batch_size(tmp_path, monkeypatch, warmstart_micro, expected):
    """`warmstart.micro_batch_size` sets BC's micro-batches; unset, BC takes the run's."""
    from opid_train.cli import train as train_cli
    from opid_train.config import TrainConfig, WarmstartConfig

    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    seen = []
    own_clone = train_cli.behaviour_clone
    monkeypatch.setattr(train_cli, "behaviour_clone", lambda *a, **kw: seen.append(kw["micro_batch_size"]) or own_clone(*a, **kw))
    cfg = TrainConfig(env=EXPERT_ID, policy="tiny", tiny=TINY, micro_batch_size=5, progress=False,
                      warmstart=WarmstartConfig(episodes=2, epochs=1, micro_batch_size=warmstart_micro))
    pool = EnvPool(EXPERT_ID, 2)
    train_cli.initial_policy(cfg, pool, tmp_path, log=lambda *_: None)
    assert seen == [expected]
