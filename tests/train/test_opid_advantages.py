"""OPID's fused advantage against hand-computed tensors: masks, routing modes, schedule, shaping."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from opid_train.algorithms.config import AnalyzerConfig, GRPOConfig, OPIDConfig, SDARConfig
from opid_train.algorithms.base import PrepareContext
from opid_train.algorithms.opid import OPID, shape_teacher_term
from opid_train.analyzers import Analysis
from opid_train.presets import grpo_with_parity
from opid_train.types import Batch, Step, Trajectory
from wrappers.prompt import PromptContext, PromptTemplate
from wrappers.skills import EPISODE_SKILL_HEADER, STEP_SKILL_HEADER

TEMPLATE = PromptTemplate()
PLAIN, WITH_EPISODE, WITH_STEP, WITH_BOTH = -1.0, -0.5, -0.2, -0.1


class SkillReadingScorer:
    """A stand-in for the policy in a unit test of the code around it: its log-prob of every
    response token depends only on which skill blocks the prompt carries, so the expected
    advantages can be computed by hand. It counts `score` calls to check the batching."""

    def __init__(self):
        self.texts: list[str] = []
        self.calls = 0

    def encode_prompt(self, text):
        self.texts.append(text)
        return [len(self.texts) - 1]

    def score(self, prompt_ids, response_ids, response_mask):
        self.calls += 1
        values = []
        for (i,) in prompt_ids:
            text = self.texts[i]
            ep, st = EPISODE_SKILL_HEADER in text, STEP_SKILL_HEADER in text
            values.append(WITH_BOTH if ep and st else WITH_EPISODE if ep else WITH_STEP if st else PLAIN)
        return torch.tensor(values)[:, None] * response_mask


def make_trajectory(traj_id, group_id, n_steps, won, task="open the door"):
    steps = []
    for t in range(n_steps):
        ctx = PromptContext(task=task, history=(), observation=f"cell {t}", admissible_actions=("go left", "go right"), step=t)
        steps.append(Step(t=t, observation=f"cell {t}", context=ctx, prompt=TEMPLATE.render(ctx),
                          response=f"<action>go right</action>", action="go right", reward=0.0,
                          format_valid=True, action_valid=True))
    steps[-1].reward = float(won)
    return Trajectory(env_id="toy", split="train", task=task, task_id=0, task_type="toy", group_id=group_id,
                      traj_id=traj_id, steps=steps, score=float(won), won=won)


def make_batch(trajectories, lengths):
    """One row per step; `lengths[row]` real tokens out of T = max(lengths)."""
    rows = [(i, t) for i, traj in enumerate(trajectories) for t in range(len(traj.steps))]
    T = max(lengths)
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])
    return Batch(
        trajectories=trajectories, rows=rows, prompt_ids=[[0] for _ in rows],
        response_ids=torch.ones(len(rows), T, dtype=torch.long), response_mask=mask,
        old_logp=PLAIN * mask,
        group_ids=torch.tensor([trajectories[i].group_id for i, _ in rows]),
        format_valid=torch.ones(len(rows), dtype=torch.bool),
    )


class FixedAnalyzer:
    name = "fixed"

    def __init__(self, analyses):
        self.analyses = analyses

    def analyze_many(self, trajectories):
        return [self.analyses[t.traj_id] for t in trajectories]


def train_config(**opid):
    return SimpleNamespace(grpo=grpo_with_parity(GRPOConfig(normalize_std=False), "ours"), analyzer=AnalyzerConfig(),
                           opid=OPIDConfig(**opid),
                           sdar=SDARConfig())


@pytest.fixture
def setup(tmp_path):
    # group 0: a success (2 steps, step 1 critical) and a failure (2 steps, analysis failed)
    trajs = [make_trajectory(0, 0, 2, True), make_trajectory(1, 0, 2, False)]
    analyses = {0: Analysis("won", "go right until the door", {1: "open the door now"}), 1: None}
    batch = make_batch(trajs, lengths=[3, 2, 1, 3])
    scorer = SkillReadingScorer()
    ctx = PrepareContext(policy=scorer, template=TEMPLATE, run_dir=tmp_path, update=0)
    return batch, analyses, scorer, ctx


def run(setup, **opid):
    batch, analyses, scorer, ctx = setup
    algo = OPID(train_config(**opid))
    algo.teacher.analyzer = FixedAnalyzer(analyses)
    metrics = algo.prepare(batch, ctx)
    return batch, metrics, scorer


def expected(a_ep_rows, terms, mask):
    return torch.tensor(a_ep_rows)[:, None] * mask + torch.tensor(terms)[:, None] * mask


@pytest.mark.parametrize("mode, terms", [
    # rows: (traj 0, step 0) (traj 0, step 1 critical) (traj 1 step 0) (traj 1 step 1); traj 1 has no analysis
    ("route", [1e-3 * 0.5, 2e-3 * 0.8, 0, 0]),                 # episode skill, then the step skill alone
    ("additive", [1e-3 * 0.5, 1e-3 * 0.5 + 2e-3 * 0.8, 0, 0]),  # both at the critical step, scored apart
    ("episode_only", [1e-3 * 0.5, 1e-3 * 0.5, 0, 0]),
    ("step_only", [0, 2e-3 * 0.8, 0, 0]),
])
def test_fused_advantage_per_routing_mode(setup, mode, terms):
    batch, metrics, scorer = run(setup, routing=mode, w_ep=1e-3, w_step=2e-3)
    # A_ep = R - mean(R) (normalize_std off): +0.5 for the success, -0.5 for the failure
    want = expected([0.5, 0.5, -0.5, -0.5], terms, batch.response_mask)
    torch.testing.assert_close(batch.advantages, want)
    assert scorer.calls == 1  # every teacher prompt of the batch in one score call
    assert (batch.advantages * (1 - batch.response_mask)).abs().sum() == 0  # pads stay 0
    assert metrics["opid/analysed_trajectories"] == 1 and metrics["opid/failed_trajectories"] == 1
    assert metrics["opid/critical_step_ratio"] == 0.5


def test_metrics_shares_and_active_ratio(setup):
    batch, metrics, _ = run(setup, routing="route", w_ep=1.0, w_step=1.0)
    # tokens: rows have 3, 2, 1, 3 real tokens; teacher active on rows 0 and 1 -> 5 of 9
    assert metrics["opid/teacher_active_token_ratio"] == pytest.approx(5 / 9)
    abs_ep, abs_sk_ep, abs_sk_st = 0.5, 0.5 * 3 / 9, 0.8 * 2 / 9
    total = abs_ep + abs_sk_ep + abs_sk_st
    assert metrics["opid/adv_ep_abs_mean"] == pytest.approx(abs_ep)
    assert metrics["opid/adv_skill_episode_abs_mean"] == pytest.approx(abs_sk_ep)
    assert metrics["opid/adv_skill_step_share"] == pytest.approx(abs_sk_st / total)
    assert metrics["opid/skills_applied_episode"] == 1 and metrics["opid/skills_applied_step"] == 1


def test_schedule_turns_the_teacher_off(setup):
    batch, analyses, scorer, ctx = setup
    for update, on in [(0, False), (2, True), (4, False)]:
        ctx.update = update
        algo = OPID(train_config(start_update=1, stop_update=4))
        algo.teacher.analyzer = FixedAnalyzer(analyses)
        algo.prepare(batch, ctx)
        # on: the route-mode teacher terms at w = 1e-3 (episode skill on row 0, step skill on row 1)
        terms = [1e-3 * (WITH_EPISODE - PLAIN), 1e-3 * (WITH_STEP - PLAIN), 0, 0] if on else [0, 0, 0, 0]
        torch.testing.assert_close(batch.advantages, expected([0.5, 0.5, -0.5, -0.5], terms, batch.response_mask))


def test_skills_dump_has_one_line_per_step(setup):
    batch, _, _ = run(setup, routing="route")
    lines = [json.loads(x) for x in (setup[3].run_dir / "skills.jsonl").read_text().splitlines()]
    assert [(x["traj_id"], x["step"], x["critical"]) for x in lines] == [(0, 0, False), (0, 1, True), (1, 0, False), (1, 1, False)]
    assert lines[0]["episode_skill"] == "go right until the door" and lines[0]["step_skill"] is None
    assert lines[1]["step_skill"] == "open the door now" and lines[1]["episode_skill"] is None
    assert not lines[2]["analysed"] and lines[2]["episode_skill"] is None
    # each response token with what its routed skill said of it: logp_skill - logp_old (raw, before any weight)
    assert len(lines[0]["tokens"]) == 3 and len(lines[1]["tokens"]) == 2  # the rows' real tokens, pads left out
    assert lines[0]["teacher_logp_diff"] == {"episode": [WITH_EPISODE - PLAIN] * 3}
    assert lines[1]["teacher_logp_diff"] == {"step": [pytest.approx(WITH_STEP - PLAIN)] * 2}
    assert lines[2]["teacher_logp_diff"] == {}  # no analysis, no skill, no teacher term
    # a resumed run (a new algorithm object) redoes update 0: its old lines are replaced, not duplicated
    run(setup, routing="route")
    assert len((setup[3].run_dir / "skills.jsonl").read_text().splitlines()) == 4


def test_teacher_term_normalization_and_clipping():
    d = torch.tensor([[1.0, 3.0, 9.0], [5.0, 0.0, 0.0]])
    active = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    z = shape_teacher_term(d, active, normalize=True, clip=None)
    # active values 1, 3, 5: mean 3, population std sqrt(8/3) (the reference's unbiased=False; the sample
    # std, 2, would give -1 / +1)
    s = math.sqrt(8 / 3)
    torch.testing.assert_close(z, torch.tensor([[-2 / s, 0.0, 0.0], [2 / s, 0.0, 0.0]]), atol=1e-5, rtol=0)
    # one active token: its std is 0, so the term is only centred (0), not divided by eps
    one = shape_teacher_term(d, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), normalize=True, clip=None)
    assert one.abs().sum().item() == 0.0
    clipped = shape_teacher_term(d, active, normalize=False, clip=2.0)
    torch.testing.assert_close(clipped, torch.tensor([[1.0, 2.0, 0.0], [2.0, 0.0, 0.0]]))


def test_unknown_routing_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="routing mode"):
        OPID(train_config(routing="both"))


def test_configured_teacher_shaping_reaches_the_advantage(setup):
    # clip 0.6: the step term 0.8 is clipped, the episode term 0.5 is not
    batch, _, _ = run(setup, routing="route", clip_teacher=0.6)
    torch.testing.assert_close(batch.advantages, expected([0.5, 0.5, -0.5, -0.5], [1e-3 * 0.5, 1e-3 * 0.6, 0, 0],
                                                          batch.response_mask))
    # z-normalization over each component's active tokens: every episode (and step) token has the same
    # raw term, so each becomes 0 and only A_ep is left
    batch, metrics, _ = run(setup, routing="route", normalize_teacher=True)
    torch.testing.assert_close(batch.advantages, expected([0.5, 0.5, -0.5, -0.5], [0, 0, 0, 0], batch.response_mask))
    assert metrics["opid/dlogp_episode_raw_mean"] == pytest.approx(0.5)  # reported before shaping
    assert metrics["opid/dlogp_step_raw_mean"] == pytest.approx(0.8)


def test_score_chunks_and_rescored_old_log_probs_are_used(setup):
    batch, analyses, scorer, ctx = setup
    batch.old_logp = -2.0 * batch.response_mask  # sampling log-probs that differ from a re-scoring (PLAIN)
    batch.prompt_ids = [scorer.encode_prompt(batch.step(row).prompt) for row in range(len(batch))]  # plain prompts
    for rescore_old, chunk_rows, calls, old in ((True, 1, 4, PLAIN), (False, 16, 1, -2.0)):
        algo = OPID(train_config(routing="route", rescore_old=rescore_old, score_chunk_rows=chunk_rows))
        algo.teacher.analyzer = FixedAnalyzer(analyses)
        scorer.calls = 0
        metrics = algo.prepare(batch, ctx)
        # rows 0 and 1 have a teacher (episode, step); with rescore_old their plain prompts are scored too
        assert scorer.calls == calls
        assert metrics["opid/dlogp_episode_raw_mean"] == pytest.approx(WITH_EPISODE - old)
        assert metrics["opid/dlogp_step_raw_mean"] == pytest.approx(WITH_STEP - old)


def test_component_means_and_tokens_dumped_as_text(setup):
    batch, analyses, scorer, ctx = setup
    scorer.tokenizer = SimpleNamespace(convert_ids_to_tokens=lambda ids: [f"tok{i}" for i in ids])
    algo = OPID(train_config(routing="route", w_ep=1.0, w_step=1.0))
    algo.teacher.analyzer = FixedAnalyzer(analyses)
    metrics = algo.prepare(batch, ctx)
    # A_ep +0.5 on 5 tokens, -0.5 on 4: mean 0.5 / 9; the skill terms 0.5 * 3 and 0.8 * 2 tokens over 9
    assert metrics["opid/adv_ep_mean"] == pytest.approx(0.5 / 9)
    assert metrics["opid/adv_skill_episode_mean"] == pytest.approx(1.5 / 9)
    assert metrics["opid/adv_skill_step_mean"] == pytest.approx(1.6 / 9)
    line = json.loads((ctx.run_dir / "skills.jsonl").read_text().splitlines()[0])
    assert line["tokens"] == ["tok1"] * 3  # the response ids are all 1


def test_analysis_counts_when_every_trajectory_is_analysed(setup):
    batch, analyses, scorer, ctx = setup
    analyses = {0: analyses[0], 1: Analysis("lost", "look for the door", {})}
    algo = OPID(train_config(routing="route"))
    algo.teacher.analyzer = FixedAnalyzer(analyses)
    metrics = algo.prepare(batch, ctx)
    assert metrics["opid/analysed_trajectories"] == 2 and metrics["opid/failed_trajectories"] == 0
    assert metrics["opid/critical_step_ratio"] == 0.25  # 1 critical step among 4 analysed rows
    assert metrics["opid/skills_applied_episode"] == 3 and metrics["opid/skills_applied_step"] == 1


@pytest.mark.parametrize("algorithm", ["opid", "sdar"])
def test_the_teacher_builds_the_configured_analyzer_on_first_use_with_the_policy(setup, algorithm):
    """No analyzer injected: the local analyzer of `analyzer.model: policy` is built once, from the config,
    and the policy itself writes the analyses that route the skills."""
    from opid_train.algorithms.sdar import SDAR
    from opid_train.policy.base import Generation

    batch, _, scorer, ctx = setup
    reply = '{"episode_summary": "s", "episode_skill": "keep going right", "step_skills": {"1": "open it"}}'

    class AnalysingScorer(SkillReadingScorer):
        def __init__(self):
            super().__init__()
            self.asked = []

        def generate(self, prompts, max_new_tokens, greedy=False, seed=None):
            self.asked.append((len(prompts), max_new_tokens, greedy))
            return [Generation(reply, [], [], []) for _ in prompts]

    policy = AnalysingScorer()
    ctx = PrepareContext(policy=policy, template=TEMPLATE, run_dir=ctx.run_dir, update=0)
    cfg = train_config()
    cfg.analyzer = AnalyzerConfig(backend="local", model="policy", cache=False, max_tokens=77)
    algo = {"opid": OPID, "sdar": SDAR}[algorithm](cfg)
    algo.prepare(batch, ctx)
    algo.prepare(batch, ctx)
    assert policy.asked == [(2, 77, True), (2, 77, True)]  # one analyzer, the configured one, per update
    # route: the step skill at the critical step 1, the episode skill at step 0, for both trajectories
    assert ctx.details["routed"] == [{"episode": "keep going right"}, {"step": "open it"}] * 2


def test_skills_dump_line_by_hand(setup, tmp_path):
    """Every field of a dumped line, text kept as written (ensure_ascii off), terms rounded to 4 places;
    the dump makes its folder."""
    from opid_train.algorithms.opid import dump_skills

    batch, analyses, scorer, ctx = setup
    batch.trajectories[0].task = "ouvrir la porte, café"
    batch.trajectories[0].group_id, batch.trajectories[0].task_id = 7, 12
    terms = {"episode": torch.full_like(batch.old_logp, 0.123456), "step": torch.full_like(batch.old_logp, -1.0)}
    path = tmp_path / "new" / "folder" / "skills.jsonl"
    routed = [{"episode": "go right"}, {"step": "open it"}, {}, {}]
    dump_skills(path, 3, batch, [analyses[0], None], routed, terms)
    raw = path.read_text(encoding="utf-8").splitlines()
    assert "ouvrir la porte, café" in raw[0]
    assert json.loads(raw[0]) == {
        "update": 3, "group_id": 7, "traj_id": 0, "task_id": 12, "task": "ouvrir la porte, café", "won": True,
        "step": 0, "analysed": True, "critical": False, "episode_skill": "go right", "step_skill": None,
        "tokens": [1, 1, 1], "teacher_logp_diff": {"episode": [0.1235] * 3}}
    assert json.loads(raw[3])["teacher_logp_diff"] == {} and json.loads(raw[3])["won"] is False


def test_forgetting_the_updates_redone_after_a_resume(tmp_path):
    from opid_train.algorithms.opid import forget_updates_from

    path = tmp_path / "skills.jsonl"
    forget_updates_from(path, 1)  # no dump yet: nothing to do, nothing written
    assert not path.exists()
    lines = ['{"update": 0, "task": "café"}\n', '{"other": "no update"}\n', '{"update": 1}\n', '\n', '{"update": 2}\n']
    path.write_text("".join(lines), encoding="utf-8")
    forget_updates_from(path, 1)
    # updates 1 and 2 will be written again; a line without an update counts as before any, blank lines go
    assert path.read_text(encoding="utf-8") == lines[0] + lines[1]
    forget_updates_from(path, 5)
    assert path.read_text(encoding="utf-8") == lines[0] + lines[1]


DUMP_AND_RESUME = """
import pickle, sys
from pathlib import Path
from opid_train.algorithms.opid import dump_skills, forget_updates_from

