"""Teacher re-scoring with a real (tiny, random) transformer: batched, chunked and one-by-one agree."""

import copy
from types import SimpleNamespace

import pytest
import torch

from opid_train.algorithms.base import PrepareContext
from opid_train.algorithms.config import AnalyzerConfig, GRPOConfig, OPIDConfig, SDARConfig
from opid_train.algorithms.opid import OPID, score_prompts
from opid_train.algorithms.sdar import SDAR
from opid_train.analyzers import Analysis
from opid_train.learner import make_batch
from opid_train.policy.presets import TinyConfig, tiny_policy
from opid_train.presets import grpo_with_parity
from tests.train.test_opid_advantages import TEMPLATE, FixedAnalyzer, make_trajectory


@pytest.fixture(scope="module")
def policy_and_trajectories(tmp_path_factory):
    """One tiny random transformer and its sampled rollouts for the whole module (built once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPID_CACHE", str(tmp_path_factory.mktemp("cache")))
        trajs = [make_trajectory(0, 0, 3, True), make_trajectory(1, 0, 2, False, task="open the red door")]
        texts = [s.prompt + " <action>go right</action>" for t in trajs for s in t.steps] * 4
        policy = tiny_policy(texts, seed=0, config=TinyConfig(hidden_size=32, num_layers=1, num_heads=2,
                                                               intermediate_size=64, vocab_size=300))
    for traj in trajs:  # real sampled responses and their sampling log-probs
        gens = policy.generate([s.prompt for s in traj.steps], max_new_tokens=5, seed=traj.traj_id)
        for step, gen in zip(traj.steps, gens):
            step.prompt_ids, step.response_ids, step.old_logprobs = gen.prompt_ids, gen.response_ids, gen.logprobs
    return policy, trajs


@pytest.fixture
def policy_and_batch(policy_and_trajectories, tmp_path):
    policy, trajs = policy_and_trajectories
    analyses = {0: Analysis("won", "go right until the door", {2: "open the door now"}),
                1: Analysis("lost", "look for the red door", {})}
    return policy, make_batch(copy.deepcopy(trajs)), analyses, PrepareContext(policy, TEMPLATE, tmp_path, 0)


def one_by_one(policy, batch, row, **skills):
    ids = policy.encode_prompt(TEMPLATE.render(batch.step(row).context, **skills))
    return policy.score([ids], batch.response_ids[row:row + 1], batch.response_mask[row:row + 1])[0]


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_fused_advantage_matches_one_by_one_scoring(policy_and_batch, chunk_rows):
    policy, batch, analyses, ctx = policy_and_batch
    cfg = SimpleNamespace(grpo=grpo_with_parity(GRPOConfig(), "ours"), analyzer=AnalyzerConfig(), sdar=SDARConfig(),
                          opid=OPIDConfig(w_ep=0.5, w_step=0.25, rescore_old=True, score_chunk_rows=chunk_rows))
    algo = OPID(cfg)
    algo.teacher.analyzer = FixedAnalyzer(analyses)
    a_ep = (algo.grpo.prepare(batch, ctx), batch.advantages.clone())[1]
    algo.prepare(batch, ctx)
    for row, (traj, t) in enumerate(batch.rows):
        plain = policy.score([batch.prompt_ids[row]], batch.response_ids[row:row + 1], batch.response_mask[row:row + 1])[0]
        if (traj, t) == (0, 2):
            want = 0.25 * (one_by_one(policy, batch, row, step_skill="open the door now") - plain)
        else:
            want = 0.5 * (one_by_one(policy, batch, row, episode_skill=analyses[traj].episode_skill) - plain)
        torch.testing.assert_close(batch.advantages[row] - a_ep[row], want * batch.response_mask[row], atol=2e-6, rtol=1e-4)
    # the sampling log-probs agree with the re-scored ones on CPU (fp32)
    torch.testing.assert_close(batch.old_logp, torch.stack([
        policy.score([batch.prompt_ids[r]], batch.response_ids[r:r + 1], batch.response_mask[r:r + 1])[0]
        for r in range(len(batch))]), atol=1e-4, rtol=1e-4)


def test_sdar_teacher_is_the_routed_prompt(policy_and_batch):
    policy, batch, analyses, ctx = policy_and_batch
    algo = SDAR(SimpleNamespace(grpo=grpo_with_parity(GRPOConfig(), "ours"), analyzer=AnalyzerConfig(), opid=OPIDConfig(),
                                sdar=SDARConfig()))
    algo.teacher.analyzer = FixedAnalyzer(analyses)
    algo.prepare(batch, ctx)
    row = batch.rows.index((0, 2))
    torch.testing.assert_close(batch.extras["teacher_logp"][row],
                               one_by_one(policy, batch, row, step_skill="open the door now"), atol=2e-6, rtol=1e-4)
    logp = policy.logprobs(batch.prompt_ids, batch.response_ids, batch.response_mask)
    loss, shares = algo.extra_loss(batch, logp)
    metrics = algo.finish_metrics(shares)  # as the learner logs them
    loss.backward()  # a real gradient reaches the weights
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    # by the formula, every row has a teacher here: g = sigmoid(5 (T - logp)), L = 0.01 * token_mean(g (T - logp))
    mask, gap = batch.response_mask, (batch.extras["teacher_logp"] - logp).detach()
    gate = torch.sigmoid(5.0 * gap)
    assert metrics["sdar/gate_mean"] == pytest.approx(((gate * mask).sum() / mask.sum()).item(), rel=1e-5)
    assert loss.item() == pytest.approx(0.01 * ((gate * gap * mask).sum() / mask.sum()).item(), rel=1e-5)
    assert metrics["sdar/gate_active_ratio"] == pytest.approx((((gap > 0) * mask).sum() / mask.sum()).item())


class RowCounter:
    def __init__(self, policy):
        self.policy, self.rows = policy, []

    def score(self, prompt_ids, response_ids, response_mask):
        self.rows.append(len(prompt_ids))
        return self.policy.score(prompt_ids, response_ids, response_mask)


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_score_prompts_scores_each_distinct_pair_once(policy_and_batch, chunk_rows):
    policy, batch, _, _ = policy_and_batch
    rows = torch.tensor([0, 1, 0, 2, 1, 0])  # rows 0 and 1 repeated
    counter = RowCounter(policy)
    got = score_prompts(counter, [batch.prompt_ids[i] for i in rows.tolist()], batch.response_ids[rows],
                        batch.response_mask[rows], chunk_rows)
    assert sum(counter.rows) == 3 and max(counter.rows) <= (chunk_rows or 3)
    want = policy.score([batch.prompt_ids[i] for i in rows.tolist()], batch.response_ids[rows], batch.response_mask[rows])
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-4)


def test_score_prompts_keeps_different_responses_to_one_prompt(policy_and_batch):
    policy, batch, _, _ = policy_and_batch
    counter = RowCounter(policy)
    rows = torch.tensor([0, 1])
    assert not torch.equal(batch.response_ids[0] * batch.response_mask[0], batch.response_ids[1] * batch.response_mask[1])
    got = score_prompts(counter, [batch.prompt_ids[0]] * 2, batch.response_ids[rows], batch.response_mask[rows])
    assert counter.rows == [2]  # the same prompt, two responses: two pairs
    want = policy.score([batch.prompt_ids[0]] * 2, batch.response_ids[rows], batch.response_mask[rows])
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-4)
