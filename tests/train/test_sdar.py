"""SDAR: the gated loss's gradient equals its closed form; gates; teacher prompts; the seam."""

import pytest
import torch

from opid_train.algorithms.base import PrepareContext
from opid_train.algorithms.config import SDARConfig
from opid_train.algorithms.sdar import SDAR, sdar_gate, sdar_loss, share_means
from opid_train.analyzers import Analysis
from opid_train.learner import token_weights
from tests.train.test_opid_advantages import (
    TEMPLATE, FixedAnalyzer, SkillReadingScorer, make_batch, make_trajectory, train_config,
)


@pytest.mark.parametrize("gate", ["sigmoid", "entropy", "soft_or"])
def test_gradient_equals_closed_form(gate):
    """Toy model: free logits per position. With g detached and N the loss's tokens (row 1 has no teacher:
    it counts in N and adds nothing), d/dz_t [coef/N * sum_t m_t g_t (T_t - log softmax(z_t)[y_t])]
    = -coef/N * m_t g_t * (onehot(y_t) - softmax(z_t))."""
    torch.manual_seed(0)
    R, T, V, coef, beta = 3, 4, 7, 0.01, 5.0
    logits = torch.randn(R, T, V, requires_grad=True)
    y = torch.randint(V, (R, T))
    teacher = torch.log_softmax(torch.randn(R, T, V), -1).gather(-1, y[..., None]).squeeze(-1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    logp = torch.log_softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1)
    teacher_mask = mask * torch.tensor([[1.0], [0.0], [1.0]])
    loss, _ = sdar_loss(logp, teacher, teacher_mask, mask, coef, beta, gate)
    loss.backward()

    with torch.no_grad():
        p = torch.softmax(logits, -1)
        lp = torch.log(p.gather(-1, y[..., None]).squeeze(-1))
        g_gap = 1 / (1 + torch.exp(-beta * (teacher - lp)))
        g_ent = 1 - lp.exp()
        g = {"sigmoid": g_gap, "entropy": g_ent, "soft_or": g_gap + g_ent - g_gap * g_ent}[gate]
        onehot = torch.nn.functional.one_hot(y, V).float()
        analytic = -coef / mask.sum() * (g * teacher_mask)[..., None] * (onehot - p)
    torch.testing.assert_close(logits.grad, analytic, rtol=1e-5, atol=1e-8)
    assert logits.grad[0, 3].abs().sum() == 0 and logits.grad[1].abs().sum() == 0  # pads, the row without teacher


def test_gap_gate_endorses_positive_gaps_and_fades_rejections():
    logp = torch.full((1, 3), -1.0)
    gap = torch.tensor([[2.0, 0.0, -2.0]])
    g = sdar_gate(gap, logp, "sigmoid", beta=5.0)
    assert g[0, 0] > 0.99 and g[0, 1] == pytest.approx(0.5) and g[0, 2] < 0.01
    # the entropy gate ignores the gap: high for an unlikely token, low for a sure one
    ent = sdar_gate(gap, torch.tensor([[-3.0, -1e-4, -0.7]]), "entropy", beta=5.0)
    assert ent[0, 0] > 0.9 and ent[0, 1] < 1e-3
    soft_or = sdar_gate(gap, torch.tensor([[-3.0, -1e-4, -0.7]]), "soft_or", beta=5.0)
    assert torch.all(soft_or >= torch.maximum(g, ent) - 1e-7)
    with pytest.raises(ValueError, match="gate"):
        sdar_gate(gap, logp, "hard", beta=5.0)


def _sdar(tmp_path, **sdar):
    trajs = [make_trajectory(0, 0, 2, True), make_trajectory(1, 0, 2, False)]
    batch = make_batch(trajs, lengths=[3, 2, 1, 3])
    cfg = train_config()
    cfg.sdar = SDARConfig(**sdar)
    algo = SDAR(cfg)
    algo.teacher.analyzer = FixedAnalyzer({0: Analysis("won", "go right", {1: "open the door"}), 1: None})
    scorer = SkillReadingScorer()
    metrics = algo.prepare(batch, PrepareContext(policy=scorer, template=TEMPLATE, run_dir=tmp_path, update=0))
    return algo, batch, scorer, metrics


