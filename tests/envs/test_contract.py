"""The text-env contract, held by the toy env and by the TextEnv base class."""

import os
import re

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import opid_envs
from opid_envs.core import (MAX_ACTION_CHARS, MissingDependencyError, Outcome, Task, TextEnv, TextSpace,
                            check_contract_info, require)


def test_toy_env_passes_gymnasium_checker(toy_id):
    check_env(gym.make(toy_id).unwrapped, skip_render_check=True)


def test_info_carries_contract_keys_at_reset_and_step(toy_id):
    env = gym.make(toy_id)
    _, info = env.reset(seed=0)
    check_contract_info(info)
    _, _, _, _, info = env.step(info["admissible_actions"][0])
    check_contract_info(info, after_step=True)


def test_same_task_id_gives_same_initial_state(toy_id):
    a, b = gym.make(toy_id), gym.make(toy_id)
    assert a.reset(seed=1, options={"task_id": 2}) == b.reset(seed=99, options={"task_id": 2})


def test_seed_picks_task_reproducibly(toy_id):
    ids = [gym.make(toy_id).reset(seed=7)[1]["task_id"] for _ in range(3)]
    assert len(set(ids)) == 1


def test_different_seeds_draw_different_tasks(toy_id):
    env = gym.make(toy_id)
    drawn = [env.reset(seed=seed)[1]["task_id"] for seed in range(40)]
    assert set(drawn) == set(range(5))  # 40 seeds over 5 train tasks reach every one of them
    assert [gym.make(toy_id).reset(seed=seed)[1]["task_id"] for seed in range(40)] == drawn  # whatever ran before


def test_split_option_and_bad_options(toy_id):
    env = gym.make(toy_id)
    _, info = env.reset(options={"split": "test", "task_id": 0})
    assert info["split"] == "test"
    with pytest.raises(ValueError, match="unknown split"):
        env.reset(options={"split": "nope"})
    with pytest.raises(ValueError, match="task_id must be an int"):
        env.reset(options={"task_id": 3.5})
    with pytest.raises(ValueError, match="task_id must be an int"):
        env.reset(options={"split": "test", "task_id": 3})
    with pytest.warns(UserWarning, match="ignores unknown reset options"):
        env.reset(options={"level": 1})


@pytest.mark.parametrize("action", [None, b"go right", "", "   ", 42])
def test_non_string_or_empty_action_is_an_invalid_step(toy_id, action):
    env = gym.make(toy_id).unwrapped
    obs0, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(action)
    assert info["action_valid"] is False
    assert obs.startswith("Invalid action:") and "Nothing happens" in obs
    assert (reward, terminated, truncated) == (0.0, False, False)


def test_reward_only_on_final_step_and_won(toy_id):
    env = gym.make(toy_id)
    _, info = env.reset(options={"task_id": 0})  # key at cell 0
    rewards = []
    for action in ["take key", "go right", "go right", "go right", "open door"]:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
    assert rewards == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert terminated and not truncated and info["won"] is True


class ScoresEveryStep(TextEnv):
    """A TextEnv whose actions all report a score: only the step that ends the task may pay it."""

    def num_tasks(self, split):
        return 1

    def _start(self, split, task_id):
        return Task(observation="start", instruction="finish", task_type="t", admissible_actions=["work", "finish"])

    def _act(self, action):
        done = action == "finish"
        return Outcome(f"did {action}", done=done, score=0.4 if done else 0.7, won=done,
                       admissible_actions=["work", "finish"])


def test_reward_is_the_score_of_the_terminating_step_only():
    env = ScoresEveryStep(max_steps=3)
    env.reset(seed=0)
    steps = [env.step(a) for a in ("work", "work", "finish")]
    assert [(r, term, trunc) for _, r, term, trunc, _ in steps] == [(0.0, False, False), (0.0, False, False),
                                                                    (0.4, True, False)]
    env.reset(seed=0)
    steps = [env.step("work") for _ in range(3)]  # truncated, not terminated: no reward either
    assert [(r, term, trunc) for _, r, term, trunc, _ in steps] == [(0.0, False, False)] * 2 + [(0.0, False, True)]


