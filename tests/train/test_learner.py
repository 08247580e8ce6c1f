"""The learner's PPO step against hand-computed values, and a resumed learner's optimizer state."""

import copy
import math

import pytest
import torch

from opid_train.algorithms.base import PrepareContext
from opid_train.algorithms.grpo import GRPO
from opid_train.config import TrainConfig
from opid_train.learner import Learner, load_newest_checkpoint, make_batch
from opid_train.policy.presets import TinyConfig, hf_policy, tiny_policy
from opid_train.types import Step, Trajectory
from wrappers import PromptContext, PromptTemplate

HALF = math.log(0.5)


class DirectLogProbs(torch.nn.Module):
    """A stand-in policy in a unit test of the learner: row k's token log-probs are the parameters
    `table[k]` (the row is named by its prompt id), so loss and gradient can be worked out by hand."""

    device = torch.device("cpu")

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table).log())

    def logprobs(self, prompt_ids, response_ids, response_mask):
        return self.table[[ids[0] for ids in prompt_ids]] * response_mask


def one_step_trajectory(row, score, prompt="p"):
    ctx = PromptContext(task="t", history=(), observation="o", admissible_actions=None, step=0)
    step = Step(t=0, observation="o", context=ctx, prompt=prompt, response="r", action="a", reward=score,
                format_valid=True, action_valid=True, prompt_ids=[row], response_ids=[5, 5], old_logprobs=[HALF, HALF])
    return Trajectory(env_id="x", split="train", task="t", task_id=0, task_type="k", group_id=0, traj_id=row,
                      steps=[step], score=score, won=score == 1.0)


def learner_config(clip_eps):
    cfg = TrainConfig(lr=0.01, weight_decay=0.0, ppo_epochs=1, minibatch_size=8, micro_batch_size=8, max_grad_norm=10.0)
    cfg.grpo.normalize_std, cfg.grpo.clip_eps, cfg.grpo.kl_coef = False, clip_eps, 0.0
    cfg.grpo.invalid_format_penalty, cfg.grpo.invalid_action_penalty, cfg.grpo.loss_agg = 0.0, 0.0, "token-mean"
    return cfg


@pytest.mark.parametrize("clip_eps, pg_loss, clipped_grads", [
    # A = +0.5 (won) / -0.5 (lost), two tokens each, old probs 0.5 -> ratios 1.5, 1.1 | 0.5, 0.9.
    # eps 0.2: token losses max(-A r, -A clip(r)) = -0.6 (clip 1.2), -0.55 | 0.4 (clip 0.8), 0.45; mean -0.075
    (0.2, (-0.6 - 0.55 + 0.4 + 0.45) / 4, True),
    # eps 0.3: -0.65 (clip 1.3), -0.55 | 0.35 (clip 0.7), 0.45; mean -0.1
    (0.3, (-0.65 - 0.55 + 0.35 + 0.45) / 4, True),
    # eps 1e9: nothing clipped: -0.75, -0.55 | 0.25, 0.45; mean -0.15
    (1e9, (-0.75 - 0.55 + 0.25 + 0.45) / 4, False),
])
def test_update_uses_the_configured_clip_range(tmp_path, clip_eps, pg_loss, clipped_grads):
    policy = DirectLogProbs([[0.75, 0.55], [0.25, 0.45]])
    before = policy.table.detach().clone()
    learner = Learner(policy, GRPO(learner_config(clip_eps)), learner_config(clip_eps))
    batch = make_batch([one_step_trajectory(0, 1.0), one_step_trajectory(1, 0.0)])
    metrics = learner.update(batch, PrepareContext(policy=policy, template=PromptTemplate(), run_dir=tmp_path, update=0))
    assert metrics["pg_loss"] == pytest.approx(pg_loss, abs=1e-6)
    # d(token loss / 4)/d logp = -A r / 4 where unclipped, 0 where clipped
    grads = [-0.5 * 1.1 / 4, 0.5 * 0.9 / 4] + ([] if clipped_grads else [-0.5 * 1.5 / 4, 0.5 * 0.5 / 4])
    assert metrics["grad_norm"] == pytest.approx(math.sqrt(sum(g * g for g in grads)), rel=1e-5)
    assert metrics["pg_clipfrac"] == pytest.approx(0.5 if clipped_grads else 0.0)
    # Adam's first step moves every parameter with a gradient by lr against its sign, the others not at all
    moved = policy.table.detach() - before
    torch.testing.assert_close(moved[:, 1], torch.tensor([0.01, -0.01]), atol=1e-7, rtol=0)
    want_first = torch.zeros(2) if clipped_grads else torch.tensor([0.01, -0.01])
    torch.testing.assert_close(moved[:, 0], want_first, atol=1e-7, rtol=0)


