import math

import pytest

from opid_train.evaluate import paired_test


def test_only_discordant_pairs_count_and_p_is_the_binomial_tail():
    before = [True] * 10 + [False] * 5 + [False, True]
    after = [True] * 10 + [True] * 5 + [False, False]  # 5 gained, 1 lost, 11 unchanged
    r = paired_test(before, after)
    assert (r["gained"], r["lost"], r["episodes"]) == (5, 1, 17)
    assert r["p_one_sided"] == pytest.approx((math.comb(6, 5) + math.comb(6, 6)) / 2**6)
    assert r["after"] - r["before"] == pytest.approx(4 / 17)


def test_no_change_or_a_loss_is_not_evidence_of_a_gain():
    same = [True, False, True]
    assert paired_test(same, same)["p_one_sided"] == 1.0
    worse = paired_test([True] * 8, [False] * 8)
    assert worse["gained"] == 0 and worse["p_one_sided"] == 1.0


def test_unpaired_results_are_refused():
    with pytest.raises(ValueError, match="same episodes"):
        paired_test([True, False], [True])


def test_summaries_of_the_same_tasks_pair_up_episode_by_episode_and_task_by_task():
    from opid_train.evaluate import paired_comparison

    warm = {"won": {"7": [True, False], "3": [False]}}
    rl = {"won": {"3": [True], "7": [True, True]}}
    r = paired_comparison([(warm, rl), ({"won": {"1": [True]}}, {"won": {"1": [False]}})])
    assert (r["episodes"], r["gained"], r["lost"]) == (4, 2, 1)  # task 3 gained, 7 gained once, 1 lost
    assert (r["task_level"]["tasks"], r["task_level"]["improved"], r["task_level"]["worsened"]) == (3, 2, 1)


def test_task_level_test_counts_a_task_once_however_many_episodes_it_has():
    from opid_train.evaluate import task_level_test

    flip = ([False] * 4, [True] * 4)  # 4 episodes that moved together: one task of evidence
    r = task_level_test([flip] * 3)
    assert (r["tasks"], r["improved"], r["worsened"]) == (3, 3, 0)
    assert r["p_one_sided"] == pytest.approx(1 / 8, abs=0.01)  # exact: 3 fair coins all heads
    # the episode-level test sees 12 discordant pairs and a far smaller p from the same data
    assert paired_test(flip[0] * 3, flip[1] * 3)["p_one_sided"] == pytest.approx(2 ** -12)
    # 8 tasks up, 2 down by the same amount: P(Binomial(10, 1/2) >= 8)
    mixed = task_level_test([flip] * 8 + [(flip[1], flip[0])] * 2)
    assert mixed["p_one_sided"] == pytest.approx(56 / 1024, abs=0.01)
    assert mixed["mean_change"] == pytest.approx(0.6)


def test_task_level_test_weighs_the_size_of_each_change_and_finds_no_gain_in_a_loss():
    from opid_train.evaluate import task_level_test

    small_gains = [([False] * 4, [True] + [False] * 3)] * 2  # +0.25 twice
    big_loss = [([True] * 4, [False] * 4)]  # -1
    r = task_level_test(small_gains + big_loss)
    assert r["improved"] == 2 and r["worsened"] == 1 and r["p_one_sided"] == 1.0
    unchanged = task_level_test([([True, False], [False, True])])  # same rate: no evidence either way
    assert unchanged["improved"] == unchanged["worsened"] == 0 and unchanged["p_one_sided"] == 1.0