path, batch = Path(sys.argv[1]), pickle.loads(Path(sys.argv[2]).read_bytes())
for update in (1, 2):
    dump_skills(path, update, batch, [None], [{}])
forget_updates_from(path, 2)  # resumed from the checkpoint of update 1
"""


def test_the_skills_dump_is_utf8_on_an_ascii_locale(tmp_path):
    """A run on a machine whose locale is plain C (ASCII, as in a bare container) dumps a task written "café"
    and forgets the updates its resume redoes exactly as a run on a UTF-8 locale does."""
    import os
    import pickle
    import subprocess
    import sys
    from pathlib import Path

    import opid_train
    from opid_train.algorithms.opid import dump_skills, forget_updates_from

    batch = make_batch([make_trajectory(0, 0, 1, True, task="ouvrir la porte, café")], lengths=[2])
    utf8 = tmp_path / "utf8.jsonl"
    for update in (1, 2):
        dump_skills(utf8, update, batch, [None], [{}])
    forget_updates_from(utf8, 2)
    assert [json.loads(line)["task"] for line in utf8.read_text(encoding="utf-8").splitlines()] == ["ouvrir la porte, café"]
    (tmp_path / "batch.pkl").write_bytes(pickle.dumps(batch))
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONPATH": str(Path(opid_train.__file__).parents[1])}
    run = subprocess.run([sys.executable, "-c", DUMP_AND_RESUME, str(tmp_path / "c.jsonl"), str(tmp_path / "batch.pkl")],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "c.jsonl").read_bytes() == utf8.read_bytes()


def test_sdar_scores_only_the_teacher_prompts(setup):
    """score_teacher's default leaves out the old policy's re-scoring (SDAR relies on it)."""
    from opid_train.algorithms.opid import score_teacher

    batch, _, scorer, ctx = setup
    teacher = score_teacher(batch, ctx, [(0, "teacher", "with a skill")])
    assert set(teacher) == {"teacher"} and scorer.texts == ["with a skill"]
    torch.testing.assert_close(teacher["teacher"][0], PLAIN * batch.response_mask[0])
    assert not teacher["teacher"][1:].any()


def test_active_ratio_of_a_one_token_batch(tmp_path):
    batch = make_batch([make_trajectory(0, 0, 1, True)], lengths=[1])
    algo = OPID(train_config(routing="route"))
    algo.teacher.analyzer = FixedAnalyzer({0: Analysis("won", "go right", {})})
    ctx = PrepareContext(policy=SkillReadingScorer(), template=TEMPLATE, run_dir=tmp_path, update=0)
    assert algo.prepare(batch, ctx)["opid/teacher_active_token_ratio"] == 1.0


def test_prepare_hands_the_analyses_and_raw_teacher_terms_to_the_records(setup):
    """ctx.details feeds the trajectory records: the analyses as the analyzer wrote them (None where it
    failed), and per component the raw logp_skill - logp_old on the tokens it scored, before any weight."""
    batch, analyses, _, ctx = setup
    run(setup, routing="route", w_ep=0.3, w_step=0.7)
    mask = batch.response_mask
    assert ctx.details["analyses"] == [analyses[0], None]
    assert ctx.details["routed"] == [{"episode": "go right until the door"}, {"step": "open the door now"}, {}, {}]
    terms = ctx.details["teacher_terms"]
    assert set(terms) == {"episode", "step"}
    torch.testing.assert_close(terms["episode"], torch.tensor([[WITH_EPISODE - PLAIN], [0.0], [0.0], [0.0]]) * mask)
    torch.testing.assert_close(terms["step"], torch.tensor([[0.0], [WITH_STEP - PLAIN], [0.0], [0.0]]) * mask)


def test_raw_mean_of_a_component_without_tokens_is_zero(tmp_path):
    """The critical step's response is empty: its step skill is routed, but no token measures it."""
    trajs = [make_trajectory(0, 0, 2, True), make_trajectory(1, 0, 2, False)]
    batch = make_batch(trajs, lengths=[3, 0, 1, 3])
    algo = OPID(train_config(routing="route"))
    algo.teacher.analyzer = FixedAnalyzer({0: Analysis("won", "go right", {1: "open it"}), 1: None})
    ctx = PrepareContext(policy=SkillReadingScorer(), template=TEMPLATE, run_dir=tmp_path, update=0)
    metrics = algo.prepare(batch, ctx)
    assert metrics["opid/dlogp_step_raw_mean"] == 0.0
    assert metrics["opid/dlogp_episode_raw_mean"] == pytest.approx(WITH_EPISODE - PLAIN)


