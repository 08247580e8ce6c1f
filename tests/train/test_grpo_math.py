"""GRPO / PPO / KL math against values computed by hand."""

import math

import pytest
import torch

from opid_train.algorithms import ALGORITHMS, algorithm_class, make_algorithm
from opid_train.algorithms.base import PrepareContext
from opid_train.algorithms.grpo import (GRPO, episode_advantages, group_advantages, low_var_kl, masked_mean,
                                       ppo_clip_loss, step_row_advantages)
from opid_train.config import TrainConfig
from opid_train.learner import make_batch
from opid_train.types import Step, Trajectory
from wrappers import PromptContext, PromptTemplate


def test_group_advantages_mean_std_and_mean_only():
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    # group 0: mean 0.25, population std sqrt(0.1875) = 0.4330; group 1: all equal -> 0
    std = math.sqrt(0.1875)
    expected = torch.tensor([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std, 0.0, 0.0])
    assert torch.allclose(group_advantages(scores, groups, normalize_std=True), expected, atol=1e-4)
    expected_mean_only = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.0, 0.0])
    assert torch.allclose(group_advantages(scores, groups, normalize_std=False), expected_mean_only)


def test_group_advantages_normalize_by_default_and_take_integer_scores():
    scores, groups = torch.tensor([1, 0, 0, 0]), torch.tensor([0, 0, 0, 0])  # e.g. won flags as ints
    default = group_advantages(scores, groups)
    assert default.dtype == torch.float32
    torch.testing.assert_close(default, group_advantages(scores.float(), groups, normalize_std=True))
    torch.testing.assert_close(group_advantages(scores, groups, normalize_std=False), torch.tensor([0.75, -0.25, -0.25, -0.25]))
    # a group of one has no one to be compared with: advantage 0, not 0 / 0
    assert group_advantages(torch.tensor([0.7]), torch.tensor([3]), normalize_std=True).tolist() == [0.0]


def test_step_row_advantages_normalize_by_default_and_take_integer_scores():
    scores, groups = torch.tensor([1, 0, 0, 0]), torch.tensor([0, 0, 0, 0])  # e.g. won flags as ints
    # mean 0.25; unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6)
    default = step_row_advantages(scores, groups)
    assert default.dtype == torch.float32  # not the scores' int64, which would truncate 1.5 to 1 and -0.5 to 0
    torch.testing.assert_close(default, expected)


@pytest.mark.parametrize("advantages, std", [(group_advantages, 1e-6), (step_row_advantages, math.sqrt(2e-12))])
def test_eps_keeps_a_near_tie_group_finite(advantages, std):
    """Two scores 2e-6 apart: centred +-1e-6, std 1e-6 (population) or sqrt(2)e-6 (unbiased), so the
    advantage is +-1e-6 / (std + 1e-6), not a division by a std of about 0."""
    adv = advantages(torch.tensor([0.0, 2e-6]), torch.tensor([0, 0]))
    expected = 1e-6 / (std + 1e-6)
    torch.testing.assert_close(adv, torch.tensor([-expected, expected]), rtol=1e-3, atol=0)


def test_episode_advantages_names_an_unknown_estimator():
    """GRPO's constructor checks the name first; a direct caller of episode_advantages gets the same message."""
    cfg = TrainConfig().grpo
    cfg.outcome_advantage, cfg.reward, cfg.reward_scale = "per_group", "score", 1.0
    batch = make_batch([_traj(0, 0, 1.0, [True])])
    with pytest.raises(ValueError, match="unknown grpo.outcome_advantage 'per_group'; choose one of"):
        episode_advantages(batch, cfg, torch.zeros(1))


