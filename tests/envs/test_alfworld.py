"""OPID/ALFWorld-v0 on the real TextWorld engine, over small generated suites (shared per session)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import opid_envs  # noqa: F401  (registers the ids)
from opid_envs.alfworld import generate
from opid_envs.alfworld.env import INVALID_FEEDBACK, TASK_PREFIX, ALFWorldEnv
from opid_envs.alfworld.experts import tracked_command
from opid_envs.core import check_contract_info

pytest.importorskip("alfworld")
pytest.importorskip("fast_downward")

# medium: real floor plans, all six task types, one receptacle per type (quick to load)
SUITE_SIZES = {"train": 12, "valid_seen": 6, "valid_unseen": 6}


@pytest.fixture(scope="session")
def suite(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("alfworld") / "medium"
    return generate.generate_suite("medium", out, sizes=SUITE_SIZES, progress=False)


@pytest.fixture(scope="session")
def easy_suite(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("alfworld") / "easy"
    return generate.generate_suite("easy", out, sizes={"train": 4, "valid_seen": 2, "valid_unseen": 2}, progress=False)


@pytest.fixture
def env(suite):
    return ALFWorldEnv(data_dir=suite, split="train")


def _traj(path: Path) -> dict:
    return json.loads((path.parent / "traj_data.json").read_text())


def _games(root: Path, split: str) -> list[Path]:
    return sorted((root / "json_2.1.1" / split).glob("*/*/game.tw-pddl"))


def test_check_env(env):
    check_env(env, skip_render_check=True)


def test_gym_make_reads_the_suite_and_contract_info(suite):
    env = gym.make("OPID/ALFWorld-v0", data_dir=str(suite), split="valid_seen")
    obs, info = env.reset(seed=3)
    check_contract_info(info)
    assert info["split"] == "valid_seen" and Path(info["gamefile"]).is_file()
    assert str(suite) in info["gamefile"] and "Your task is to: " in obs
    assert info["task"] in obs and "help" not in info["admissible_actions"]
    obs, reward, terminated, truncated, info = env.step(info["admissible_actions"][0])
    check_contract_info(info, after_step=True)
    assert info["action_valid"] is True and "gamefile" in info


def test_all_six_types_generated(suite):
    types = {_traj(g)["task_type"] for g in _games(suite, "train")}
    assert types == set(generate.TASK_TYPES)
    for game in _games(suite, "train"):
        data = json.loads(game.read_text())
        assert data["solvable"] is True and set(data) >= {"pddl_domain", "grammar", "pddl_problem"}


def test_expert_wins_every_game_all_six_types(suite):
    """The patched handcoded expert solves every train game (pick_two included)."""
    env = ALFWorldEnv(data_dir=suite, split="train", max_steps=150)
    won_types = set()
    for task_id in range(env.num_tasks("train")):
        obs, info = env.reset(options={"task_id": task_id})
        terminated = truncated = False
        while not (terminated or truncated):
            action = env.expert_action()
            assert action in info["admissible_actions"]
            obs, reward, terminated, truncated, info = env.step(action)
        assert info["won"] and reward == 1.0, (info["gamefile"], info["task"])
        won_types.add(info["task_type"])
    assert won_types == set(generate.TASK_TYPES)


def test_expert_tracks_put_as_the_grammar_spells_it():
    assert tracked_command("move mug 1 to coffeemachine 1") == "put mug 1 to coffeemachine 1"
    assert tracked_command("take mug 1 from countertop 1") == "take mug 1 from countertop 1"


def test_expert_catches_up_after_other_actions(easy_suite):
    """Asked only mid-episode, after the agent wandered, the expert still finishes the task."""
    env = ALFWorldEnv(data_dir=easy_suite, split="train", max_steps=60)
    obs, info = env.reset(options={"task_id": 0})
    for action in info["admissible_actions"][:3]:
        obs, _, terminated, _, info = env.step(action)
    while not info["won"]:
        obs, _, terminated, truncated, info = env.step(env.expert_action())
        assert not truncated
    assert terminated


def test_planner_walkthrough_wins(easy_suite, tmp_path):
    """Planned on demand for a game without one, it wins."""
    root = Path(shutil.copytree(easy_suite, tmp_path / "easy"))
    game = _games(root, "valid_seen")[0]
    data = json.loads(game.read_text())
    del data["walkthrough"]
    game.write_text(json.dumps(data))
    env = ALFWorldEnv(data_dir=root, split="valid_seen")
    obs, info = env.reset(options={"task_id": 0})
    assert env.engine.walkthrough is None
    for action in env.walkthrough():
        obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and info["won"] and reward == 1.0


def test_reward_is_zero_until_the_winning_step(easy_suite):
    """Valid, non-final steps of a real game pay 0; the step that wins pays 1 and ends the episode."""
    env = ALFWorldEnv(data_dir=easy_suite, split="train")
    obs, info = env.reset(options={"task_id": 0})
    steps = [env.step(action) for action in env.walkthrough()]
    assert len(steps) >= 3 and all(info["action_valid"] for *_, info in steps)
    assert [(reward, terminated, info["won"]) for _, reward, terminated, _, info in steps] == (
        [(0.0, False, False)] * (len(steps) - 1) + [(1.0, True, True)])


def test_shipped_walkthroughs_are_the_planners_and_added_resumably(tmp_path):
    root = generate.generate_suite("easy", tmp_path / "easy", sizes={"train": 2, "valid_seen": 0, "valid_unseen": 1},
                                   progress=False)
    assert generate.read_manifest(root)["walkthroughs"] is True  # the default easy suite's plans ship
    games = _games(root, "train") + _games(root, "valid_unseen")
    shipped = [json.loads(g.read_text())["walkthrough"] for g in games]
    for game in games:  # as if they had been generated without plans
        data = json.loads(game.read_text())
        del data["walkthrough"]
        game.write_text(json.dumps(data, indent=1))
    assert generate.add_walkthroughs(root, progress=False) == 3  # planned afresh: the same plans
    assert [json.loads(g.read_text())["walkthrough"] for g in games] == shipped
    assert generate.add_walkthroughs(root, progress=False) == 0  # nothing left to do
    env = ALFWorldEnv(data_dir=root, split="valid_unseen")
    env.reset(options={"task_id": 0})
    assert env.walkthrough() == shipped[-1]
    for action in shipped[-1]:
        obs, reward, terminated, truncated, info = env.step(action)
    assert info["won"]


def test_easy_large_adds_training_and_evaluation_games_and_keeps_the_easy_ones(tmp_path):
    def games(root, split):  # walkthroughs ship for the easy suite only: compare the games themselves
        return [{k: v for k, v in json.loads(g.read_text()).items() if k != "walkthrough"} for g in _games(root, split)]

    easy = generate.generate_suite("easy", tmp_path / "easy", sizes={"train": 2, "valid_seen": 2, "valid_unseen": 1},
                                   progress=False)
    large = generate.generate_suite("easy-large", tmp_path / "large",
                                    sizes={"train": 6, "valid_seen": 3, "valid_unseen": 2}, progress=False)
    assert generate.LEVELS["easy-large"].sizes["train"] == 3 * generate.LEVELS["easy"].sizes["train"]
    for split in ("valid_seen", "valid_unseen"):
        large_games = games(large, split)
        assert len(large_games) == len(games(easy, split)) + 1 and all(g in large_games for g in games(easy, split))
    large_train = games(large, "train")
    assert len(large_train) == 6 and all(g in large_train for g in games(easy, "train"))


def test_easy_rooms_have_six_receptacles_and_two_task_types(easy_suite):
    env = ALFWorldEnv(data_dir=easy_suite, split="valid_unseen")
    for task_id in range(env.num_tasks("valid_unseen")):
        obs, info = env.reset(options={"task_id": task_id})
        assert info["task_type"] in ("pick_and_place_simple", "look_at_obj_in_light")
        goes = sorted(a for a in info["admissible_actions"] if a.startswith("go to "))
        assert goes == ["go to cabinet 1", "go to countertop 1", "go to fridge 1", "go to microwave 1",
                        "go to sidetable 1", "go to sinkbasin 1"]


def test_generator_command_line(tmp_path):
    generate.main(["--level", "easy", "--out", str(tmp_path / "cli"), "--train", "2", "--valid-seen", "1",
                   "--valid-unseen", "1"])
    assert generate.read_manifest(tmp_path / "cli")["sizes"] == {"train": 2, "valid_seen": 1, "valid_unseen": 1}
    assert len(_games(tmp_path / "cli", "train")) == 2


def test_seen_and_unseen_scenes_are_disjoint(suite):
    scenes = {s: {_traj(g)["scene"]["scene_num"] for g in _games(suite, s)} for s in generate.SPLITS}
    assert not scenes["valid_unseen"] & (scenes["train"] | scenes["valid_seen"])
    problems = {s: {json.loads(g.read_text())["pddl_problem"].split("(:objects")[1] for g in _games(suite, s)}
                for s in ("train", "valid_seen")}
    assert not problems["train"] & problems["valid_seen"]


def test_generation_is_deterministic(tmp_path):
    sizes = {"train": 3, "valid_seen": 1, "valid_unseen": 1}
    a = generate.generate_suite("full", tmp_path / "a", seed=7, sizes=sizes, progress=False)
    b = generate.generate_suite("full", tmp_path / "b", seed=7, sizes=sizes, progress=False)
    c = generate.generate_suite("full", tmp_path / "c", seed=8, sizes=sizes, progress=False)
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert files(a) == files(b)
    assert files(a) != files(c)
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary directory was renamed away


def test_invalid_command_gets_engine_feedback(env):
    obs, info = env.reset(options={"task_id": 1})
    before = info["admissible_actions"]
    obs, reward, terminated, truncated, info = env.step("fly to the moon")
    assert obs == "Nothing happens." and info["action_valid"] is False
    assert info["admissible_actions"] == before and reward == 0.0 and not terminated
    obs, _, _, _, info = env.step("")
    assert info["action_valid"] is False
    obs, _, _, _, info = env.step(before[0])  # the episode goes on normally
    assert info["action_valid"] is True


def test_same_task_id_same_state(env):
    first = env.reset(options={"split": "valid_unseen", "task_id": 2})
    env.step(first[1]["admissible_actions"][0])
    again = env.reset(options={"split": "valid_unseen", "task_id": 2})
    assert first[0] == again[0] and first[1]["admissible_actions"] == again[1]["admissible_actions"]


def test_task_types_filter(suite):
    env = ALFWorldEnv(data_dir=suite, task_types=["pick_two_obj_and_place"])
    assert env.num_tasks("train") == 2
    assert env.reset(seed=0)[1]["task_type"] == "pick_two_obj_and_place"
    with pytest.raises(ValueError, match="unknown task types"):
        ALFWorldEnv(data_dir=suite, task_types=["juggle"])


def test_missing_directory_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"json_2\.1\.1.*ALFWORLD_DATA"):
        ALFWorldEnv(data_dir=tmp_path / "nowhere")


def test_corrupt_game_says_how_to_fix(suite, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(suite, broken)
    game = _games(broken, "valid_seen")[0]
    game.write_text("{ not json")
    env = ALFWorldEnv(data_dir=broken, split="valid_seen")
    task_id = [g.gamefile for g in env.games("valid_seen")].index(str(game))
    with pytest.raises(ValueError, match=r"cannot load ALFWorld game .*game\.tw-pddl.*delete its trial directory"):
        env.reset(options={"task_id": task_id})


@pytest.fixture
def tiny_easy_level(tmp_path, monkeypatch) -> generate.Level:
    """The easy level cut to 2 / 1 / 1 games, generated into a cache under tmp_path."""
    monkeypatch.setenv("OPID_CACHE", str(tmp_path))
    tiny = generate.Level("easy", generate.LEVELS["easy"].task_types, "easy6",
                          {"train": 2, "valid_seen": 1, "valid_unseen": 1}, max_object_types=7)
    monkeypatch.setitem(generate.LEVELS, "easy", tiny)
    return tiny


def test_lazy_generation_into_the_cache(tmp_path, tiny_easy_level):
    env = gym.make("OPID/ALFWorld-v0", level="easy")
    root = tmp_path / "alfworld" / "easy"
    assert env.unwrapped.data_root == root and generate.read_manifest(root)["level"] == "easy"
    stamp = (root / "opid_suite.json").stat().st_mtime_ns
    gym.make("OPID/ALFWorld-v0", level="easy")  # reused, not regenerated
    assert (root / "opid_suite.json").stat().st_mtime_ns == stamp
    shutil.rmtree(next((root / "json_2.1.1" / "train").rglob("game.tw-pddl")).parent)  # lose a game
    with pytest.raises(ValueError, match="incomplete.*delete"):
        gym.make("OPID/ALFWorld-v0", level="easy").reset(seed=0)


def test_a_cached_suite_is_regenerated_when_its_level_changed_size(tiny_easy_level, monkeypatch):
    env = gym.make("OPID/ALFWorld-v0", level="easy")
    first = [g.gamefile for g in env.unwrapped.games("valid_seen")]
    grown_level = replace(tiny_easy_level, sizes={**tiny_easy_level.sizes, "valid_seen": 3})
    monkeypatch.setitem(generate.LEVELS, "easy", grown_level)
    env = gym.make("OPID/ALFWorld-v0", level="easy")
    grown = [g.gamefile for g in env.unwrapped.games("valid_seen")]
    assert len(grown) == 3 and generate.read_manifest(env.unwrapped.data_root)["sizes"]["valid_seen"] == 3
    assert first[0] in grown  # game i is drawn the same way whatever the split's size


def test_alfworld_data_variable_points_at_official_data(suite, monkeypatch):
    monkeypatch.setattr("opid_envs.alfworld.USER_ALFWORLD_DATA", str(suite))
    env = ALFWorldEnv(split="valid_unseen")
    assert env.data_root == suite and not env.generated
    assert env.reset(seed=0)[1]["gamefile"].startswith(str(suite))


def test_missing_engine_names_the_extra(suite, monkeypatch):
    from opid_envs.core import MissingDependencyError

    monkeypatch.setitem(sys.modules, "alfworld", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"opid\[alfworld\]"):
        ALFWorldEnv(data_dir=suite)


def test_unknown_level_is_rejected():
    with pytest.raises(ValueError, match="unknown level"):
        ALFWorldEnv(level="nightmare")


PLAIN_ENGINE = """
import json, sys
from opid_envs.alfworld.env import ALFWorldEngine
engine = ALFWorldEngine(memoize=False)
out = []
for gamefile, actions in json.loads(sys.stdin.read()):
    engine.load(gamefile)
    state = engine.reset()
    out.append([state["feedback"], state["admissible_commands"]])
    for action in actions:
        state = engine.step(action)
        out.append([state["feedback"], state["admissible_commands"]])
