"""The learner's PPO step against hand-computed values, and a resumed learner's optimizer state."""

import copy
import math

import pytest
import torch

from opid_train.algorithms.base import Algorithm, PrepareContext
from opid_train.algorithms.grpo import GRPO, masked_mean
from opid_train.config import TrainConfig
from opid_train.learner import Learner, chunks, load_newest_checkpoint, make_batch, score_in_chunks, token_weights
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

    def score(self, prompt_ids, response_ids, response_mask):
        with torch.no_grad():
            return self.logprobs(prompt_ids, response_ids, response_mask)


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


# -- the update worked out by hand: advantages chosen per row, every old probability 0.5 ----------

class FixedAdvantages(Algorithm):
    """A stand-in algorithm in a unit test of the learner: row r's advantage is `per_row[r]` on each of its
    tokens, so the learner's part of the loss (weights, normalisation, KL, steps) can be worked out by hand."""

    name = "fixed"

    def __init__(self, per_row):
        self.per_row = per_row

    def prepare(self, batch, ctx):
        batch.advantages = torch.tensor(self.per_row, dtype=torch.float32)[:, None] * batch.response_mask
        return {"fixed/rows": float(len(batch)), "fixed/update": float(ctx.update)}


class WithExtraLoss(FixedAdvantages):
    """Adds `coef` x the weighted mean log-prob of the micro-batch, as an algorithm's extra term (SDAR's)."""

    has_extra_loss = True
    coef = -0.5

    def extra_loss(self, batch, logp):
        term = self.coef * masked_mean(logp, batch.extras["token_weight"])
        return term, {"extra/term": term.item()}


def trajectory(traj_id, steps, group=0):
    """`steps`: (the row's table index, response tokens) per step; each token's old probability is 0.5."""
    ctx = PromptContext(task="t", history=(), observation="o", admissible_actions=None, step=0)
    return Trajectory(env_id="x", split="train", task="t", task_id=0, task_type="k", group_id=group, traj_id=traj_id,
                      steps=[Step(t=t, observation="o", context=ctx, prompt="p", response="r", action="a", reward=0.0,
                                  format_valid=True, action_valid=True, prompt_ids=[row], response_ids=[5] * n,
                                  old_logprobs=[HALF] * n) for t, (row, n) in enumerate(steps)])


def run_update(policy, algorithm, cfg, batch, tmp_path, update=0, reference=None):
    """The learner's update, with the gradient of each optimizer step and the table rows of each forward pass."""
    learner = Learner(policy, algorithm, cfg, reference)
    grads, calls = [], []
    own_step, own_logprobs = learner.optimizer.step, policy.logprobs
    learner.optimizer.step = lambda: grads.append(policy.table.grad.clone()) or own_step()
    policy.logprobs = lambda ids, r, m: calls.append([i[0] for i in ids]) or own_logprobs(ids, r, m)
    metrics = learner.update(batch, PrepareContext(policy=policy, template=PromptTemplate(), run_dir=tmp_path,
                                                   update=update))
    return metrics, grads, calls


# rows 0 (2 tokens, A = +1) | 1, 2 (one trajectory: 1 and 3 tokens, A = -1/4) | 3 (2 tokens, A = 0)
FOUR_ROWS = ([trajectory(0, [(0, 2)]), trajectory(1, [(1, 1), (2, 3)]), trajectory(2, [(3, 2)])], [1.0, -0.25, -0.25, 0.0])