def test_summary_counts_steps_that_did_nothing():
    from opid_train.evaluate import format_table, summarize
    from opid_train.types import Step, Trajectory

    def step(t, format_valid, action_valid):
        return Step(t=t, observation="", context=None, prompt="", response="", action="go", reward=0.0,
                    format_valid=format_valid, action_valid=action_valid)

    # one malformed response, one well-formed action the env rejected, two that worked
    steps = [step(0, False, False), step(1, True, False), step(2, True, True), step(3, True, True)]
    traj = Trajectory(env_id="toy", split="test", task="t", task_id=3, task_type="pick", group_id=0, traj_id=0,
                      steps=steps, score=0.5, won=False)
    summary = summarize([traj])
    assert summary["all"]["format_invalid_rate"] == 0.25 and summary["all"]["action_invalid_rate"] == 0.5
    assert summary["won"] == {"3": [False]}
    table = format_table({"test": summary})
    assert table.splitlines()[0].split()[-1] == "invalid" and table.splitlines()[1].split()[-1] == "50.0%"
    del summary["all"]["action_invalid_rate"]  # a summary written before the column existed
    assert format_table({"test": summary}).splitlines()[1].split()[-1] == "-"


def test_summary_of_several_episodes_and_types_by_hand():
    from opid_train.evaluate import summarize
    from opid_train.types import Step, Trajectory

    def traj(task_id, task_type, won, score, steps):  # steps: (format_valid, action_valid) per step
        return Trajectory(env_id="toy", split="test", task="t", task_id=task_id, task_type=task_type, group_id=0,
                          traj_id=task_id, score=score, won=won,
                          steps=[Step(t=i, observation="", context=None, prompt="", response="", action="go",
                                      reward=0.0, format_valid=f, action_valid=a) for i, (f, a) in enumerate(steps)])

    summary = summarize([traj(1, "pick", True, 1.0, [(True, True), (True, True)]),
                         traj(2, "pick", False, 0.25, [(False, False)]),
                         traj(1, "look", True, 1.0, [(False, False)])])
    # 3 episodes, 2 won, scores 1 + 0.25 + 1, 4 steps: 2 malformed (so they did nothing)
    assert summary["all"] == {"episodes": 3, "success": pytest.approx(2 / 3), "score": pytest.approx(0.75),
                              "mean_steps": pytest.approx(4 / 3), "format_invalid_rate": 0.5,
                              "action_invalid_rate": 0.5}
    assert summary["by_type"]["pick"] == {"episodes": 2, "success": 0.5, "score": 0.625, "mean_steps": 1.5,
                                          "format_invalid_rate": pytest.approx(1 / 3),
                                          "action_invalid_rate": pytest.approx(1 / 3)}
    assert summary["by_type"]["look"] == {"episodes": 1, "success": 1.0, "score": 1.0, "mean_steps": 1.0,
                                          "format_invalid_rate": 1.0, "action_invalid_rate": 1.0}
    assert summary["won"] == {"1": [True, True], "2": [False]}


def test_one_episode_pair():
    assert paired_test([False], [True]) == {"episodes": 1, "before": 0.0, "after": 1.0, "gained": 1, "lost": 0,
                                            "p_one_sided": 0.5}
    assert paired_test([True], [False])["before"] == 1.0 and paired_test([True], [False])["after"] == 0.0


def test_task_level_test_edge_cases_by_hand():
    from opid_train.evaluate import task_level_test

    up, down = ([False], [True]), ([True], [False])
    # a task without episodes on one side carries no evidence and is not counted
    assert task_level_test([([], [True]), up])["tasks"] == 1
    # gains and losses that cancel: no gain, p = 1 without sampling
    cancel = task_level_test([up, down])
    assert (cancel["improved"], cancel["worsened"], cancel["mean_change"], cancel["p_one_sided"]) == (1, 1, 0.0, 1.0)
    # two gains of 0.25 (sum 0.5): only the all-positive sign pattern of 4 reaches it, p = 1/4
    quarter = ([False] * 4, [True] + [False] * 3)
    small = task_level_test([quarter, quarter])
    assert small["p_one_sided"] == pytest.approx(1 / 4, abs=0.01) and small["mean_change"] == 0.25
    # p is (hits + 1) / (rounds + 1): without rounds there is no evidence, p = 1
    assert task_level_test([up, up], rounds=0)["p_one_sided"] == 1.0
    assert task_level_test([up, up, up], rounds=50)["p_one_sided"] == task_level_test([up, up, up], rounds=50)["p_one_sided"]
    assert task_level_test([])["mean_change"] == 0.0 and task_level_test([])["p_one_sided"] == 1.0