def test_prepare_keeps_grpo_advantage_and_stores_the_teacher(tmp_path):
    algo, batch, scorer, metrics = _sdar(tmp_path)
    torch.testing.assert_close(batch.advantages, torch.tensor([0.5, 0.5, -0.5, -0.5])[:, None] * batch.response_mask)
    # routed injection: the episode skill at step 0, the critical-step skill at step 1, none for the failed analysis
    torch.testing.assert_close(batch.extras["teacher_logp"][:, 0], torch.tensor([-0.5, -0.2, 0.0, 0.0]))
    assert batch.extras["teacher_rows"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert scorer.calls == 1 and metrics["sdar/teacher_active_token_ratio"] == pytest.approx(5 / 9)

    # the learner's minibatches carry the teacher through Batch.select
    mb = batch.select([1, 2])
    logp = torch.full_like(mb.old_logp, -1.0, requires_grad=True)
    loss, m = algo.extra_loss(mb, logp)
    # only row 1 (2 of the minibatch's 3 tokens) has a teacher: gap = -0.2 - (-1) = 0.8, averaged over all 3
    g = torch.sigmoid(torch.tensor(5.0 * 0.8))
    assert loss.item() == pytest.approx(0.01 * (g * 0.8).item() * 2 / 3, rel=1e-5)
    assert algo.finish_metrics(m)["sdar/gate_mean"] == pytest.approx(g.item(), rel=1e-5)  # over the teacher's tokens
    assert algo.extra_loss(batch.select([2, 3]), torch.zeros(2, 3))[0] is None  # no teacher: no term


def test_score_chunk_rows_bounds_the_teacher_prompts_per_forward_pass(tmp_path):
    """`score_chunk_rows` is the memory bound of the teacher pass: 1 scores the two teacher prompts
    (an episode skill and a step skill) in two forward passes, with the same values as one pass."""
    _, batch, scorer, _ = _sdar(tmp_path, score_chunk_rows=1)
    assert scorer.calls == 2
    torch.testing.assert_close(batch.extras["teacher_logp"][:, 0], torch.tensor([-0.5, -0.2, 0.0, 0.0]))


def test_prefix_teacher_context(tmp_path):
    _, _, scorer, _ = _sdar(tmp_path, teacher_context="prefix", routing="additive")
    teacher_texts = [t for t in scorer.texts if t.startswith("[Privileged Skill Information]")]
    assert len(teacher_texts) == 2
    assert teacher_texts[1].startswith("[Privileged Skill Information]\ngo right\nopen the door\n\nYou are an agent")


def test_bad_config_is_a_clear_error():
    cfg = train_config()
    cfg.sdar = SDARConfig(gate="hard")
    with pytest.raises(ValueError, match="gate"):
        SDAR(cfg)


def test_prepare_reports_the_analysis_and_records_the_teacher_terms(tmp_path):
    trajs = [make_trajectory(0, 0, 2, True), make_trajectory(1, 0, 2, False)]
    batch = make_batch(trajs, lengths=[3, 2, 1, 3])
    algo = SDAR(train_config())
    analyses = {0: Analysis("won", "go right", {1: "open the door"}), 1: None}
    algo.teacher.analyzer = FixedAnalyzer(analyses)
    ctx = PrepareContext(policy=SkillReadingScorer(), template=TEMPLATE, run_dir=tmp_path, update=0)
    metrics = algo.prepare(batch, ctx)
    # trajectory 0 analysed (its step 1 critical), trajectory 1's analysis failed
    assert {k: v for k, v in metrics.items() if k.startswith("sdar/") and "token" not in k} == {
        "sdar/analysed_trajectories": 1.0, "sdar/failed_trajectories": 1.0, "sdar/critical_step_ratio": 0.5,
        "sdar/skills_applied_episode": 1.0, "sdar/skills_applied_step": 1.0}
    assert ctx.details["analyses"] == [analyses[0], None]
    assert ctx.details["routed"] == [{"episode": "go right"}, {"step": "open the door"}, {}, {}]
    # what the records show per token: T - l_old on the rows with a teacher (old logp is -1 in make_batch)
    expected = torch.tensor([-0.5 + 1, -0.2 + 1, 0.0, 0.0])[:, None] * batch.response_mask
    expected[2:] = 0
    torch.testing.assert_close(ctx.details["teacher_terms"]["teacher"], expected)


def test_a_batch_without_any_analysis_has_no_teacher_and_no_extra_loss(tmp_path):
    batch = make_batch([make_trajectory(0, 0, 2, True), make_trajectory(1, 0, 2, False)], lengths=[3, 2, 1, 3])
    algo = SDAR(train_config())
    algo.teacher.analyzer = FixedAnalyzer({0: None, 1: None})
    ctx = PrepareContext(policy=SkillReadingScorer(), template=TEMPLATE, run_dir=tmp_path, update=0)
    metrics = algo.prepare(batch, ctx)
    assert torch.equal(batch.extras["teacher_logp"], torch.zeros_like(batch.old_logp))
    assert metrics["sdar/teacher_active_token_ratio"] == 0.0 and metrics["sdar/analysed_trajectories"] == 0.0
    assert not ctx.details["teacher_terms"]["teacher"].any()
    assert algo.extra_loss(batch, torch.zeros_like(batch.old_logp)) == (None, {})


def test_loss_diagnostics_by_hand():
    logp = torch.full((2, 4), -1.0)
    teacher = torch.tensor([[-1.0, 1.0, -2.0, 5.0], [3.0, 3.0, 3.0, 3.0]])  # gaps 0, 2, -1, a pad; row 1: no teacher
    teacher_mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    weight = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])  # the loss's 5 tokens
    loss, metrics = sdar_loss(logp, teacher, teacher_mask, weight, coef=0.01, beta=5.0, gate="sigmoid")
    g = torch.sigmoid(torch.tensor([0.0, 10.0, -5.0]))
    want = 0.01 * (2 * g[1] - g[2]).item() / 5
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert metrics == {"sdar/teacher_share": pytest.approx(3 / 5), "sdar/gate_share": pytest.approx(g.sum().item() / 5),
                       "sdar/gate_active_share": pytest.approx(1 / 5), "sdar/gap_share": pytest.approx(1 / 5),
                       "sdar/loss": pytest.approx(want, rel=1e-6)}
    # over the teacher's tokens, as the learner logs them
    assert share_means(metrics) == {"sdar/gate_mean": pytest.approx(g.mean().item(), rel=1e-6),
                                    "sdar/gate_active_ratio": pytest.approx(1 / 3),  # a gate of exactly 1/2 is not active
                                    "sdar/gap_mean": pytest.approx(1 / 3), "sdar/loss": pytest.approx(want, rel=1e-6)}