@pytest.mark.parametrize("micro", [8, 1])
@pytest.mark.parametrize("loss_agg, pg_loss, grad", [
    # all ratios 1, so a token's loss is -A and its gradient -A w / W (W: the minibatch's total weight)
    # token-mean: w = 1, W = 8 tokens; loss (2 x -1 + 4 x 1/4) / 8
    ("token-mean", -1 / 8, [[-1 / 8, -1 / 8, 0], [1 / 32, 0, 0], [1 / 32] * 3, [0, 0, 0]]),
    # traj-mean: w = 1 / (the trajectory's tokens): 1/2, 1/4, 1/2; W = 3 trajectories; loss (-1 + 1/4) / 3
    ("traj-mean", -1 / 4, [[-1 / 6, -1 / 6, 0], [1 / 48, 0, 0], [1 / 48] * 3, [0, 0, 0]]),
])
def test_update_gradient_by_hand_whatever_the_micro_batches(tmp_path, micro, loss_agg, pg_loss, grad):
    """The zero-advantage row is not run (no KL, no extra loss), but its tokens still count in W."""
    trajectories, advantages = FOUR_ROWS
    cfg = learner_config(0.2)
    cfg.grpo.loss_agg, cfg.micro_batch_size = loss_agg, micro
    policy = DirectLogProbs([[0.5] * 3] * 4)
    metrics, grads, calls = run_update(policy, FixedAdvantages(advantages), cfg, make_batch(copy.deepcopy(trajectories)),
                                       tmp_path)
    assert len(grads) == 1
    torch.testing.assert_close(grads[0], torch.tensor(grad), atol=1e-7, rtol=1e-6)
    assert sorted(sum(calls, [])) == [0, 1, 2] and max(map(len, calls)) == min(micro, 3)
    assert metrics["pg_loss"] == pytest.approx(pg_loss, abs=1e-7)
    assert metrics["loss"] == pytest.approx(pg_loss, abs=1e-7)
    assert metrics["grad_norm"] == pytest.approx(torch.tensor(grad).norm().item(), rel=1e-6)
    assert metrics["fixed/rows"] == 4.0 and "kl" not in metrics  # the algorithm's own metrics, passed on
    assert metrics["fixed/update"] == 0.0  # prepare had the update's context


@pytest.mark.parametrize("loss_agg", ["token-mean", "traj-mean"])
def test_each_minibatch_is_normalised_by_its_own_weight_and_metrics_average_the_steps(tmp_path, loss_agg):
    """Four rows (trajectories of 1 + 2 + 3 and 2 tokens) in minibatches of two: each step's gradient is
    -A w / W over its own rows only, W their total weight (traj-mean: below 1 for the minibatch that holds
    two rows of the first trajectory, as one of the two must); the metrics are the mean over the two steps."""
    tokens, advantages = [1, 2, 3, 2], [1.0, -1.0, 0.5, 2.0]
    per_token = [1.0] * 4 if loss_agg == "token-mean" else [1 / 6, 1 / 6, 1 / 6, 1 / 2]
    cfg = learner_config(0.2)
    cfg.grpo.loss_agg, cfg.minibatch_size, cfg.micro_batch_size = loss_agg, 2, 1
    policy = DirectLogProbs([[0.5] * 3] * 4)
    batch = make_batch([trajectory(0, [(0, 1), (1, 2), (2, 3)]), trajectory(1, [(3, 2)])])
    metrics, grads, calls = run_update(policy, FixedAdvantages(advantages), cfg, batch, tmp_path)
    assert len(grads) == 2 and len(calls) == 4
    steps = [calls[0] + calls[1], calls[2] + calls[3]]  # micro-batches of one row
    assert sorted(sum(steps, [])) == [0, 1, 2, 3]
    losses, norms, weights = [], [], []
    for rows, grad in zip(steps, grads):
        weight = sum(tokens[r] * per_token[r] for r in rows)
        want = torch.zeros(4, 3)
        for r in rows:  # the other minibatch's rows were not moved by the first step: ratio 1 still
            want[r, :tokens[r]] = -advantages[r] * per_token[r] / weight
        torch.testing.assert_close(grad, want, atol=1e-7, rtol=1e-6)
        losses.append(sum(-advantages[r] * tokens[r] * per_token[r] for r in rows) / weight)
        norms.append(want.norm().item())
        weights.append(weight)
    assert loss_agg == "token-mean" or min(weights) < 1
    assert metrics["pg_loss"] == pytest.approx(sum(losses) / 2, abs=1e-7)
    assert metrics["grad_norm"] == pytest.approx(sum(norms) / 2, rel=1e-6)


