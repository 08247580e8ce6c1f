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


def test_summaries_of_the_same_tasks_pair_up_episode_by_episode():
    from opid_train.evaluate import paired_episodes

    warm = {"won": {"7": [True, False], "3": [False]}}
    rl = {"won": {"3": [True], "7": [True, True]}}
    before, after = paired_episodes([(warm, rl), ({"won": {"1": [True]}}, {"won": {"1": [False]}})])
    assert before == [False, True, False, True] and after == [True, True, True, False]
