import json

import pytest

from wrappers import (
    PromptContext,
    PromptTemplate,
    inject_skills,
    make_agent_env,
    read_records,
    route_skills,
)
from wrappers.skills import EPISODE_SKILL_HEADER, STEP_SKILL_HEADER


def test_prompt_shows_task_window_current_observation_actions_and_instruction(toy_id):
    env = make_agent_env(toy_id)
    prompt, info = env.reset(options={"task_id": 0})
    lines = prompt.splitlines()
    assert lines[1] == "Your task is to: take the key and open the door"
    assert lines[-2].startswith("Admissible actions: go left, go right, take key")
    assert lines[-1] == env.template.instruction
    for action in ["take key", "go right", "go right"]:
        prompt, *_ = env.step(f"<action>{action}</action>")
    # a window of k=2 pairs in the prompt; the whole history on the wrapper
    assert prompt.count("\nAction: ") == 2 and "Action: take key" not in prompt
    assert [a for _, a in env.history] == ["take key", "go right", "go right"]
    assert env.context.step == 3 and len(env.context.history) == 2
    assert "history" not in info


def test_template_is_configurable():
    template = PromptTemplate(history_k=0, intro="Play.", instruction="Answer now.")
    ctx = PromptContext("win", (("o1", "a1"),), "o2", None, 1)
    assert template.render(ctx) == "Play.\nYour task is to: win\nYour last 1 steps:\nObservation: o1\nAction: a1\nCurrent observation: o2\nAnswer now."


def test_long_observations_are_clipped():
    template = PromptTemplate(max_observation_chars=20)
    prompt = template.render(PromptContext("t", (), "y" * 100, None, 0))
    assert "y" * 17 + "..." in prompt and "y" * 18 not in prompt


def test_skill_blocks_go_after_task_line_and_before_final_instruction():
    template = PromptTemplate()
    ctx = PromptContext("open the door", (), "a corridor", ("go left",), 0)
    plain = template.render(ctx)
    both = template.render(ctx, episode_skill="Take the key first.", step_skill="Go right now.")
    lines = both.splitlines()
    i = lines.index("Your task is to: open the door")
    assert lines[i + 1 : i + 3] == [EPISODE_SKILL_HEADER, "Take the key first."]
    assert lines[-3:] == [STEP_SKILL_HEADER, "Go right now.", template.instruction]
    assert template.render(ctx, episode_skill=None, step_skill=None) == plain
    # removing the two blocks gives back the plain prompt
    stripped = [l for l in lines if l not in (EPISODE_SKILL_HEADER, STEP_SKILL_HEADER, "Take the key first.", "Go right now.")]
    assert "\n".join(stripped) == plain


def test_inject_skills_rejects_a_prompt_without_anchor():
    with pytest.raises(ValueError, match="task line"):
        inject_skills("no anchors", "Your task is to: x", "Answer.", episode_skill="s")


@pytest.mark.parametrize(
    "mode, critical, expected",
    [
        ("route", True, {"step": "S"}),
        ("route", False, {"episode": "E"}),
        ("additive", True, {"episode": "E", "step": "S"}),
        ("additive", False, {"episode": "E"}),
        ("episode_only", True, {"episode": "E"}),
        ("step_only", True, {"step": "S"}),
        ("step_only", False, {}),
    ],
)
def test_routing_modes(mode, critical, expected):
    step_skills = {3: "S"}
    assert route_skills(mode, 3 if critical else 4, "E", step_skills) == expected


def test_routing_rejects_unknown_mode():
    with pytest.raises(ValueError, match="routing mode"):
        route_skills("both", 0, "E", {})


def test_recording_reads_back_into_the_same_records(toy_id, tmp_path):
    path = tmp_path / "traj.jsonl"
    env = make_agent_env(toy_id, record_to=path)
    prompts = []
    for episode in range(2):
        prompt, _ = env.reset(seed=episode, options={"task_id": 0})
        for response in ["<action>take key</action>", "garbage", "<action>go right</action>"]:
            prompts.append(prompt)
            prompt, *_ = env.step(response)
    records = read_records(path)
    assert [(r.episode, r.t) for r in records] == [(e, t) for e in range(2) for t in range(3)]
    assert [r.prompt for r in records] == prompts
    assert records[1].response == "garbage" and records[1].action is None
    assert records[1].info["format_valid"] is False
    assert records[0].info["admissible_actions"] == ["go left", "go right"]
    # round trip: writing a record again gives the same line
    first = json.loads(path.read_text().splitlines()[0])
    assert first == records[0].__dict__


def test_corrupt_recording_gives_a_clear_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"episode": 0}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not a step record"):
        read_records(path)


@pytest.mark.parametrize("env_id", ["toy", "OPID/SearchQA-v0"])
def test_lone_surrogates_are_recorded_exactly_and_do_not_poison_later_steps(toy_id, env_id, tmp_path, monkeypatch):
    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    env_id = toy_id if env_id == "toy" else env_id
    path = tmp_path / "rec.jsonl"
    env = make_agent_env(env_id, record_to=path)
    shown = [env.reset(seed=0)[0]]  # the prompt each step answers
    tag = "answer" if "Search" in env_id else "action"
    responses = [f"<{tag}>go to \ud800</{tag}>", "\udcff no block", f"<think>\udfff</think><{tag}>look</{tag}>",
                 f"<{tag}>take key</{tag}>"]
    for response in responses:
        prompt, *_, terminated, truncated, info = env.step(response)
        prompt.encode("utf-8")  # what the policy's tokenizer gets next: no surrogate reached it
        shown.append(env.reset(seed=0)[0] if terminated or truncated else prompt)
    records = read_records(path)
    assert [r.response for r in records] == responses  # nothing lost, exactly as sent
    assert [r.prompt for r in records] == shown[:-1]
    path.read_bytes().decode("utf-8")  # the file itself is valid UTF-8


def test_a_failed_write_keeps_the_steps_for_the_next_one(toy_id, tmp_path):
    path = tmp_path / "rec.jsonl"
    env = make_agent_env(toy_id, record_to=path)
    env.reset(seed=0)
    path.mkdir()  # the file cannot be opened: each step still returns its result
    for _ in range(2):
        assert env.step("<action>look</action>")[4]["format_valid"]
    path.rmdir()
    env.step("<action>look</action>")
    assert [r.t for r in read_records(path)] == [0, 1, 2]


def test_inject_skills_positions_by_hand():
    # the task line first in the prompt and last in it (no newline after): the block follows it
    assert inject_skills("Task: x", "Task: x", "Act.", episode_skill="s") == f"Task: x\n{EPISODE_SKILL_HEADER}\ns"
    # repeated task line (e.g. in the history): after its first occurrence
    assert inject_skills("Task: x\nsaw Task: x\nAct.", "Task: x", "Act.", episode_skill=" s ") == (
        f"Task: x\n{EPISODE_SKILL_HEADER}\ns\nsaw Task: x\nAct.")
    # repeated instruction: before its last occurrence, even at the very start
    assert inject_skills("Act. then Act.", "Task", "Act.", step_skill="k") == f"Act. then {STEP_SKILL_HEADER}\nk\nAct."
    assert inject_skills("Act.", "Task", "Act.", step_skill="k") == f"{STEP_SKILL_HEADER}\nk\nAct."
    with pytest.raises(ValueError, match="^the task line is not in the prompt$"):
        inject_skills("Act.", "Task: x", "Act.", episode_skill="s")
    with pytest.raises(ValueError, match="^the final instruction is not in the prompt$"):
        inject_skills("Task: x", "Task: x", "Act.", step_skill="k")