@pytest.mark.parametrize("micro", [8, 1])
def test_kl_term_by_hand_keeps_zero_advantage_rows(tmp_path, micro):
    """Policy probabilities 0.5 (= old: ratio 1), reference q. Per token k3 = q/p - log(q/p) - 1 and
    d k3 / d logp = 1 - q/p: q = 0.25 gives ln 2 - 1/2 and +1/2, q = 1 gives 1 - ln 2 and -1; their mean
    is 1/4. Row 1 has A = 0 but a KL term: it is run. kl_coef 0.5: loss = -2/4 + 0.5 x 1/4."""
    cfg = learner_config(0.2)
    cfg.grpo.kl_coef, cfg.micro_batch_size = 0.5, micro
    policy, reference = DirectLogProbs([[0.5, 0.5], [0.5, 0.5]]), DirectLogProbs([[0.25, 1.0], [1.0, 0.25]])
    scored = []
    own_score = reference.score
    reference.score = lambda ids, r, m: scored.append(len(ids)) or own_score(ids, r, m)
    batch = make_batch([trajectory(0, [(0, 2)]), trajectory(1, [(1, 2)])])
    metrics, grads, calls = run_update(policy, FixedAdvantages([1.0, 0.0]), cfg, batch, tmp_path, reference=reference)
    assert scored == ([2] if micro == 8 else [1, 1])  # the reference is scored in micro-batch-sized chunks
    assert sorted(sum(calls, [])) == [0, 1]
    assert metrics["kl"] == pytest.approx(0.25, abs=1e-6)
    assert metrics["pg_loss"] == pytest.approx(-0.5, abs=1e-6)
    assert metrics["loss"] == pytest.approx(-0.5 + 0.5 * 0.25, abs=1e-6)
    # per token (-A + 0.5 (1 - q/p)) / 4
    want = torch.tensor([[(-1 + 0.5 * 0.5) / 4, (-1 - 0.5) / 4], [-0.5 / 4, 0.5 * 0.5 / 4]])
    torch.testing.assert_close(grads[0], want, atol=1e-6, rtol=1e-5)


def test_kl_coef_0_scores_no_reference_and_adds_nothing(tmp_path):
    class Unscorable(DirectLogProbs):
        def score(self, *args):
            raise AssertionError("kl_coef 0: the reference must not be scored")

    cfg = learner_config(0.2)
    policy = DirectLogProbs([[0.5, 0.5], [0.5, 0.5]])
    batch = make_batch([trajectory(0, [(0, 2)]), trajectory(1, [(1, 2)])])
    metrics, grads, calls = run_update(policy, FixedAdvantages([1.0, 0.0]), cfg, batch, tmp_path,
                                       reference=Unscorable([[0.25, 1.0], [1.0, 0.25]]))
    assert "kl" not in metrics and calls == [[0]]  # the zero-advantage row is skipped: no KL term to run it for
    torch.testing.assert_close(grads[0], torch.tensor([[-0.25, -0.25], [0.0, 0.0]]))


def test_an_extra_loss_is_added_and_keeps_zero_advantage_rows(tmp_path):
    """No advantage anywhere: the gradient is the extra term's, -0.5 w / W on every token of every row (a
    learner that skipped zero-advantage rows would take no step at all); its metric is passed on."""
    cfg = learner_config(0.2)
    cfg.grpo.loss_agg, cfg.micro_batch_size = "traj-mean", 1
    policy = DirectLogProbs([[0.5, 0.5]] * 3)
    batch = make_batch([trajectory(0, [(0, 2)]), trajectory(1, [(1, 1), (2, 2)])])
    metrics, grads, calls = run_update(policy, WithExtraLoss([0.0, 0.0, 0.0]), cfg, batch, tmp_path)
    assert sorted(sum(calls, [])) == [0, 1, 2]
    # traj-mean weights 1/2, 1/2 | 1/3 | 1/3, 1/3; W = 2
    want = -0.5 * torch.tensor([[1 / 2, 1 / 2], [1 / 3, 0], [1 / 3, 1 / 3]]) / 2
    torch.testing.assert_close(grads[0], want, atol=1e-7, rtol=1e-6)
    extra = -0.5 * HALF  # every token's log-prob is log 0.5
    assert metrics["extra/term"] == pytest.approx(extra, rel=1e-6)
    assert metrics["loss"] == pytest.approx(extra, rel=1e-6) and metrics["pg_loss"] == pytest.approx(0.0, abs=1e-7)


def test_a_minibatch_without_loss_still_takes_its_optimizer_step(tmp_path):
    """Every advantage 0, no KL, no extra loss: no row is run, yet each minibatch steps AdamW on a zero
    gradient, as if its rows had run: weight decay shrinks every parameter by (1 - lr x wd) per step."""
    cfg = learner_config(0.2)
    cfg.weight_decay, cfg.minibatch_size = 0.1, 2
    policy = DirectLogProbs([[0.5, 0.5], [0.25, 0.5], [0.75, 0.5]])
    before = policy.table.detach().clone()
    batch = make_batch([trajectory(k, [(k, 2)]) for k in range(3)])
    metrics, grads, calls = run_update(policy, FixedAdvantages([0.0] * 3), cfg, batch, tmp_path)
    assert calls == [] and len(grads) == 2 and all(g.abs().sum() == 0 for g in grads)
    torch.testing.assert_close(policy.table.detach(), before * (1 - 0.01 * 0.1) ** 2, atol=1e-8, rtol=1e-7)
    assert metrics["grad_norm"] == 0.0


