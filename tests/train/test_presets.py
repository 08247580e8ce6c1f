"""Parity presets: which settings a run gets, and that the YAML files hold what the code reads."""

import dataclasses
import json

import gymnasium as gym
import pytest

import opid_envs  # noqa: F401  (registers the OPID env ids)
from opid_train.algorithms.config import GRPOConfig, PARITY_FIELDS
from opid_train.cli.train import parse_args
from opid_train.config import TrainConfig
from opid_train.policy.presets import TinyConfig, tiny_policy
from opid_train.presets import (agent_config_for, is_tiny_policy, load_preset, parity_settings, preset_config,
                                preset_for_env, preset_names, resolve_parity)
from wrappers import SEARCH_FORMAT
from wrappers.templates import TEMPLATES, ReferenceTemplate


def test_tiny_policy_keeps_our_variants():
    cfg = resolve_parity(TrainConfig(env="OPID/WebShop-v0", policy="tiny"))
    assert cfg.parity == "ours" and (cfg.prompt, cfg.history_k) == ("webshop-compact", 2)
    assert cfg.env_kwargs == {"option_match": "value", "color_normalization": "longest"}
    g = cfg.grpo
    assert (g.outcome_advantage, g.normalize_std, g.reward, g.reward_scale, g.invalid_format_penalty, g.clip_ratio_c) == (
        "per_trajectory_population_std", True, "score", 1.0, 0.1, 0)  # no dual clip: the tiny policy's loss as before


@pytest.mark.parametrize("env, prompt, k, kwargs, grpo", [
    ("OPID/ALFWorld-v0", "alfworld-reference", 5, {"max_steps": 30}, ("verl_agent", True, "success", 10.0, 0.1, 3.0)),
    ("OPID/WebShop-v0", "webshop-reference", 2, {"max_steps": 15, "option_match": "pair",
                                                 "color_normalization": "webshop"},
     ("verl_agent", False, "success", 10.0, 0.1, 3.0)),
    ("OPID/SearchQA-v0", "searchqa-reference", 4, {"max_steps": 4, "topk": 3, "result_format": "verl_agent",
                                                   "drop_zero_score_hits": False},
     ("verl_agent", True, "success", 1.0, 0.01, 3.0)),
])
def test_a_pretrained_policy_gets_the_reference_per_env(env, prompt, k, kwargs, grpo):
    cfg = resolve_parity(TrainConfig(env=env, policy="smollm2-135m", algo="opid"))
    assert cfg.parity == "reference" and (cfg.prompt, cfg.history_k, cfg.env_kwargs) == (prompt, k, kwargs)
    assert tuple(getattr(cfg.grpo, f) for f in PARITY_FIELDS) == grpo
    assert resolve_parity(cfg) == cfg  # idempotent: a resumed run's config.yaml resolves to itself


@pytest.mark.parametrize("env", ["OPID/ALFWorld-v0", "OPID/WebShop-v0", "OPID/SearchQA-v0", "OPIDTest/Anything-v0"])
def test_dual_clip_is_the_references_3_and_off_in_ours(env):
    for algo in ("grpo", "opid", "sdar"):
        reference = resolve_parity(TrainConfig(env=env, policy="smollm2-135m", algo=algo))
        ours = resolve_parity(TrainConfig(env=env, policy="tiny", algo=algo))
        assert (reference.grpo.clip_ratio_c, ours.grpo.clip_ratio_c) == (3.0, 0)
    assert resolve_parity(TrainConfig(env=env, grpo=GRPOConfig(clip_ratio_c=5.0))).grpo.clip_ratio_c == 5.0  # a run's own wins


def test_what_a_run_sets_wins_over_the_preset():
    cfg = resolve_parity(TrainConfig(env="OPID/WebShop-v0", policy="smollm2-135m", history_k=3,
                                     env_kwargs={"max_steps": 20}, grpo=GRPOConfig(normalize_std=True)))
    assert cfg.history_k == 3 and cfg.env_kwargs["max_steps"] == 20 and cfg.env_kwargs["option_match"] == "pair"
    assert cfg.grpo.normalize_std is True and cfg.grpo.reward_scale == 10.0
    ours = resolve_parity(TrainConfig(env="OPID/ALFWorld-v0", policy="smollm2-135m", parity="ours"))
    assert ours.prompt == "alfworld-compact" and ours.grpo.outcome_advantage == "per_trajectory_population_std"
    with pytest.raises(ValueError, match="parity"):
        resolve_parity(TrainConfig(parity="paper"))