def test_score_prompts_tells_a_real_token_0_from_padding():
    """Two responses to one prompt, [5, 0] with both tokens real and [5] padded with id 0: two distinct pairs.
    Token 0 is a real token in most vocabularies; only the mask says which 0 is padding."""
    from opid_train.algorithms.opid import score_prompts

    class TokenScorer:  # log-prob -(id + 1) per real token, 0 on padding
        def __init__(self):
            self.rows = 0

        def score(self, prompt_ids, response_ids, response_mask):
            self.rows += len(prompt_ids)
            return -(response_ids.float() + 1) * response_mask

    scorer = TokenScorer()
    got = score_prompts(scorer, [[7], [7]], torch.tensor([[5, 0], [5, 0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert scorer.rows == 2
    torch.testing.assert_close(got, torch.tensor([[-6.0, -1.0], [-6.0, 0.0]]))


def test_score_prompts_chunks_prompts_of_similar_length_together():
    """A chunk is padded to its longest prompt, so the pairs are sorted by prompt length before they are cut
    into chunks (a short prompt is not padded to a long one); the rows still come back in the order given."""
    from opid_train.algorithms.opid import score_prompts

    class LengthScorer:  # log-prob: the prompt's length, on every real token
        def __init__(self):
            self.chunks = []

        def score(self, prompt_ids, response_ids, response_mask):
            self.chunks.append([len(p) for p in prompt_ids])
            return torch.tensor([[float(len(p))] for p in prompt_ids]) * response_mask

    scorer = LengthScorer()
    prompts = [[1] * 5, [2], [3] * 5, [4]]
    got = score_prompts(scorer, prompts, torch.ones(4, 1, dtype=torch.long), torch.ones(4, 1), chunk_rows=2)
    assert scorer.chunks == [[1, 1], [5, 5]]
    assert got[:, 0].tolist() == [5.0, 1.0, 5.0, 1.0]


def test_normalizing_a_teacher_term_without_active_tokens_gives_zeros_not_nan():
    """A routed component whose rows have no response token (an empty response): nothing to normalize over."""
    d = torch.tensor([[1.0, 3.0], [5.0, 0.0]])
    shaped = shape_teacher_term(d, torch.zeros(2, 2), normalize=True, clip=None)
    assert shaped.tolist() == [[0.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("gap", [1e-6, 2e-6, 4e-6])
def test_teacher_term_with_a_std_at_most_eps_is_only_centred(gap):
    """Two active terms 0 and gap: mean and population std gap / 2. A std at most eps (1e-6, reached
    exactly at gap 2e-6) is noise: the terms are only centred, +-gap / 2, not blown up to +-1/2 by the
    division; above it they are z-scores, +-(gap / 2) / (gap / 2 + eps)."""
    half = gap / 2
    expected = half if half <= 1e-6 else half / (half + 1e-6)
    shaped = shape_teacher_term(torch.tensor([[0.0, gap]]), torch.ones(1, 2), normalize=True, clip=None)
    torch.testing.assert_close(shaped, torch.tensor([[-expected, expected]]), rtol=1e-4, atol=0)


def test_teacher_term_clipping_is_symmetric():
    shaped = shape_teacher_term(torch.tensor([[-5.0, 1.0, 3.0]]), torch.ones(1, 3), normalize=False, clip=2.0)
    assert shaped.tolist() == [[-2.0, 1.0, 2.0]]


def test_critical_step_ratio_of_a_single_analysed_critical_step(tmp_path):
    batch = make_batch([make_trajectory(0, 0, 1, True)], lengths=[2])
    algo = OPID(train_config(routing="route"))
    algo.teacher.analyzer = FixedAnalyzer({0: Analysis("won", "go right", {0: "open it"})})
    ctx = PrepareContext(policy=SkillReadingScorer(), template=TEMPLATE, run_dir=tmp_path, update=0)
    assert algo.prepare(batch, ctx)["opid/critical_step_ratio"] == 1.0  # 1 critical step of 1 analysed row