def test_ppo_clip_loss_hand_computed():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.75, 0.25, 0.55]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is padding
    loss, stats = ppo_clip_loss(new, old, adv, mask, clip_eps=0.2)
    # token 1: max(-1*1.5, -1*1.2) = -1.2 ; token 2: max(-0.5, -0.8) = -0.5 ; mean over 2 tokens
    assert loss.item() == pytest.approx((-1.2 - 0.5) / 2, abs=1e-6)
    assert stats["pg_clipfrac"] == pytest.approx(0.5)  # token 1 was clipped, token 2 was not
    assert stats["ppo_approx_kl"] == pytest.approx((0.5 * math.log(1.5) ** 2 + 0.5 * math.log(0.5) ** 2) / 2, rel=1e-5)


def test_ppo_gradient_vanishes_on_clipped_tokens():
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.75, 0.55]])).requires_grad_()
    loss, _ = ppo_clip_loss(new, old, torch.tensor([[1.0, 1.0]]), torch.ones(1, 2), clip_eps=0.2)
    loss.backward()
    # d/dlogp of -A*ratio/2 = -ratio/2 on the unclipped token; 0 on the clipped one
    assert new.grad[0, 0].item() == 0.0
    assert new.grad[0, 1].item() == pytest.approx(-1.1 / 2, rel=1e-5)


def test_dual_clip_caps_the_loss_of_negative_advantage_tokens():
    old = torch.log(torch.tensor([[0.1, 0.1, 0.1, 0.1]]))
    new = torch.log(torch.tensor([[0.5, 0.5, 0.2, 0.05]])).requires_grad_()  # ratios 5, 5, 2, 0.5
    adv = torch.tensor([[-2.0, 1.0, -2.0, -2.0]])
    loss, stats = ppo_clip_loss(new, old, adv, torch.ones(1, 4), clip_eps=0.2, clip_ratio_c=3.0)
    loss.backward()
    # A < 0, ratio 5: max(-A*5, -A*1.2) = 10, capped at -A*3 = 6 ; A > 0, ratio 5: max(-5, -1.2) = -1.2 as before
    # A < 0, ratio 2: 4 < 6, not capped ; A < 0, ratio 0.5: max(1, 1.6) = 1.6 (the ordinary clip)
    assert loss.item() == pytest.approx((6 - 1.2 + 4 + 1.6) / 4, rel=1e-6)
    # the capped token's loss is the constant -A*3: no gradient; the uncapped one keeps -A * ratio / 4
    assert new.grad[0].tolist() == pytest.approx([0.0, 0.0, 2 * 2 / 4, 0.0], abs=1e-6)
    assert stats["pg_clipfrac_lower"] == pytest.approx(1 / 4)  # verl's name: the share the dual clip capped
    assert stats["pg_clipfrac"] == pytest.approx(2 / 4)  # the ordinary clip: tokens 2 and 4

    without = new.detach().requires_grad_()
    loss, stats = ppo_clip_loss(without, old, adv, torch.ones(1, 4), clip_eps=0.2)
    loss.backward()
    assert loss.item() == pytest.approx((10 - 1.2 + 4 + 1.6) / 4, rel=1e-6)  # -A*5 without dual clip
    assert without.grad[0, 0].item() == pytest.approx(2 * 5 / 4, rel=1e-6) and "pg_clipfrac_lower" not in stats


@pytest.mark.parametrize("off", [None, 0, 0.0])
def test_dual_clip_off_is_the_plain_clipped_loss(off):
    gen = torch.Generator().manual_seed(3)
    old = torch.randn(5, 7, generator=gen)
    new = (old + 1.5 * torch.randn(5, 7, generator=gen)).requires_grad_()  # many ratios far outside [1/3, 3]
    adv, mask = torch.randn(5, 7, generator=gen), (torch.rand(5, 7, generator=gen) > 0.3).float()
    ratio = torch.exp(new - old)
    plain = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    want = (plain * mask).sum() / mask.sum()
    (want_grad,) = torch.autograd.grad(want, new)
    loss, stats = ppo_clip_loss(new, old, adv, mask, clip_eps=0.2, clip_ratio_c=off)
    (grad,) = torch.autograd.grad(loss, new)
    assert loss.item() == want.item() and torch.equal(grad, want_grad)  # bit for bit: the main job is unchanged
    assert set(stats) == {"pg_clipfrac", "ppo_approx_kl"}
    capped, _ = ppo_clip_loss(new, old, adv, mask, clip_eps=0.2, clip_ratio_c=3.0)
    assert capped.item() < loss.item()  # these inputs have A < 0 tokens with ratios above 3