def test_traj_mean_minibatch_weighs_the_term_by_the_learners_token_weights(tmp_path):
    """Under traj-mean the learner's token weights are 1/(tokens of the row's trajectory): the term is
    sum(w*m*g*gap)/sum(w) with those weights, not a plain token mean, even where sum(w) is below 1."""
    algo, batch, _, _ = _sdar(tmp_path)
    batch.extras["token_weight"] = token_weights(batch, "traj-mean")  # as Learner.update sets it
    mb = batch.select([1, 2])  # row 1: 2 tokens of a 5-token trajectory, with a teacher; row 2: 1 of 4, without
    loss, m = algo.extra_loss(mb, torch.full_like(mb.old_logp, -1.0))
    g = torch.sigmoid(torch.tensor(5.0 * 0.8)).item()
    total = 2 / 5 + 1 / 4  # 0.65
    assert loss.item() == pytest.approx(0.01 * g * 0.8 * (2 / 5) / total, rel=1e-5)
    assert m["sdar/teacher_share"] == pytest.approx((2 / 5) / total, rel=1e-5)


def test_an_update_without_a_teacher_token_logs_no_sdar_means():
    """No teacher token in the whole update: locally no micro-batch reports SDAR metrics; under verl every
    micro-batch reports zero shares (teacher share 0). Either way no mean is logged, and nothing fails."""
    assert SDAR(train_config()).finish_metrics({"loss": 0.5, "pg_loss": 0.25}) == {"loss": 0.5, "pg_loss": 0.25}
    logp = torch.full((2, 3), -1.0)
    _, shares = sdar_loss(logp, torch.zeros_like(logp), torch.zeros_like(logp), torch.ones_like(logp),
                          coef=0.01, beta=5.0, gate="sigmoid")
    assert shares["sdar/teacher_share"] == 0.0
    assert share_means(shares) == {"sdar/loss": 0.0}


def test_unknown_teacher_context_is_named():
    cfg = train_config()
    cfg.sdar = SDARConfig(teacher_context="suffix")
    with pytest.raises(ValueError, match=r"^unknown teacher context 'suffix'; choose one of \('routed', 'prefix'\)$"):
        SDAR(cfg)


def test_prepare_dumps_the_routed_skills_of_its_update(tmp_path):
    import json

    trajs = [make_trajectory(0, 0, 2, True), make_trajectory(1, 0, 2, False)]
    algo = SDAR(train_config())
    algo.teacher.analyzer = FixedAnalyzer({0: Analysis("won", "go right", {1: "open the door"}), 1: None})
    ctx = PrepareContext(policy=SkillReadingScorer(), template=TEMPLATE, run_dir=tmp_path, update=3)
    algo.prepare(make_batch(trajs, lengths=[3, 2, 1, 3]), ctx)
    lines = [json.loads(x) for x in (tmp_path / "skills.jsonl").read_text().splitlines()]
    assert [(x["update"], x["traj_id"], x["step"], x["episode_skill"], x["step_skill"]) for x in lines] == [
        (3, 0, 0, "go right", None), (3, 0, 1, None, "open the door"), (3, 1, 0, None, None), (3, 1, 1, None, None)]


def test_active_ratio_of_a_one_token_batch(tmp_path):
    algo = SDAR(train_config())
    algo.teacher.analyzer = FixedAnalyzer({0: Analysis("won", "go right", {})})
    ctx = PrepareContext(policy=SkillReadingScorer(), template=TEMPLATE, run_dir=tmp_path, update=0)
    metrics = algo.prepare(make_batch([make_trajectory(0, 0, 1, True)], lengths=[1]), ctx)
    assert metrics["sdar/teacher_active_token_ratio"] == 1.0