def test_truncated_at_step_limit(toy_id):
    env = gym.make(toy_id, max_steps=3)
    env.reset(seed=0)
    flags = [env.step("go left")[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step("go left")


def test_text_space_holds_any_unicode_string():
    space = TextSpace(max_length=11)
    assert space.contains("héllo, [w]!")
    assert not space.contains("x" * 12)
    assert not space.contains(b"bytes")
    assert space.contains(space.sample())


def test_missing_dependency_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"pip install 'opid\[alfworld\]'"):
        require("surely_not_a_module_xyz", "alfworld")


def test_opid_ids_registered_with_string_entry_points():
    for env_id in opid_envs.OPID_ENV_IDS:
        assert isinstance(gym.spec(env_id).entry_point, str)


def test_step_bookkeeping_of_valid_and_invalid_actions(toy_id):
    import warnings

    env = gym.make(toy_id).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the options the contract names are read, not warned about
        obs, info = env.reset(options={"split": "test", "task_id": 1})
    assert info["won"] is False and info["split"] == "test" and "A key lies here" in obs  # test task 1: key at 0
    assert "A key lies here" not in env.reset(options={"split": "train", "task_id": 1})[0]  # train task 1: key at 3
    env.reset(options={"split": "test", "task_id": 1})
    _, _, _, _, info = env.step("go right")
    assert info["action_valid"] is True and info["won"] is False and info["admissible_actions"] == ["go left", "go right"]
    before = info["admissible_actions"]
    for action, why in ((42, "expected a string, got int"), ("  ", "the action is empty")):
        obs, _, _, _, info = env.step(action)
        assert obs == f"Invalid action: {why}. Nothing happens."
        assert info["action_valid"] is False and info["admissible_actions"] == before
    with pytest.warns(UserWarning, match=r"^KeyDoorEnv ignores unknown reset options \['level'\]; it reads 'split' and 'task_id'$"):
        env.reset(options={"level": 1})


def test_finished_episode_and_empty_split_errors():
    env = ScoresEveryStep(max_steps=1)
    env.reset(seed=0)
    env.step("finish")
    with pytest.raises(RuntimeError, match=r"^step\(\) called on a finished episode; call reset\(\) first$"):
        env.step("work")
    env.num_tasks = lambda split: 0
    with pytest.raises(ValueError, match="^split 'train' has no tasks$"):
        env.reset()


def test_constructor_checks_and_step_before_reset():
    with pytest.raises(ValueError, match=r"^render_mode must be one of \['ansi', 'human'\], got 'rgb_array'$"):
        ScoresEveryStep(render_mode="rgb_array")
    assert ScoresEveryStep(render_mode="ansi").render_mode == "ansi"
    with pytest.raises(ValueError, match="^max_steps must be >= 1, got 0$"):
        ScoresEveryStep(max_steps=0)
    with pytest.raises(RuntimeError, match="call reset"):
        ScoresEveryStep().step("work")
    assert TextSpace(seed=3).sample() == TextSpace(seed=3).sample()  # the seed reaches the space's generator


GOOD_INFO = {"task": "open the door", "task_id": 0, "task_type": "key_door", "split": "train",
             "admissible_actions": ["go left"], "won": False}


@pytest.mark.parametrize("change, message", [
    ({"won": None}, "info['won'] must be a bool"),
    ({"task": ""}, "info['task'] must be a non-empty str"),
    ({"task": 3}, "info['task'] must be a non-empty str"),
    ({"task_id": "0"}, "info['task_id'] must be an int"),
    ({"task_type": None}, "info['task_type'] must be a str"),
    ({"split": 1}, "info['split'] must be a str"),
    ({"admissible_actions": ("go left",)}, "info['admissible_actions'] must be a list of str or None"),
    ({"admissible_actions": ["go left", 2]}, "info['admissible_actions'] must be a list of str or None"),
    ({"action_valid": 1}, "info['action_valid'] must be a bool"),
])
def test_contract_checker_names_the_broken_key(change, message):
    """What a user's own env is checked with: each broken key is refused with its own message."""
    info = {**GOOD_INFO, "action_valid": True, **change}
    with pytest.raises(AssertionError, match=rf"^{re.escape(message)}$"):
        check_contract_info(info, after_step=True)


def test_contract_checker_keys_before_and_after_a_step():
    check_contract_info(GOOD_INFO)
    check_contract_info({**GOOD_INFO, "admissible_actions": None})  # free-text envs list no actions
    with pytest.raises(AssertionError, match=r"^info misses contract keys \['action_valid'\]$"):
        check_contract_info(GOOD_INFO, after_step=True)
    with pytest.raises(AssertionError, match=r"^info misses contract keys \['task_id', 'won'\]$"):
        check_contract_info({k: v for k, v in GOOD_INFO.items() if k not in ("task_id", "won")})


def test_defaults_step_limit_and_action_bound():
    env = ScoresEveryStep()
    env.reset(seed=0)
    flags = [env.step("work")[2:4] for _ in range(50)]
    assert flags == [(False, False)] * 49 + [(False, True)]  # truncated at the 50th step, the documented default
    space = TextSpace()
    assert space.contains("x" * MAX_ACTION_CHARS) and not space.contains("x" * (MAX_ACTION_CHARS + 1))
    assert space == TextSpace(MAX_ACTION_CHARS) and space != TextSpace(5) and space != "TextSpace"


@pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ, reason="mutmut's trampoline adds a frame between caller and reset")
def test_unknown_option_warning_points_at_the_callers_line():
    env = ScoresEveryStep()
    with pytest.warns(UserWarning, match="ignores unknown reset options") as warned:
        env.reset(options={"level": 1})
    assert warned[0].filename == __file__


