import pytest
from pettingzoo.test import parallel_api_test

from opid_envs.group import GroupEnv


def test_group_env_passes_pettingzoo_parallel_api_test(toy_id):
    # the API test resets with a dummy option, {"options": ...}, which the envs report rather than ignore silently
    with pytest.warns(UserWarning, match=r"ignores unknown reset options \['options'\]"):
        parallel_api_test(GroupEnv(toy_id, n=4), num_cycles=20)


def test_all_rollouts_share_the_task_and_initial_state(toy_id):
    group = GroupEnv(toy_id, n=3)
    observations, infos = group.reset(seed=5)
    assert len({infos[a]["task_id"] for a in group.agents}) == 1
    assert len(set(observations.values())) == 1
    observations, infos = group.reset(seed=5, options={"split": "test", "task_id": 2})
    assert all(infos[a]["task_id"] == 2 and infos[a]["split"] == "test" for a in group.agents)


def test_finished_rollouts_leave_the_group(toy_id):
    group = GroupEnv(toy_id, n=2)
    group.reset(options={"task_id": 0})
    group.step({"rollout_0": "take key", "rollout_1": "go right"})
    for _ in range(3):
        group.step({"rollout_0": "go right", "rollout_1": "go left"})
    _, rewards, terms, _, _ = group.step({"rollout_0": "open door", "rollout_1": "go left"})
    assert terms["rollout_0"] and rewards["rollout_0"] == 1.0
    assert group.agents == ["rollout_1"]
    with pytest.raises(KeyError, match="rollout_1"):
        group.step({})