def test_task_level_test_says_what_change_an_evaluation_of_its_size_can_detect():
    from statistics import NormalDist

    from opid_train.evaluate import task_level_test

    up, flat, down = ([False], [True]), ([True], [True]), ([True], [False])
    # d = [1, 1, 0, -1]: sample sd sqrt(11/12); (z_0.95 + z_0.8) * sd / sqrt(4)
    z = NormalDist().inv_cdf(0.95) + NormalDist().inv_cdf(0.8)
    assert task_level_test([up, up, flat, down])["detectable_change"] == pytest.approx(z * (11 / 12) ** 0.5 / 2)
    # four times the tasks: sum of squared deviations 4 * 11/4, sd sqrt(11/15), over sqrt(16)
    assert task_level_test([up, up, flat, down] * 4)["detectable_change"] == pytest.approx(z * (11 / 15) ** 0.5 / 4)
    # two tasks already have a spread: d = [1, -1], sd sqrt(2), over sqrt(2); one task has none
    assert task_level_test([up, down])["detectable_change"] == pytest.approx(z)
    assert task_level_test([flat])["detectable_change"] == 0.0 and task_level_test([up])["detectable_change"] == 0.0


def test_the_main_jobs_verdict_tells_a_user_what_one_seed_could_not_show():
    from opid_train.cli.main import verdict

    def result(before: list[bool], after: list[bool]) -> dict:
        return {"initial": {"valid_seen": {"won": {str(i): [b] for i, b in enumerate(before)}}},
                "final": {"valid_seen": {"won": {str(i): [a] for i, a in enumerate(after)}}}}

    level = result([True, False] * 20, [True, False] * 19 + [False, True])  # 1 task up, 1 down
    text, stored = verdict({0: level})
    assert text.startswith("RL is NOT measurably above") and not stored["measurably_above"]
    assert "One seed is one RL run" in text and "SEEDS=0,1,2 make run" in text
    assert f"about {100 * stored['task_level']['detectable_change']:.1f} points" in text and "+0.0" in text
    assert "minutes a seed" not in text  # the job did not know what a seed costs here
    text, _ = verdict({0: level}, minutes=19.4)
    assert "(each seed is a run of this job, about 19 minutes a seed here;" in text
    gain = result([False] * 40, [True] * 20 + [False] * 20)  # 20 tasks up, none down
    text, stored = verdict({0: gain})
    assert stored["measurably_above"] and "SEEDS=" not in text


def test_a_seeds_minutes_add_up_its_warm_start_updates_and_evaluation(tmp_path):
    import json

    from opid_train.cli.main import seed_minutes

    (tmp_path / "warmstart.json").write_text(json.dumps({"demo_seconds": 30, "bc_seconds": 330}))
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps(row) for row in [{"update": 0, "rollout_seconds": 100, "update_seconds": 50, "record_seconds": 10},
                                              {"update": 1, "rollout_seconds": 80, "update_seconds": 40}]) + "\n")
    assert seed_minutes(tmp_path) is None  # not evaluated yet
    (tmp_path / "main_eval.json").write_text(json.dumps({"key": "k", "results": {}, "seconds": 600}))
    assert seed_minutes(tmp_path) == (30 + 330 + 100 + 50 + 10 + 80 + 40 + 600) / 60
    (tmp_path / "warmstart.json").unlink()  # RL from a reused warm start (--init): BC's time is unknown
    assert seed_minutes(tmp_path) is None