def test_a_user_env_gets_the_env_independent_settings():
    cfg = resolve_parity(TrainConfig(env="OPIDTest/Anything-v0", policy="smollm2-135m"))
    assert cfg.prompt is None and cfg.env_kwargs == {} and cfg.grpo.outcome_advantage == "verl_agent"


def test_a_tiny_checkpoint_folder_counts_as_tiny(tmp_path, private_opid_cache):
    tiny_policy(["go to sink 1", "take mug 1 from countertop 1"] * 10, config=TinyConfig(vocab_size=300)).save(
        tmp_path / "tiny")
    assert is_tiny_policy(str(tmp_path / "tiny"))
    assert resolve_parity(TrainConfig(policy=str(tmp_path / "tiny"))).parity == "ours"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert not is_tiny_policy(str(tmp_path / "other")) and not is_tiny_policy(str(tmp_path / "missing"))


def test_run_preset_and_cli_overrides():
    cfg = preset_config("alfworld")
    assert (cfg.env, cfg.parity, cfg.algo, cfg.lr, cfg.group_size, cfg.tasks_per_update) == (
        "OPID/ALFWorld-v0", "reference", "opid", 1e-6, 8, 16)
    assert (cfg.max_new_tokens, cfg.grpo.kl_coef, cfg.analyzer.max_step_skills, cfg.eval.temperature) == (512, 0.01, 5, 0.4)
    cli = parse_args(["--preset", "searchqa", "--lr", "3e-6", "--policy", "/models/qwen"]).run
    assert (cli.env, cli.lr, cli.policy, cli.analyzer.max_step_skills, cli.grpo.kl_coef) == (
        "OPID/SearchQA-v0", 3e-6, "/models/qwen", 2, 0.001)
    with pytest.raises(ValueError, match="--preset 'sokoban': expected one of main, alfworld"):
        preset_config("sokoban")


def test_agent_config_for_a_run():
    agent = agent_config_for(TrainConfig(env="OPID/SearchQA-v0", policy="smollm2-135m", history_k=2))
    assert isinstance(agent.template, ReferenceTemplate) and agent.template.history_k == 2
    assert agent.response_format == SEARCH_FORMAT
    assert agent_config_for(TrainConfig(env="OPID/SearchQA-v0")).template.intro.startswith("Answer the question")


@pytest.mark.parametrize("name", ["alfworld", "webshop", "searchqa"])
def test_preset_files_are_complete_and_envs_accept_their_kwargs(name):
    preset = load_preset(name)
    assert preset_for_env(preset["env"]) == preset and preset_names() == ["alfworld", "searchqa", "webshop"]
    for mode in ("reference", "ours"):
        block = parity_settings(preset["env"], mode)
        assert set(block["grpo"]) == set(PARITY_FIELDS) and block["prompt"] in TEMPLATES
        if name != "alfworld":  # ALFWorld's only kwarg is max_steps; making it needs generated games
            gym.make(preset["env"], **block["env_kwargs"]).close()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(preset["run"]) <= fields


def test_bad_parity_fields_are_errors_before_any_work():
    for kwargs, match in [({"prompt": "alfworld"}, "prompt template"), ({"history_k": -1}, "history_k"),
                          ({"grpo": GRPOConfig(outcome_advantage="per_group")}, "outcome_advantage"),
                          ({"grpo": GRPOConfig(reward="won")}, "grpo.reward"),
                          ({"grpo": GRPOConfig(clip_ratio_c=0.9)}, "grpo.clip_ratio_c")]:
        with pytest.raises(ValueError, match=match):
            resolve_parity(TrainConfig(env="OPID/ALFWorld-v0", **kwargs))


def test_a_user_env_module_registers_its_prompt_before_the_run_reads_it():
    cfg = TrainConfig(env="tests.train.parity_user_env:ParityTest/KeyDoor-v0", policy="smollm2-135m")
    template = agent_config_for(cfg).template
    assert (template.history_k, template.intro) == (7, "A user's prompt.")
    assert resolve_parity(cfg).grpo.outcome_advantage == "verl_agent"  # the env-independent reference settings


def test_the_reference_grpo_baseline_on_alfworld_is_mean_norm():
    # examples/grpo_trainer/run_alfworld.sh runs mean_norm, the OPID script mean_std_norm
    grpo = resolve_parity(TrainConfig(env="OPID/ALFWorld-v0", policy="smollm2-135m", algo="grpo")).grpo
    assert grpo.normalize_std is False and grpo.outcome_advantage == "verl_agent"
    sdar = resolve_parity(TrainConfig(env="OPID/ALFWorld-v0", policy="smollm2-135m", algo="sdar")).grpo
    assert sdar.normalize_std is True
