import pytest

from opid_train.rollout import spread_task_ids


def test_subset_spreads_over_the_split_and_covers_every_block():
    ids = spread_task_ids(60, 6)
    assert ids == [0, 10, 20, 30, 40, 50]
    # a suite listing two task types in blocks of 30: a subset of 10 reaches both blocks
    assert {i // 30 for i in spread_task_ids(60, 10)} == {0, 1}


def test_all_tasks_when_count_is_none_zero_or_too_large():
    assert spread_task_ids(5) == spread_task_ids(5, 0) == spread_task_ids(5, 9) == [0, 1, 2, 3, 4]


def test_ids_are_distinct_and_in_range():
    for n, k in [(7, 3), (300, 180), (13, 13)]:
        ids = spread_task_ids(n, k)
        assert len(set(ids)) == k and 0 <= min(ids) and max(ids) < n


def test_warm_start_demos_reach_every_task_type_and_cycle_when_asked_for_more():
    from opid_train.cli.train import demo_tasks

    few = demo_tasks("train", 300, 150)  # two types in blocks of 150: a prefix would show one type only
    assert len(few) == 150 and {t // 150 for _, t in few} == {0, 1} and {s for s, _ in few} == {"train"}
    many = demo_tasks("train", 4, 10)
    assert [t for _, t in many] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_rl_tasks_leave_out_the_demonstrated_ones_when_asked():
    from opid_train.cli.train import demo_tasks, rl_task_ids
    from opid_train.config import TrainConfig, WarmstartConfig

    cfg = TrainConfig(warmstart=WarmstartConfig(episodes=200))
    assert rl_task_ids(cfg, 300) == list(range(300))  # default: every task, demonstrated or not
    held_out = rl_task_ids(TrainConfig(warmstart=WarmstartConfig(episodes=200), exclude_demo_tasks=True), 300)
    demonstrated = {t for _, t in demo_tasks("train", 300, 200)}
    assert len(held_out) == 100 and not demonstrated & set(held_out)
    assert {t % 2 for t in held_out} == {0, 1}  # the easy suite alternates its two task types
    subset = rl_task_ids(TrainConfig(warmstart=WarmstartConfig(episodes=200), exclude_demo_tasks=True,
                                     num_train_tasks=10), 300)
    assert len(subset) == 10 and set(subset) <= set(held_out)
    with pytest.raises(ValueError, match="demonstrate all 300"):
        rl_task_ids(TrainConfig(warmstart=WarmstartConfig(episodes=300), exclude_demo_tasks=True), 300)
