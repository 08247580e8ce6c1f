"""scripts/teacher_tokens.py on a hand-written skills.jsonl: mass shares by place, outcome and skill
kind, the concentration figures, and clear errors for dumps it cannot read."""

import json

import pytest

from tests.train.test_smoke_train import load_script


@pytest.fixture(scope="module")
def tt():
    return load_script("teacher_tokens")


def line(update, won, tokens, diffs, step_skill=None, episode_skill=None):
    return json.dumps({"update": update, "won": won, "tokens": tokens, "teacher_logp_diff": diffs,
                       "step_skill": step_skill, "episode_skill": episode_skill})


def test_mass_splits_and_concentration(tt, tmp_path):
    path = tmp_path / "skills.jsonl"
    path.write_text("\n".join([
        line(0, False, ["go", "north", "</s>"], {"step": [-0.1, -0.1, -1.8]}, step_skill="Avoid 'go north' here: ..."),
        line(0, True, ["take", "key"], {"episode": [0.5, -0.5]}, episode_skill="To open the door: take key."),
        line(1, True, ["open"], {"episode": [9.0]}, episode_skill="To open the door: open."),
    ]) + "\n")
    records = tt.read_terms(path, tt.parse_updates("0"))  # update 1 left out
    assert len(records) == 5
    text = tt.summary(records, top=2)
    # mass 0.1 + 0.1 + 1.8 + 0.5 + 0.5 = 3.0; the largest 10 % of 5 tokens is one token (1.8)
    assert "5 token terms: mean -0.400, mean abs 0.600 nats" in text
    assert "the largest 1 % of tokens carry 60.0 % of the mass, the largest 10 % 60.0 %" in text
    assert "| last (end of action) | 2 | 76.7 % | -1.150 | 1.150 |" in text  # '</s>' and 'key' end their responses
    assert "| lost | 3 | 66.7 % | -0.667 | 0.667 |" in text
    assert "| step: Avoid | 3 | 66.7 % |" in text and "| episode: workflow | 2 | 33.3 % | +0.000 |" in text
    assert "| '</s>' | 1 | 60.0 % | -1.800 |" in text and "'north'" not in text  # top 2 only
    # centred per update and component: the step terms -0.1, -0.1, -1.8 have mean -2/3 and sd 0.98
    centred = {(r["component"], r["token"]): r["term"] for r in tt.centre(records)}
    assert centred["step", "</s>"] == pytest.approx((-1.8 + 2 / 3) / 0.981495, abs=1e-4)
    assert centred["episode", "take"] == pytest.approx(0.5 / 0.707107, abs=1e-4)


def test_unreadable_dumps_are_refused(tt, tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"update": 0, "won": True, "step_skill": None, "episode_skill": None}) + "\n")
    with pytest.raises(SystemExit, match="old.jsonl:1: no per-token teacher terms"):
        tt.read_terms(old, None)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(SystemExit, match="broken.jsonl:1: not a JSON line"):
        tt.read_terms(broken, None)