def test_a_dual_clip_bound_of_one_or_less_is_refused():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        ppo_clip_loss(x, x, x, torch.ones(1, 2), clip_eps=0.2, clip_ratio_c=1.0)
    from opid_train.algorithms.config import GRPOConfig
    from opid_train.algorithms.grpo import check_grpo_config

    for bound in (0.5, 1, -3.0):
        with pytest.raises(ValueError, match="grpo.clip_ratio_c"):
            check_grpo_config(GRPOConfig(outcome_advantage="verl_agent", reward="score", clip_ratio_c=bound))
    for bound in (None, 0, 1.5, 3.0):
        check_grpo_config(GRPOConfig(outcome_advantage="verl_agent", reward="score", clip_ratio_c=bound))
    loss, _ = ppo_clip_loss(torch.tensor([[math.log(2.0)]]), torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1),
                            clip_eps=0.2, clip_ratio_c=1.5)  # a bound just above 1 is taken: ratio 2 is capped at 1.5
    assert loss.item() == pytest.approx(1.5)


def _one_token_loss(log_ratio: float, advantage: float, **dual_clip) -> tuple[float, float]:
    """The loss of one token with this log-ratio and advantage, and its gradient in logp."""
    new = torch.tensor([[log_ratio]], requires_grad=True)
    loss, _ = ppo_clip_loss(new, torch.zeros(1, 1), torch.tensor([[advantage]]), torch.ones(1, 1), clip_eps=0.2,
                            **dual_clip)
    (grad,) = torch.autograd.grad(loss, new)
    return loss.item(), grad.item()


def test_dual_clip_clamps_the_log_ratio_to_20_either_way_and_plain_ppo_does_not():
    """With dual clip the log-ratio is clamped to [-20, 20] before exp, as verl's compute_policy_loss_vanilla:
    a ratio far out of range keeps a finite loss and a zero gradient (exp(100) is inf in float32, and the
    clip's zero gradient times inf is NaN). Without dual clip the loss is the plain one, unclamped."""
    e = lambda x: torch.exp(torch.tensor(x)).item()  # noqa: E731  (float32, as the loss computes it)
    assert _one_token_loss(100.0, 1.0, clip_ratio_c=3.0) == (pytest.approx(-1.2), 0.0)  # the clip's -A * 1.2
    assert _one_token_loss(100.0, -1.0, clip_ratio_c=3.0) == (pytest.approx(3.0), 0.0)  # the dual clip's -A * c
    assert _one_token_loss(21.0, -1.0, clip_ratio_c=1e10) == (pytest.approx(e(20.0), rel=1e-6), 0.0)  # e^20, not e^21
    assert _one_token_loss(-30.0, 1.0, clip_ratio_c=3.0) == (pytest.approx(-e(-20.0), rel=1e-6), 0.0)  # e^-20
    for off in (None, 0):
        loss, grad = _one_token_loss(-30.0, 1.0, clip_ratio_c=off)
        assert (loss, grad) == (pytest.approx(-e(-30.0), rel=1e-6), pytest.approx(-e(-30.0), rel=1e-6))
        assert _one_token_loss(21.0, -1.0, clip_ratio_c=off)[0] == pytest.approx(e(21.0), rel=1e-6)