print(json.dumps(out))
"""


@pytest.mark.slow  # fresh Python processes
def test_memoized_engine_matches_the_plain_engine(suite):
    """Same games and actions through unpatched textworld (another process): same text."""
    env = ALFWorldEnv(data_dir=suite, split="valid_unseen", max_steps=100)
    plays, ours = [], []
    for task_id in range(3):
        obs, info = env.reset(options={"task_id": task_id})
        ours.append([obs, sorted(info["admissible_actions"] + ["help"])])
        actions = []
        for k in range(12):
            action = env.expert_action() if k % 3 else info["admissible_actions"][k % len(info["admissible_actions"])]
            obs, _, terminated, _, info = env.step(action)
            actions.append(action)
            ours.append([obs, sorted(info["admissible_actions"] + ["help"])])
            if terminated:
                break
        plays.append([info["gamefile"], actions])
    result = subprocess.run([sys.executable, "-c", PLAIN_ENGINE], input=json.dumps(plays), capture_output=True,
                            text=True, check=True, env={**os.environ, "PYTHONPATH": str(Path(opid_envs.__file__).parents[1])})
    plain = json.loads(result.stdout.strip().splitlines()[-1])
    assert [[o, sorted(a)] for o, a in plain] == ours


def test_step_bookkeeping_on_the_easy_suite(easy_suite):
    """What reset and step report, on a real game: the task line as the instruction, the game file, the
    engine's commands without 'help'; an unknown command changes nothing and pays nothing."""
    env = ALFWorldEnv(data_dir=easy_suite, split="train")
    obs, info = env.reset(options={"task_id": 1})
    assert obs.count(TASK_PREFIX) == 1 and info["task"] == obs.split(TASK_PREFIX)[1].strip()
    assert info["task_type"] in ("pick_and_place_simple", "look_at_obj_in_light")
    assert info["gamefile"] == str(_games(easy_suite, "train")[1])
    commands = env.engine.state["admissible_commands"]
    assert "help" in commands and info["admissible_actions"] == [c for c in commands if c != "help"]
    state = env.engine.state
    obs, reward, terminated, truncated, info = env.step("  fly to the moon ")
    assert (obs, reward, terminated, info["action_valid"], info["won"]) == (INVALID_FEEDBACK, 0.0, False, False, False)
    assert env.engine.state is state and env._history[-1] == (state, "fly to the moon", INVALID_FEEDBACK)
    action = info["admissible_actions"][0]
    obs, reward, terminated, truncated, info = env.step(f" {action} ")  # the command as the engine spells it
    assert info["action_valid"] is True and obs == env.engine.state["feedback"] and obs != INVALID_FEEDBACK
    assert env._history[-1] == (env.engine.state, action, obs) and len(env._history) == 3
    assert info["admissible_actions"] == [c for c in env.engine.state["admissible_commands"] if c != "help"]