@pytest.mark.parametrize("clip_ratio_c, pg_loss, lower", [
    # the lost row's first token has ratio 4 (the stand-in's "probability" 2 over 0.5): its loss
    # max(-A r, -A clip(r)) = 2 is capped at -A * 3 = 1.5 with dual clip; the other tokens as above
    (3.0, (-0.6 - 0.55 + 1.5 + 0.45) / 4, 0.25),
    (0, (-0.6 - 0.55 + 2.0 + 0.45) / 4, None),
])
def test_update_uses_the_configured_dual_clip(tmp_path, clip_ratio_c, pg_loss, lower):
    policy = DirectLogProbs([[0.75, 0.55], [2.0, 0.45]])
    cfg = learner_config(0.2)
    cfg.grpo.clip_ratio_c = clip_ratio_c
    metrics = Learner(policy, GRPO(cfg), cfg).update(
        make_batch([one_step_trajectory(0, 1.0), one_step_trajectory(1, 0.0)]),
        PrepareContext(policy=policy, template=PromptTemplate(), run_dir=tmp_path, update=0))
    assert metrics["pg_loss"] == pytest.approx(pg_loss, abs=1e-6)
    assert metrics.get("pg_clipfrac_lower") == lower  # reported only with dual clip on
    grads = [-0.5 * 1.1 / 4, 0.5 * 0.9 / 4] + ([] if lower else [0.5 * 4 / 4])  # the capped token: no gradient
    assert metrics["grad_norm"] == pytest.approx(math.sqrt(sum(g * g for g in grads)), rel=1e-5)


@pytest.mark.parametrize("loss_agg", ["token-mean", "traj-mean"])
def test_gradient_accumulation_does_not_change_the_step(tmp_path, loss_agg):
    """One micro-batch of all rows or one row at a time: the same loss and gradient (found by mutation
    testing: masked_mean's clamp(min=1) vs clamp(min=2) survived)."""
    def two_steps(row, score):  # rows 2k and 2k + 1 of the table
        traj = one_step_trajectory(2 * row, score)
        second = copy.deepcopy(traj.steps[0])
        second.t, second.prompt_ids = 1, [2 * row + 1]
        traj.steps.append(second)
        return traj

    metrics = []
    for micro in (8, 1):
        cfg = learner_config(0.2)
        cfg.grpo.loss_agg, cfg.micro_batch_size = loss_agg, micro
        policy = DirectLogProbs([[0.75, 0.55], [0.6, 0.5], [0.25, 0.45], [0.4, 0.5]])
        batch = make_batch([two_steps(0, 1.0), two_steps(1, 0.0)])
        metrics.append(Learner(policy, GRPO(cfg), cfg).update(
            batch, PrepareContext(policy=policy, template=PromptTemplate(), run_dir=tmp_path, update=0)))
    assert metrics[1]["pg_loss"] == pytest.approx(metrics[0]["pg_loss"], rel=1e-5)
    assert metrics[1]["grad_norm"] == pytest.approx(metrics[0]["grad_norm"], rel=1e-5)


