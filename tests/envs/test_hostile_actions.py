"""Hostile actions against every registered env: any shape, up to past the action bound, is answered
as an invalid step with a reason, in time linear in its length.

The timeouts are hang guards, not benchmarks: today each case takes milliseconds; the quadratic
parser this replaces needed 65 s for one 256 KB case.
"""

import random

import gymnasium as gym
import pytest

import opid_envs  # noqa: F401  (registers the ids)
from opid_envs.alfworld import generate
from opid_envs.core import MAX_ACTION_CHARS
from wrappers import make_agent_env

pytestmark = pytest.mark.usefixtures("private_opid_cache")
N = 256 * 1024


def hostile_actions(n: int = N) -> dict[str, str]:
    rng = random.Random(0)
    return {
        "open search tags": "<search>" * (n // 8),
        "open answer tags": "<answer>" * (n // 8),
        "open action tags": "<action>" * (n // 8),
        "open think tags": "<think>" * (n // 7),
        "closings then openings": "</search>" * (n // 18) + "<search>" * (n // 18),
        "crossed tags": "<search></answer>" * (n // 17),
        "brackets": "click[" * (n // 6),
        "angle brackets": "<" * n,
        "tag soup": "".join(rng.choice(["<search>", "</search>", "<answer>", "</answer>", "x", "[", "]", " "])
                            for _ in range(n // 5)),
        "over the bound": "<search>" + "q" * MAX_ACTION_CHARS + "</search>",
    }


@pytest.fixture(scope="module")
def alfworld_suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("alfworld") / "easy"
    return generate.generate_suite("easy", out, sizes={"train": 2, "valid_seen": 1, "valid_unseen": 1}, progress=False)


def make(env_id, alfworld_suite, agent=False):
    kwargs = {"data_dir": str(alfworld_suite)} if "ALFWorld" in env_id else {}
    return make_agent_env(env_id, **kwargs) if agent else gym.make(env_id, **kwargs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("env_id", ["OPID/ALFWorld-v0", "OPID/WebShop-v0", "OPID/SearchQA-v0"])
def test_every_env_answers_hostile_actions_as_invalid_steps(env_id, alfworld_suite):
    env = make(env_id, alfworld_suite)
    for name, action in hostile_actions().items():
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(obs, str) and reward == 0.0 and not terminated, name
        if "ALFWorld" not in env_id or name == "over the bound":  # ALFWorld's engine answers "Nothing happens."
            assert info["action_valid"] is False and obs.startswith("Invalid action:"), (name, obs[:80])
    assert "the limit is" in env.step(hostile_actions()["over the bound"])[0]


def test_searchqa_reasons_stay_exact():
    from opid_envs.searchqa.env import parse_action

    assert parse_action("<search>" * 40_000)[2] == "unbalanced or nested <search>/<answer> tags"
    assert parse_action("<search>a</search>" * 3)[2] == "expected exactly one <search> or <answer> block, found 3"
    assert parse_action("<think>hm</think> <SEARCH> a  b </SEARCH>") == ("search", "a b", None)
    assert parse_action("<answer> x <search> y </answer>")[2] == "unbalanced or nested <search>/<answer> tags"
    assert parse_action("x" * 100)[2] == "no <search> or <answer> block found"
