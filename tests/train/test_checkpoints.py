"""Checkpoints by hand, fast: what a save writes and rotates, which checkpoint a resume picks and what it
says, and which folder a model path names. The policy is a one-tensor stand-in that saves and loads a real
safetensors model folder (the slow end-to-end resume tests use a real model: tests/train/test_resume.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from opid_train.learner import (KEEP_CHECKPOINTS, Learner, checkpoint_folders, latest_checkpoint,
                                load_newest_checkpoint, model_folder_of)


class OneTensorPolicy(torch.nn.Module):
    """A stand-in policy in a unit test of the checkpoint code: one weight, saved as a model folder."""

    device = torch.device("cpu")

    def __init__(self, value: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((2,), value))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "one_tensor"}))
        save_file({"weight": self.weight.detach().clone()}, str(folder / "model.safetensors"))


def load_one_tensor(folder: Path) -> OneTensorPolicy:
    policy = OneTensorPolicy(0.0)
    policy.weight.data = load_file(str(folder / "model.safetensors"))["weight"]
    return policy


def learner(value: float = 1.0) -> Learner:
    config = type("Config", (), {"lr": 0.1, "weight_decay": 0.0})
    learner = Learner(OneTensorPolicy(value), algorithm=None, config=config)
    learner.policy.weight.grad = torch.ones(2)
    learner.optimizer.step()  # Adam's moments and step count, so the saved optimizer state is not empty
    return learner


def names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_a_save_writes_model_optimizer_and_update_then_points_latest_at_it(tmp_path):
    saver = learner()
    (tmp_path / "checkpoints" / ".tmp_update_00009" / "model").mkdir(parents=True)  # a save that was killed
    final = saver.save_checkpoint(tmp_path, 7)
    assert final == tmp_path / "checkpoints" / "update_00007"
    assert names(tmp_path) == ["latest", "update_00007"]  # no temp folder left, the killed one's included
    assert (tmp_path / "checkpoints" / "latest").read_text() == "update_00007"
    assert json.loads((final / "state.json").read_text()) == {"update": 7}
    assert torch.equal(load_file(str(final / "model" / "model.safetensors"))["weight"], saver.policy.weight.detach())
    saved = torch.load(final / "optimizer.pt", weights_only=True)
    assert saved["state"][0]["step"] == 1 and torch.equal(saved["state"][0]["exp_avg"],
                                                          saver.optimizer.state_dict()["state"][0]["exp_avg"])
    saver.policy.weight.data.fill_(5.0)
    saver.save_checkpoint(tmp_path, 7)  # saved again (a resumed run redoing update 7): the new weights
    assert torch.equal(load_file(str(final / "model" / "model.safetensors"))["weight"], torch.full((2,), 5.0))


def test_a_stray_file_named_like_a_temp_folder_does_not_stop_a_save(tmp_path):
    """Clearing the temp folders of killed saves never fails a save: a file where one was expected is left alone."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".tmp_update_00009").write_text("not a folder")
    assert learner().save_checkpoint(tmp_path, 7) == tmp_path / "checkpoints" / "update_00007"
    assert (tmp_path / "checkpoints" / "latest").read_text() == "update_00007"


@pytest.mark.parametrize("keep, kept", [(KEEP_CHECKPOINTS, ["update_00003", "update_00004"]),
                                        (1, ["update_00004"]), (3, ["update_00002", "update_00003", "update_00004"])])
def test_rotation_keeps_the_newest_keep_and_never_a_later_one(tmp_path, keep, kept):
    saver = learner()
    for update in (1, 2, 3):
        saver.save_checkpoint(tmp_path, update, keep=3)
    shutil.copytree(tmp_path / "checkpoints" / "update_00003", tmp_path / "checkpoints" / "update_00006")
    saver.save_checkpoint(tmp_path, 4, keep=keep)
    assert names(tmp_path) == ["latest", *kept, "update_00006"]  # update 6, left by an earlier attempt, stays
    assert KEEP_CHECKPOINTS == 2  # the newest and the one before it, to fall back to


def test_a_save_whose_rotation_cannot_remove_an_old_checkpoint_still_succeeds(tmp_path, monkeypatch):
    """Removing old checkpoints is housekeeping: when the file system refuses (a folder another user owns,
    a file held open on a network share), the new checkpoint is already whole and pointed at, so the
    save returns instead of ending a long run."""
    saver = learner()
    for update in (1, 2):
        saver.save_checkpoint(tmp_path, update)
    real_rmtree = shutil.rmtree

    def rmtree_refused_for_update_1(path, ignore_errors=False, **kwargs):
        if Path(path).name == "update_00001":
            if not ignore_errors:
                raise PermissionError(13, "Permission denied", str(path))
            return
        real_rmtree(path, ignore_errors=ignore_errors, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree_refused_for_update_1)
    assert saver.save_checkpoint(tmp_path, 3) == tmp_path / "checkpoints" / "update_00003"
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "update_00003"
    assert names(tmp_path) == ["latest", "update_00001", "update_00002", "update_00003"]