def test_a_prepare_that_sets_no_advantages_is_named(tmp_path):
    class Forgetful(Algorithm):
        def prepare(self, batch, ctx):
            return {}

    policy = DirectLogProbs([[0.5, 0.5]])
    with pytest.raises(RuntimeError, match=r"^Forgetful\.prepare did not set batch\.advantages$"):
        run_update(policy, Forgetful(), learner_config(0.2), make_batch([trajectory(0, [(0, 2)])]), tmp_path)


def minibatch_order(tmp_path, seed, update):
    """The rows of each forward pass of an update over six rows: 2 epochs of 3 minibatches of 2."""
    cfg = learner_config(0.2)
    cfg.seed, cfg.ppo_epochs, cfg.minibatch_size = seed, 2, 2
    batch = make_batch([trajectory(k, [(k, 1)]) for k in range(6)])  # every prompt 1 token: no reordering
    _, grads, calls = run_update(DirectLogProbs([[0.5]] * 6), FixedAdvantages([1.0] * 6), cfg, batch, tmp_path,
                                 update=update)
    assert len(grads) == len(calls) == 6
    return calls


def test_minibatch_order_is_a_fresh_permutation_per_epoch_drawn_from_seed_and_update(tmp_path):
    order = minibatch_order(tmp_path, seed=3, update=5)
    for epoch in (order[:3], order[3:]):
        assert sorted(sum(epoch, [])) == list(range(6))  # each row once per epoch
    assert order[:3] != order[3:]
    assert minibatch_order(tmp_path, seed=3, update=5) == order  # what a resumed update relies on
    assert minibatch_order(tmp_path, seed=3, update=6) != order
    assert minibatch_order(tmp_path, seed=4, update=5) != order


def test_loss_rows_drop_zero_advantage_rows_only_without_kl_or_extra_loss_longest_prompt_first():
    prompts = [[0], [1, 1, 1], [2, 2], [3, 3, 3], [4]]
    steps = [Step(t=0, observation="o", context=None, prompt="p", response="r", action="a", reward=0.0,
                  format_valid=True, action_valid=True, prompt_ids=ids, response_ids=[5], old_logprobs=[HALF])
             for ids in prompts]
    batch = make_batch([Trajectory(env_id="x", split="train", task="t", task_id=0, task_type="k", group_id=0,
                                   traj_id=0, steps=steps)])
    batch.advantages = torch.tensor([[0.0], [1.0], [-1.0], [0.0], [2.0]])
    index = torch.tensor([4, 3, 2, 1, 0])
    cfg = learner_config(0.2)
    plain = Learner(DirectLogProbs([[0.5]] * 5), FixedAdvantages([0.0] * 5), cfg)
    assert plain.loss_rows(batch, index).tolist() == [1, 2, 4]  # prompt lengths 3, 2, 1
    with_extra = Learner(DirectLogProbs([[0.5]] * 5), WithExtraLoss([0.0] * 5), cfg)
    assert with_extra.loss_rows(batch, index).tolist() == [3, 1, 2, 4, 0]  # equal lengths keep the minibatch's order
    batch.ref_logp = torch.zeros(5, 1)
    assert plain.loss_rows(batch, index).tolist() == [3, 1, 2, 4, 0]
    # a minibatch of 20 prompts of one length keeps the seeded order (torch's unstable sort reorders ties
    # from 17 rows on), so which rows share a micro-batch follows the seeded permutation
    steps = [copy.deepcopy(steps[1]) for _ in range(20)]
    batch = make_batch([Trajectory(env_id="x", split="train", task="t", task_id=0, task_type="k", group_id=0,
                                   traj_id=0, steps=steps)])
    batch.advantages = torch.ones(20, 1)
    index = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    assert plain.loss_rows(batch, index).tolist() == index.tolist()