def test_pg_clipfrac_lower_counts_a_token_only_when_the_bound_lowers_its_loss():
    """A token whose loss equals -A * c exactly is not capped: verl counts `clip_pg_losses1 > pg_losses3`."""
    new = torch.tensor([[0.7, 0.7]])
    ratio = torch.exp(new[0, 0]).item()  # 2.01..., exactly representable: the bound below equals the loss
    loss, stats = ppo_clip_loss(new, torch.zeros(1, 2), torch.tensor([[-1.0, -1.0]]), torch.ones(1, 2), clip_eps=0.2,
                                clip_ratio_c=ratio)
    assert loss.item() == ratio and stats["pg_clipfrac_lower"] == 0.0
    loss, stats = ppo_clip_loss(new, torch.zeros(1, 2), torch.tensor([[-1.0, -1.0]]), torch.tensor([[1.0, 0.0]]),
                                clip_eps=0.2, clip_ratio_c=1.5)
    assert loss.item() == pytest.approx(1.5) and stats["pg_clipfrac_lower"] == 1.0


def test_low_var_kl_k3():
    logp = torch.log(torch.tensor([0.5, 0.2, 0.3]))
    ref = torch.log(torch.tensor([0.25, 0.2, 0.6]))
    d = [math.log(0.5), 0.0, math.log(2.0)]  # ref - logp
    expected = torch.tensor([math.exp(x) - x - 1 for x in d])
    assert torch.allclose(low_var_kl(logp, ref), expected, atol=1e-6)
    assert low_var_kl(logp, logp).abs().max().item() == 0.0
    assert masked_mean(expected, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(float(expected[:2].mean()))
    assert masked_mean(expected, torch.tensor([1.0, 0.0, 0.0])).item() == pytest.approx(float(expected[0]))  # one token


def test_low_var_kl_is_capped_at_10_with_a_finite_gradient():
    """verl's clamps: k3 at most 10; the log-ratio clamped to [-20, 20] first, so exp never overflows."""
    logp = torch.tensor([-5.0, -100.0, -1.0], requires_grad=True)
    ref = torch.tensor([0.0, 0.0, -1.0])
    kl = low_var_kl(logp, ref)  # d = 5 (k3 142.4), 100 (exp overflows unclamped), 0
    assert kl.tolist() == [10.0, 10.0, 0.0]
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all() and logp.grad.tolist() == [0.0, 0.0, 0.0]


def _traj(group, tid, score, valid_flags):
    ctx = PromptContext(task="t", history=(), observation="o", admissible_actions=None, step=0)
    steps = [Step(t=i, observation="o", context=ctx, prompt="p", response="r", action="a" if ok else None,
                  reward=0.0, format_valid=ok, action_valid=ok, prompt_ids=[1, 2], response_ids=[3] * (i + 1),
                  old_logprobs=[-0.5] * (i + 1)) for i, ok in enumerate(valid_flags)]
    return Trajectory(env_id="x", split="train", task="t", task_id=group, task_type="k", group_id=group,
                      traj_id=tid, steps=steps, score=score, won=score == 1.0)


def test_grpo_prepare_broadcasts_advantage_and_penalises_invalid_format():
    trajs = [_traj(0, 0, 1.0, [True, False]), _traj(0, 1, 0.0, [True]), _traj(1, 2, 0.5, [True])]
    batch = make_batch(trajs)
    assert batch.response_ids.shape == (4, 2) and batch.response_mask.sum().item() == 5
    cfg = TrainConfig()
    cfg.grpo.normalize_std, cfg.grpo.invalid_format_penalty = False, 0.1
    cfg.grpo.outcome_advantage, cfg.grpo.reward, cfg.grpo.reward_scale = "per_trajectory_population_std", "score", 1.0
    ctx = PrepareContext(policy=None, template=PromptTemplate(), run_dir=None, update=0)
    metrics = GRPO(cfg).prepare(batch, ctx)
    # group 0: A = +0.5 / -0.5; group 1 (one member): 0. Row 1 (invalid) gets -0.1 more.
    expected = torch.tensor([[0.5, 0.0], [0.4, 0.4], [-0.5, 0.0], [0.0, 0.0]])
    assert torch.allclose(batch.advantages, expected, atol=1e-6)
    assert metrics["format_invalid_rate"] == pytest.approx(0.25)
    # A_ep per row, the penalty included (as the reference's row scores carry it): 0.5, 0.4, -0.5, 0
    assert metrics["adv_ep_mean"] == pytest.approx(0.1) and metrics["adv_ep_abs_mean"] == pytest.approx(0.35)



def test_grpo_prepare_divides_by_the_group_std_only_when_configured():
    """One step per trajectory, so step-row and trajectory statistics agree. Group 0 scores (1, 0, 0, 0):
    mean 0.25, std sqrt(3)/4 = 0.433 (population) or 0.5 (unbiased); group 1 scores (0.2, 0.6): mean 0.4,
    std 0.2 (population) or 0.283 (unbiased). Either std is a normalization; ignoring the flag is not."""
    scores = [1.0, 0.0, 0.0, 0.0, 0.2, 0.6]
    groups = [0, 0, 0, 0, 1, 1]
    trajs = [_traj(g, k, s, [True]) for k, (g, s) in enumerate(zip(groups, scores))]
    cfg = TrainConfig()
    cfg.grpo.invalid_format_penalty, cfg.grpo.invalid_action_penalty = 0.0, 0.0
    ctx = PrepareContext(policy=None, template=PromptTemplate(), run_dir=None, update=0)
    advantages = {}
    for normalize in (False, True):
        cfg.grpo.normalize_std = normalize
        batch = make_batch(trajs)
        GRPO(cfg).prepare(batch, ctx)
        advantages[normalize] = batch.advantages[:, 0]
    centred = torch.tensor([0.75, -0.25, -0.25, -0.25, -0.2, 0.2])
    torch.testing.assert_close(advantages[False], centred)
    scale = centred / advantages[True]  # the std each row was divided by
    for rows, stds in (([0, 1, 2, 3], (math.sqrt(3) / 4, 0.5)), ([4, 5], (0.2, math.sqrt(0.08)))):
        assert any(torch.allclose(scale[rows], torch.full((len(rows),), s), rtol=1e-4) for s in stds), scale[rows]
    # scaling every score leaves the normalized advantage unchanged and scales the centred one
    for k, t in enumerate(trajs):
        t.score = scores[k] / 2
    batch = make_batch(trajs)
    GRPO(cfg).prepare(batch, ctx)
    torch.testing.assert_close(batch.advantages[:, 0], advantages[True], rtol=1e-4, atol=1e-5)


def test_grpo_penalises_impossible_actions_only_when_asked():
    trajs = [_traj(0, 0, 1.0, [True, True]), _traj(0, 1, 0.0, [True])]
    trajs[0].steps[1].action_valid = False  # well-formed, but the env could not carry it out
    cfg = TrainConfig()
    cfg.grpo.normalize_std, cfg.grpo.invalid_format_penalty = False, 0.1
    ctx = PrepareContext(policy=None, template=PromptTemplate(), run_dir=None, update=0)
    for penalty, expected_row1 in ((0.0, 0.5), (0.3, 0.2)):
        cfg.grpo.invalid_action_penalty = penalty
        batch = make_batch(trajs)
        metrics = GRPO(cfg).prepare(batch, ctx)
        assert batch.advantages[1, 0].item() == pytest.approx(expected_row1)
        assert batch.advantages[0, 0].item() == pytest.approx(0.5)
        assert metrics["action_invalid_rate"] == pytest.approx(1 / 3)
    # a malformed step is not carried out either: it pays both penalties, so it never costs less than a
    # well-formed impossible action (at 0.3 against 0.1 it would cost less, and RL would learn to write it)
    malformed = [_traj(0, 0, 1.0, [True, False]), _traj(0, 1, 0.0, [True])]
    malformed[0].steps[1].action_valid = True  # however the env flagged it
    batch = make_batch(malformed)
    metrics = GRPO(cfg).prepare(batch, ctx)
    assert batch.advantages[1, 0].item() == pytest.approx(0.5 - 0.1 - 0.3)
    assert metrics["action_invalid_rate"] == 0.0 and metrics["format_invalid_rate"] == pytest.approx(1 / 3)


def test_registry_is_lazy_and_constructs_with_train_config():
    assert set(ALGORITHMS) >= {"grpo", "opid", "sdar"}
    assert isinstance(make_algorithm("grpo", TrainConfig()), GRPO)
    assert algorithm_class("grpo") is GRPO
    with pytest.raises(ValueError, match="unknown algorithm"):
        make_algorithm("ppo2", TrainConfig())


def test_traj_mean_weights_every_trajectory_equally():
    from opid_train.learner import token_weights

    trajs = [_traj(0, 0, 1.0, [True]), _traj(0, 1, 0.0, [True, True, True])]  # 1 token vs 1+2+3 tokens
    batch = make_batch(trajs)
    w = token_weights(batch, "traj-mean")
    per_traj = [w[[r for r, (t, _) in enumerate(batch.rows) if t == k]].sum().item() for k in (0, 1)]
    assert per_traj == pytest.approx([1.0, 1.0])
    assert torch.equal(token_weights(batch, "token-mean"), batch.response_mask)
    with pytest.raises(ValueError, match="loss_agg"):
        token_weights(batch, "seq-sum")


# -- the reference's statistics (verl_agent) against the formula, by hand -------------------------

def _run(trajs, **grpo):
    cfg = TrainConfig()
    for key, value in {"outcome_advantage": "verl_agent", "normalize_std": True, "reward": "score",
                       "reward_scale": 1.0, "invalid_format_penalty": 0.1, **grpo}.items():
        setattr(cfg.grpo, key, value)
    batch = make_batch(trajs)
    GRPO(cfg).prepare(batch, PrepareContext(policy=None, template=PromptTemplate(), run_dir=None, update=0))
    return batch.advantages[:, 0]  # every row's first token is a real one


def _issue_case():
    """The issue's 2 groups x 4 trajectories of 1-4 steps: group 0 scores [1, 0, 1, 0] with 1, 3, 2, 4
    steps; group 1 scores [1, 0, 0, 0] with 1, 2, 3, 4 steps."""
    group0 = [_traj(0, 0, 1.0, [True]), _traj(0, 1, 0.0, [True] * 3), _traj(0, 2, 1.0, [True] * 2),
              _traj(0, 3, 0.0, [True] * 4)]
    group1 = [_traj(1, 4 + i, float(i == 0), [True] * (i + 1)) for i in range(4)]
    return group0 + group1


def test_verl_agent_statistics_over_step_rows_issue_case():
    adv = _run(_issue_case())
    # group 0: 10 rows, 3 of them from won trajectories: mean 0.3, unbiased std sqrt(10 * 0.3 * 0.7 / 9)
    std0 = math.sqrt(10 * 0.3 * 0.7 / 9)
    won0, lost0 = 0.7 / (std0 + 1e-6), -0.3 / (std0 + 1e-6)
    assert won0 == pytest.approx(1.449, abs=1e-3) and lost0 == pytest.approx(-0.621, abs=1e-3)  # the issue's figures
    # group 1: 10 rows, 1 won: mean 0.1, unbiased std sqrt(10 * 0.1 * 0.9 / 9) = sqrt(0.1)
    std1 = math.sqrt(0.1)
    won1, lost1 = 0.9 / (std1 + 1e-6), -0.1 / (std1 + 1e-6)
    expected = [won0] + [lost0] * 3 + [won0] * 2 + [lost0] * 4 + [won1] + [lost1] * 9
    torch.testing.assert_close(adv, torch.tensor(expected), atol=1e-5, rtol=0)


def test_per_trajectory_population_std_variant_on_the_issue_case():
    adv = _run(_issue_case(), outcome_advantage="per_trajectory_population_std")
    # group 0: [1, 0, 1, 0] -> mean 0.5, population std 0.5 -> +-1 whatever the lengths
    # group 1: [1, 0, 0, 0] -> mean 0.25, population std sqrt(0.1875)
    s = math.sqrt(0.1875)
    expected = [1.0] + [-1.0] * 3 + [1.0] * 2 + [-1.0] * 4 + [0.75 / s] + [-0.25 / s] * 9
    torch.testing.assert_close(adv, torch.tensor(expected), atol=1e-4, rtol=0)


def test_verl_agent_group_of_one_row_keeps_its_score_and_one_trajectory_of_equal_rows_gets_zero():
    adv = _run([_traj(0, 0, 1.0, [True]), _traj(1, 1, 1.0, [True, True])], reward_scale=10.0)
    # group 0 has a single row: mean 0, std 1 -> 10 / (1 + 1e-6); group 1: two equal rows -> 0
    torch.testing.assert_close(adv, torch.tensor([10 / (1 + 1e-6), 0.0, 0.0]))
    ours = _run([_traj(0, 0, 1.0, [True]), _traj(1, 1, 1.0, [True, True])],
                outcome_advantage="per_trajectory_population_std")
    assert ours.abs().sum().item() == 0.0  # ours: a group of one trajectory has no signal


def test_verl_agent_mean_norm_success_reward_and_penalty_inside_the_row_score():
    # WebShop's reference setting: R = 10 * won (a partial score of 0.5 counts 0), mean only, and the
    # format penalty is subtracted from the row's score before the group mean.
    trajs = [_traj(0, 0, 1.0, [True, False]), _traj(0, 1, 0.5, [True])]
    adv = _run(trajs, normalize_std=False, reward="success", reward_scale=10.0, invalid_format_penalty=0.1)
    rows = torch.tensor([10.0, 10.0 - 0.1, 0.0])  # won, won but format-invalid, not won
    torch.testing.assert_close(adv, rows - rows.mean())
    # ours: the scores 1 and 0.5 themselves (mean 0.75: +-0.25), the penalty after the statistics
    ours = _run(trajs, outcome_advantage="per_trajectory_population_std", normalize_std=False)
    torch.testing.assert_close(ours, torch.tensor([0.25, 0.25 - 0.1, -0.25]))


def test_unknown_outcome_advantage_or_reward_is_a_clear_error():
    with pytest.raises(ValueError, match="outcome_advantage"):
        _run(_issue_case(), outcome_advantage="per_group")
    with pytest.raises(ValueError, match="grpo.reward"):
        _run(_issue_case(), reward="won")


def test_defaults_are_the_reference_hyperparameters():
    """The papers' settings (shared/reference-notes.md): a silent change of a default changes every run."""
    from opid_train.algorithms.config import AnalyzerConfig, GRPOConfig, OPIDConfig, SDARConfig

    from opid_train.presets import grpo_with_parity

    grpo = GRPOConfig()
    assert (grpo.clip_eps, grpo.kl_coef, grpo.loss_agg) == (0.2, 0.01, "token-mean")
    # the statistics come from the parity mode: the reference's for a pretrained policy on ALFWorld's OPID
    grpo = grpo_with_parity(grpo, "reference", "OPID/ALFWorld-v0", "opid")
    assert (grpo.outcome_advantage, grpo.normalize_std, grpo.reward, grpo.reward_scale, grpo.invalid_format_penalty) == (
        "verl_agent", True, "success", 10.0, 0.1)
    assert grpo.clip_ratio_c == 3.0  # dual-clip PPO, verl's default in the reference's ppo_trainer.yaml
    assert grpo.invalid_action_penalty == 0.0  # ours, off unless asked for
    opid = OPIDConfig()
    assert (opid.w_ep, opid.w_step, opid.routing, opid.normalize_teacher, opid.clip_teacher) == (
        1e-3, 1e-3, "route", False, None)
    assert (opid.start_update, opid.stop_update, opid.rescore_old) == (0, None, False)
    analyzer = AnalyzerConfig()
    assert (analyzer.max_step_skills, analyzer.gamma, analyzer.parse_retries, analyzer.max_retries) == (5, 0.95, 2, 5)
    sdar = SDARConfig()
    assert (sdar.coef, sdar.beta, sdar.gate) == (0.01, 5.0, "sigmoid")