def _tasks(changes_in_quarters):
    """One task of 4 episodes per change: before wins none, after wins `q` (a change of q/4), or the reverse."""
    return [([False] * 4, [True] * q + [False] * (4 - q)) if q >= 0 else ([True] * -q + [False] * (4 + q), [False] * 4)
            for q in changes_in_quarters]


def test_task_level_p_matches_the_exact_sign_flip_distribution():
    import itertools

    import numpy as np

    from opid_train.evaluate import task_level_test

    quarters = [4, 2, -1, 3, -2, 1, 4, -4, 2, 1]
    d = np.array(quarters) / 4
    # exact: the share of all 2^10 sign patterns whose signed sum reaches the observed one
    exact = np.mean([np.dot(s, d) >= d.sum() - 1e-9 for s in itertools.product([-1, 1], repeat=len(d))])
    r = task_level_test(_tasks(quarters))
    assert r["p_one_sided"] == pytest.approx(exact, abs=0.015)  # 20,000 rounds: standard error < 0.004
    assert (r["tasks"], r["improved"], r["worsened"], r["mean_change"]) == (10, 7, 3, pytest.approx(d.mean()))


@pytest.mark.parametrize("rounds", [1, 1500, 20_000])  # with seed 7 the first pattern reaches the gain
def test_task_level_p_counts_exactly_rounds_seeded_sign_flips(rounds):
    """Reproducible: p = (k + 1) / (rounds + 1), k over the first `rounds` sign patterns of default_rng(seed)."""
    import numpy as np

    from opid_train.evaluate import task_level_test

    quarters = [2, 1, -1, 3]
    d = np.array(quarters) / 4
    signs = np.random.default_rng(7).choice([-1.0, 1.0], size=(rounds, len(d)))
    hits = int((signs @ d >= d.sum() - 1e-9).sum())
    assert task_level_test(_tasks(quarters), rounds=rounds, seed=7)["p_one_sided"] == (hits + 1) / (rounds + 1)


def test_task_level_defaults_are_20000_rounds_from_seed_0():
    from opid_train.evaluate import task_level_test

    tasks = _tasks([2, 1, -1, 3])
    assert task_level_test(tasks) == task_level_test(tasks, rounds=20_000, seed=0)
    assert task_level_test(tasks) != task_level_test(tasks, rounds=20_000, seed=1)
    assert task_level_test(tasks) != task_level_test(tasks, rounds=20_001, seed=0)


def test_table_as_printed():
    from opid_train.evaluate import format_table

    def row(episodes, success, score, steps, invalid):
        return {"episodes": episodes, "success": success, "score": score, "mean_steps": steps,
                "action_invalid_rate": invalid}

    results = {"test": {"all": row(3, 2 / 3, 0.75, 4 / 3, 0.5),
                        "by_type": {"look": row(1, 1.0, 1.0, 1.0, 1.0), "pick": row(2, 0.5, 0.625, 1.5, 1 / 3)}},
               "valid_unseen": {"all": row(10, 0.1, 0.2, 12.0, 0.0), "by_type": {}}}
    assert format_table(results, title="after RL").splitlines() == [
        "after RL",
        "split          task type                          episodes  success   score  steps  invalid",
        "test           ALL                                       3    66.7%   0.750    1.3    50.0%",
        "test           look                                      1   100.0%   1.000    1.0   100.0%",
        "test           pick                                      2    50.0%   0.625    1.5    33.3%",
        "valid_unseen   ALL                                      10    10.0%   0.200   12.0     0.0%",
    ]
    assert format_table(results).splitlines()[0].startswith("split ")  # no title line without a title


def test_the_main_job_compares_on_the_reference_protocol_and_greedy_only_when_asked():
    from opid_train.cli.main import main_config, parse_args, protocols

    cfg = main_config()
    assert list(protocols(cfg)) == ["sampled, T=0.4, 2 per task"]
    assert protocols(cfg, also_greedy=True)["greedy"] == {"greedy": True}
    assert parse_args(["--also-greedy"]).also_greedy and not parse_args([]).also_greedy