def test_make_batch_by_hand():
    ctx = PromptContext(task="t", history=(), observation="o", admissible_actions=None, step=0)

    def step(t, prompt, response, old, valid=True):
        return Step(t=t, observation="o", context=ctx, prompt="p", response="r", action="a", reward=0.0,
                    format_valid=valid, action_valid=True, prompt_ids=prompt, response_ids=response, old_logprobs=old)

    first = Trajectory(env_id="x", split="train", task="t", task_id=0, task_type="k", group_id=3, traj_id=0,
                       steps=[step(0, [7, 8], [11, 12, 13], [-0.1, -0.2, -0.3]), step(1, [9], [14], [-0.4], False)],
                       score=0.25)
    second = Trajectory(env_id="x", split="train", task="t", task_id=0, task_type="k", group_id=1, traj_id=1,
                        steps=[step(0, [6], [15, 16], [-0.5, -0.6])], score=1.0)
    batch = make_batch([first, second])
    assert batch.rows == [(0, 0), (0, 1), (1, 0)] and batch.prompt_ids == [[7, 8], [9], [6]]
    assert batch.response_ids.dtype == torch.long
    assert batch.response_ids.tolist() == [[11, 12, 13], [14, 0, 0], [15, 16, 0]]
    assert batch.response_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    torch.testing.assert_close(batch.old_logp, torch.tensor([[-0.1, -0.2, -0.3], [-0.4, 0, 0], [-0.5, -0.6, 0]]))
    assert batch.group_ids.tolist() == [3, 3, 1]
    assert batch.format_valid.tolist() == [True, False, True]
    # responses without a token still make a batch one token wide, all padding
    empty = make_batch([Trajectory(env_id="x", split="train", task="t", task_id=0, task_type="k", group_id=0,
                                   traj_id=0, steps=[step(0, [1], [], [])])])
    assert empty.response_ids.shape == (1, 1) and empty.response_mask.tolist() == [[0.0]]


def test_token_weights_by_hand():
    """traj-mean: 1 / (the trajectory's tokens) on each real token; a trajectory without a token weighs 0."""
    batch = make_batch([trajectory(0, [(0, 2)]), trajectory(1, [(1, 1), (2, 3)]), trajectory(2, [(3, 0)])])
    weights = token_weights(batch, "traj-mean")
    torch.testing.assert_close(weights, torch.tensor([[1 / 2, 1 / 2, 0], [1 / 4, 0, 0], [1 / 4] * 3, [0, 0, 0]]))
    token_mean = token_weights(batch, "token-mean")
    assert torch.equal(token_mean, batch.response_mask)
    token_mean[0, 0] = 5.0  # the learner's weights are its own: writing them leaves the mask alone
    assert batch.response_mask[0, 0] == 1.0


def test_chunks_and_scoring_in_chunks(tmp_path, monkeypatch):
    """The reference's log-probs scored two rows at a time are the ones scored whole (a real tiny model)."""
    assert [c.tolist() for c in chunks(torch.arange(5), 2)] == [[0, 1], [2, 3], [4]]
    assert [c.tolist() for c in chunks(torch.tensor([3, 1]), 4)] == [[3, 1]]
    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    prompts = ["Your task is to: open the door.", "Cell 3.", "Your task is to: take the key. You are in cell 0."]
    policy = tiny_policy(prompts, seed=0, config=TinyConfig(hidden_size=32, num_layers=1, num_heads=2,
                                                             intermediate_size=64, vocab_size=300))
    steps = []
    for k, (prompt, response) in enumerate(zip(prompts, ["go right", "open", "take the key"])):
        traj = trajectory(k, [(k, 0)])
        traj.steps[0].prompt_ids = policy.encode_prompt(prompt)
        traj.steps[0].response_ids = policy.tokenizer(response, add_special_tokens=False)["input_ids"]
        traj.steps[0].old_logprobs = [0.0] * len(traj.steps[0].response_ids)
        steps.append(traj)
    batch = make_batch(steps)
    assert len(set(map(len, batch.prompt_ids))) == 3 and len(set(batch.response_mask.sum(1).tolist())) > 1
    whole = policy.score(batch.prompt_ids, batch.response_ids, batch.response_mask)
    torch.testing.assert_close(score_in_chunks(policy, batch, 2), whole, atol=1e-5, rtol=1e-4)
    assert (whole[batch.response_mask == 0] == 0).all() and (whole[batch.response_mask == 1] < 0).all()


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