def test_checkpoint_folders_are_newest_first_and_only_numbered_folders(tmp_path):
    root = tmp_path / "checkpoints"
    for name in ("update_00010", "update_00009", "update_00100", "update_x", "update_0001a"):
        (root / name).mkdir(parents=True)
    (root / "update_00200").write_text("a file")
    assert checkpoint_folders(tmp_path) == [root / "update_00100", root / "update_00010", root / "update_00009"]
    assert checkpoint_folders(tmp_path / "elsewhere") == []


def test_checkpoint_folders_are_ordered_by_update_number_past_five_digits(tmp_path):
    """A save names its folder update_{update:05d}, so update 100000 gets six digits: newest is the
    highest number, though update_99999 sorts after update_100000 by name."""
    saver = learner()
    for update in (99_999, 100_000):
        saver.save_checkpoint(tmp_path, update)
    root = tmp_path / "checkpoints"
    assert checkpoint_folders(tmp_path) == [root / "update_100000", root / "update_99999"]
    assert latest_checkpoint(tmp_path) == root / "update_100000"


def damaged_run(tmp_path: Path) -> Path:
    """Checkpoints of updates 1, 2, 3, saved with weights 1, 2, 3."""
    saver = learner()
    for update in (1, 2, 3):
        saver.policy.weight.data.fill_(update)
        saver.save_checkpoint(tmp_path, update, keep=3)
    return tmp_path / "checkpoints"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_latest_whole_checkpoint_skips_damaged_ones(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    root = damaged_run(tmp_path)
    assert latest_checkpoint(tmp_path) == root / "update_00003"
    truncate(root / "update_00003" / "model" / "model.safetensors")
    assert latest_checkpoint(tmp_path) == root / "update_00002"
    (root / "update_00002" / "optimizer.pt").unlink()
    assert latest_checkpoint(tmp_path) == root / "update_00001"
    (root / "update_00001" / "state.json").write_text("{}")  # no update in it
    assert latest_checkpoint(tmp_path) is None


def test_resume_loads_the_newest_checkpoint_and_says_so(tmp_path):
    root = damaged_run(tmp_path)
    said = []
    resumed = load_newest_checkpoint(tmp_path, load_one_tensor, log=said.append)
    assert (resumed.folder, resumed.update) == (root / "update_00003", 3)
    assert torch.equal(resumed.policy.weight, torch.full((2,), 3.0))
    assert resumed.optimizer_state["state"][0]["step"] == 1
    assert said == [f"resuming from {root / 'update_00003'} (update 3): the newest checkpoint"]


def test_resume_falls_back_past_checkpoints_that_do_not_load_and_names_why(tmp_path):
    root = damaged_run(tmp_path)
    (root / "update_00003" / "optimizer.pt").unlink()
    (root / "update_00002" / "state.json").write_text('{"step": 2}')
    said = []
    resumed = load_newest_checkpoint(tmp_path, load_one_tensor, log=said.append)
    assert (resumed.folder, resumed.update) == (root / "update_00001", 1)
    assert torch.equal(resumed.policy.weight, torch.full((2,), 1.0))
    assert said[0].startswith(f"checkpoint {root / 'update_00003'} does not load (FileNotFoundError: ")
    assert said[0].endswith("; trying the one before it")
    assert said[1] == f"checkpoint {root / 'update_00002'} does not load (KeyError: 'update'); trying the one before it"
    assert said[2] == f"resuming from {root / 'update_00001'} (update 1): the newest that loads (2 newer did not)"


def test_a_latest_pointer_to_a_missing_folder_is_reported(tmp_path):
    root = damaged_run(tmp_path)
    (root / "latest").write_text("update_00004\n")
    said = []
    assert load_newest_checkpoint(tmp_path, load_one_tensor, log=said.append).update == 3
    assert said[0] == (f"{root / 'latest'} names 'update_00004', which is not a checkpoint: "
                       "looking for the newest checkpoint that loads")
    said.clear()
    (root / "latest").write_text("update_00002")  # an older but whole one: nothing to report
    load_newest_checkpoint(tmp_path, load_one_tensor, log=said.append)
    assert len(said) == 1 and said[0].startswith("resuming from")


def test_resume_without_checkpoints_starts_over_and_with_none_loading_stops(tmp_path):
    assert load_newest_checkpoint(tmp_path, load_one_tensor, log=lambda _: None) is None
    root = damaged_run(tmp_path)
    for update in (1, 2, 3):
        (root / f"update_0000{update}" / "state.json").write_text("")
    with pytest.raises(RuntimeError) as error:
        load_newest_checkpoint(tmp_path, load_one_tensor, log=lambda _: None)
    message = str(error.value)
    assert message.startswith(f"no checkpoint in {root} loads (update_00003: Expecting value: line 1 column 1")
    assert message.endswith("nothing was changed: repair or move them away, then resume again")
    assert message.count("update_0000") == 3 and "; update_00002: " in message


def test_resume_reports_an_error_without_a_message_by_its_type(tmp_path):
    damaged_run(tmp_path)

    def refuse(folder):
        raise OSError

    said = []
    with pytest.raises(RuntimeError, match=r"\(update_00003: OSError; update_00002: OSError; update_00001: OSError\)"):
        load_newest_checkpoint(tmp_path, refuse, log=said.append)
    assert said[0].endswith("does not load (OSError: OSError); trying the one before it")


def test_model_folder_of_each_kind_of_path(tmp_path):
    root = damaged_run(tmp_path / "run")
    run = tmp_path / "run"
    assert model_folder_of(root / "update_00002" / "model") == root / "update_00002" / "model"  # a model folder
    assert model_folder_of(root / "update_00002") == root / "update_00002" / "model"  # a checkpoint
    assert model_folder_of(str(run)) == root / "update_00003" / "model"  # a run: its newest whole checkpoint
    truncate(root / "update_00003" / "model" / "model.safetensors")
    assert model_folder_of(run) == root / "update_00002" / "model"
    OneTensorPolicy(0.0).save(run / "final")
    assert model_folder_of(run) == run / "final"  # a finished run: its final model
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert model_folder_of(adapter) == adapter
    with pytest.raises(ValueError, match=r"^.*nothing: not a model folder, checkpoint or run folder \(or none of its "
                                         r"checkpoints is whole; a verl checkpoint needs 'hf_model' .*\)$"):
        model_folder_of(tmp_path / "nothing")


def test_model_folder_of_a_verl_run_is_its_newest_whole_hugging_face_export(tmp_path):
    """verl saves global_step_N/actor/huggingface (its weights only with hf_model in save_contents): a run folder,
    its checkpoints folder or one global_step_N names the newest whole export, by step number."""
    run = tmp_path / "run"
    export = lambda step: run / "checkpoints" / f"global_step_{step}" / "actor" / "huggingface"  # noqa: E731
    for step in (2, 10, 12):
        OneTensorPolicy(float(step)).save(export(step))
    (export(12) / "model.safetensors").unlink()  # config and tokenizer only (no hf_model): skipped
    (run / "checkpoints" / "global_step_11").mkdir()  # no export at all: skipped
    (run / "checkpoints" / "global_step_x" / "actor" / "huggingface").mkdir(parents=True)  # not a step
    assert model_folder_of(run) == export(10)  # 10 > 2 by number, not by name
    assert model_folder_of(run / "checkpoints") == export(10)
    assert model_folder_of(run / "checkpoints" / "global_step_2") == export(2)


def test_resume_loads_the_optimizer_state_onto_the_policys_device(tmp_path):
    """A run saved on one device resumes on another (a GPU run resumed on the CPU): the optimizer state goes where
    the loaded policy is. The meta device stands in for the other device."""
    damaged_run(tmp_path)

    def load_on_meta(folder):
        policy = load_one_tensor(folder)
        policy.device = torch.device("meta")
        return policy

    resumed = load_newest_checkpoint(tmp_path, load_on_meta, log=lambda _: None)
    assert resumed.optimizer_state["state"][0]["exp_avg"].device == torch.device("meta")


def test_resume_unpickles_nothing_but_tensors_from_an_optimizer_file(tmp_path):
    """optimizer.pt is read with weights_only: a file holding any other object (unpickling one can run code) does
    not load, and the resume falls back to the checkpoint before it."""
    root = damaged_run(tmp_path)
    torch.save({"state": {}, "param_groups": [], "extra": Path("not a tensor")}, root / "update_00003" / "optimizer.pt")
    said = []
    assert load_newest_checkpoint(tmp_path, load_one_tensor, log=said.append).update == 2
    assert said[0].startswith(f"checkpoint {root / 'update_00003'} does not load (UnpicklingError: ")


def test_a_latest_pointer_that_is_not_utf8_is_reported_not_fatal(tmp_path):
    root = damaged_run(tmp_path)
    (root / "latest").write_bytes(b"update_\xff\xfe")
    said = []
    assert load_newest_checkpoint(tmp_path, load_one_tensor, log=said.append).update == 3
    named = "update_\ufffd\ufffd"  # each byte that is not UTF-8 read as the replacement character
    assert said[0] == (f"{root / 'latest'} names {named!r}, which is not a checkpoint: "
                       "looking for the newest checkpoint that loads")