def test_action_length_limit_and_lone_surrogates():
    from opid_envs.core import clean_text

    env = ScoresEveryStep(max_steps=5)
    env.reset(seed=0)
    longest = "w" * MAX_ACTION_CHARS
    obs, _, _, _, info = env.step(longest)  # at the limit: read
    assert info["action_valid"] is True and obs == f"did {longest}"
    obs, _, _, _, info = env.step(longest + "w")
    assert info["action_valid"] is False
    assert obs == f"Invalid action: the action is {MAX_ACTION_CHARS + 1} characters long; the limit is {MAX_ACTION_CHARS}. Nothing happens."
    assert clean_text("a\ud800b\udfff") == "a\ufffdb\ufffd" and clean_text("é\U0001F600") == "é\U0001F600"
    assert env.step("say \ud800")[0] == "did say \ufffd"  # the env gets the cleaned text


def test_shared_strings_in_process():
    """The vector env's observation transport, in this process (the fresh-interpreter test cannot be traced)."""
    import copy

    from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

    space = TextSpace(max_length=10)
    shared = create_shared_memory(space, n=3)
    view = read_from_shared_memory(space, shared, n=3)
    assert len(view) == 3 and view.slot == 40 and view[:] == ("", "", "")
    for i, text in enumerate(["€uro", "", "x" * 10]):
        write_to_shared_memory(space, i, text, shared)
    assert view[0] == "€uro" and view[-1] == "x" * 10 and view[0:2] == ("€uro", "")
    assert copy.deepcopy(view) == ("€uro", "", "x" * 10) and repr(view) == "SharedStrings(('€uro', '', 'xxxxxxxxxx'))"
    write_to_shared_memory(space, 2, "ab", shared)  # shorter than before: only its bytes count
    assert view[2] == "ab" and view.lengths.tolist() == [6, 0, 2]
    with pytest.raises(ValueError, match=r"^TextSpace\(max_length=10\) cannot hold this observation \(str, 11 characters\)$"):
        write_to_shared_memory(space, 0, "y" * 11, shared)
    with pytest.raises(IndexError):
        view[3]


def test_shared_strings_carry_a_lone_surrogate_exactly():
    """An env's observation is any str: one with a lone surrogate (e.g. from JSON's "\\ud800") crosses the
    shared memory as it was written, as it crosses a pipe without shared memory, and is not a crash on read."""
    from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

    space = TextSpace(max_length=4)
    shared = create_shared_memory(space, n=2)
    view = read_from_shared_memory(space, shared, n=2)
    write_to_shared_memory(space, 1, "a\udfffb\ud800", shared)
    assert view[1] == "a\udfffb\ud800" and view.lengths.tolist() == [0, 8]


def test_tagged_blocks_by_hand():
    from opid_envs.core import tagged_blocks

    blocks, opens, closes = tagged_blocks("<Think>a <b></think><action> go </ACTION><action>x</action><action>",
                                          ("think", "action"))
    assert blocks == [("think", "a <b>"), ("action", " go "), ("action", "x")]
    assert (opens, closes) == ({"think": 1, "action": 3}, {"think": 1, "action": 2})
    # a block runs to the first closing tag of its own name; other tags inside are its content
    assert tagged_blocks("<a><b>in</b></a>", ("a", "b"))[0] == [("a", "<b>in</b>")]
    assert tagged_blocks("no tags", ("a",)) == ([], {}, {})