def test_resumed_learner_restores_the_optimizer_and_takes_the_same_step(tmp_path, monkeypatch):
    """Checkpoint after update 0, resume in a new learner: update 1 gives the uninterrupted run's
    weights; the same resume without the optimizer state (Adam's moments) does not."""
    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    prompts = ["Your task is to: open the door. You are in cell 0.", "Your task is to: take the key. Cell 3."]
    policy = tiny_policy([p + " <action>go right</action>" for p in prompts] * 4, seed=0,
                         config=TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                           vocab_size=300))
    trajectories = []
    for k, gen in enumerate(policy.generate(prompts * 2, max_new_tokens=4, seed=1)):
        traj = one_step_trajectory(k, score=[1.0, 1.0, 0.0, 0.0][k], prompt=prompts[k % 2])
        traj.group_id = k % 2  # two groups of two, each with a success and a failure
        traj.steps[0].prompt_ids, traj.steps[0].response_ids = gen.prompt_ids, gen.response_ids
        traj.steps[0].old_logprobs = gen.logprobs
        trajectories.append(traj)
    cfg = learner_config(0.2)

    def update(learner, k):
        ctx = PrepareContext(policy=learner.policy, template=PromptTemplate(), run_dir=tmp_path, update=k)
        learner.update(make_batch(copy.deepcopy(trajectories)), ctx)
        return torch.cat([p.detach().flatten() for p in learner.policy.parameters()])

    straight = Learner(policy, GRPO(cfg), cfg)
    update(straight, 0)
    straight.save_checkpoint(tmp_path, 1)
    want = update(straight, 1)

    state = load_newest_checkpoint(tmp_path, lambda folder: hf_policy(folder, device="cpu"), log=lambda _: None)
    checkpoint = state.folder
    resumed = Learner(state.policy, GRPO(cfg), cfg)
    resumed.optimizer.load_state_dict(state.optimizer_state)
    torch.testing.assert_close(update(resumed, 1), want, atol=1e-6, rtol=1e-5)

    fresh_optimizer = Learner(hf_policy(checkpoint / "model", device="cpu"), GRPO(cfg), cfg)
    assert (update(fresh_optimizer, 1) - want).abs().max() > 1e-4


class Crash(Exception):
    pass


@pytest.mark.slow
def test_training_resumed_after_a_crash_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch):
    """In process: a run that dies in its second update and is resumed from its first checkpoint ends
    with the same weights as a run that was never interrupted (model, optimizer and draws restored)."""
    import tests.train.toy_expert  # noqa: F401  (registers the toy env with an expert)
    from opid_train.cli import train as train_cli
    from opid_train.config import TrainConfig, WarmstartConfig

    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))

    def config(name):
        return TrainConfig(env=tests.train.toy_expert.EXPERT_ID, env_kwargs={"max_steps": 8}, updates=2,
                           tasks_per_update=2, group_size=2, max_new_tokens=6, lr=1e-2, run_dir=str(tmp_path / name),
                           tiny=TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                           vocab_size=400),
                           warmstart=WarmstartConfig(episodes=2, epochs=1), progress=False, tensorboard=False)

    quiet = lambda *_: None  # noqa: E731
    straight = train_cli.train(config("straight"), log=quiet)
    own_update = Learner.update

    def dies_in_update_1(self, batch, ctx):
        if ctx.update == 1:
            raise Crash
        return own_update(self, batch, ctx)

    monkeypatch.setattr(Learner, "update", dies_in_update_1)
    with pytest.raises(Crash):
        train_cli.train(config("crashed"), log=quiet)
    monkeypatch.setattr(Learner, "update", own_update)
    resumed = train_cli.train(config("crashed"), resume=True, log=quiet)

    from safetensors.torch import load_file

    weights = [load_file(str(run / "final" / "model.safetensors")) for run in (straight, resumed)]
    first = load_file(str(straight / "checkpoints" / "update_00001" / "model" / "model.safetensors"))
    assert any(not torch.equal(weights[0][k], first[k]) for k in first)  # update 1 changed the weights
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], atol=0, rtol=0)
