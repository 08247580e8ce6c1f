"""Run presets: the OPID reference's configuration per environment, in one YAML file each.

    opid_train/presets/alfworld.yaml | webshop.yaml | searchqa.yaml   (default.yaml: any other env)

Each file has three blocks:
- `reference`: what the reference computes (prompt template and history length, max steps, search
  result text, WebShop score, GRPO statistics, outcome reward and penalty; `per_algo` where the
  reference's script for one algorithm differs). Applied to every run on the env in parity mode
  "reference", the default for any pretrained policy;
- `ours`: our named variants of the same settings, parity mode "ours", the default for the tiny
  from-scratch policy;
- `run`: the paper's hyperparameters (group size, lr, KL, response length, ...), taken by
  `opid-train --preset NAME`.
Whole run configs in the format of `--config` (a run's config.yaml) are in opid_train/configs/:
main.yaml is the main job's (`make run`), also `opid-train --preset main`.
A value a run sets itself (a flag, its YAML, `env_kwargs`) always wins over the block.

`load_preset`, `preset_for_env` and `parity_settings` are the loaders other backends read them with.
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).parent
CONFIG_DIR = PRESET_DIR.parent / "configs"  # whole run configs (TrainConfig YAML), e.g. the main job's
PARITY_MODES = ("auto", "reference", "ours")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if p.stem != "default")


@lru_cache(maxsize=None)
def _read(name: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown preset {name!r}; choose one of {preset_names()}")
    return yaml.safe_load(path.read_text())


def load_preset(name: str) -> dict[str, Any]:
    """The preset file `name` (alfworld, webshop, searchqa, default) as a dict (a fresh copy)."""
    return json.loads(json.dumps(_read(name)))


def preset_for_env(env_id: str) -> dict[str, Any] | None:
    """The preset of an env id ("OPID/ALFWorld-v0" or "module:OPID/ALFWorld-v0"), None for other envs."""
    env_id = env_id.split(":", 1)[-1]
    return next((load_preset(n) for n in preset_names() if _read(n).get("env") == env_id), None)


def parity_settings(env_id: str, mode: str) -> dict[str, Any]:
    """The `reference` or `ours` block for an env id (default.yaml's for an env without a preset)."""
    if mode not in ("reference", "ours"):
        raise ValueError(f"parity mode must be 'reference' or 'ours', got {mode!r}")
    return (preset_for_env(env_id) or load_preset("default"))[mode]


def is_tiny_policy(policy: str) -> bool:
    """The tiny preset, or a model folder saved from it (its chat template is the tiny one)."""
    if policy == "tiny":
        return True
    from opid_train.policy.presets import TINY_CHAT_TEMPLATE

    folder = Path(policy)
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            text = path.read_text(errors="replace")
            template = json.loads(text).get("chat_template") if name.endswith(".json") else text
            if template:
                return template == TINY_CHAT_TEMPLATE
    return False


def parity_mode(parity: str, policy: str) -> str:
    """'auto' is 'ours' for the tiny policy (and its checkpoints), 'reference' for any other."""
    if parity not in PARITY_MODES:
        raise ValueError(f"parity must be one of {PARITY_MODES}, got {parity!r}")
    if parity != "auto":
        return parity
    return "ours" if is_tiny_policy(policy) else "reference"


def grpo_with_parity(grpo, mode: str, env_id: str = "", algo: str | None = None):
    """A GRPOConfig with the fields it left at None taken from the env's `mode` block (and the
    block's `per_algo` entry for `algo`, where the reference's script for that algorithm differs)."""
    block = parity_settings(env_id, mode)
    values = {**block["grpo"], **block.get("per_algo", {}).get(algo, {}).get("grpo", {})}
    return dataclasses.replace(grpo, **{k: v for k, v in values.items() if getattr(grpo, k) is None})


def resolve_parity(cfg):
    """`cfg` (a TrainConfig) with its parity mode made concrete and every parity-controlled field it
    left at None filled from the env's block; env_kwargs it sets win over the block's. Idempotent."""
    from opid_train.algorithms.grpo import check_grpo_config
    from wrappers.templates import prompt_template

    mode = parity_mode(cfg.parity, cfg.policy)
    block = parity_settings(cfg.env, mode)
    resolved = dataclasses.replace(
        cfg, parity=mode, grpo=check_grpo_config(grpo_with_parity(cfg.grpo, mode, cfg.env, cfg.algo)),
        prompt=cfg.prompt if cfg.prompt is not None else block.get("prompt"),
        history_k=cfg.history_k if cfg.history_k is not None else block.get("history_k"),
        env_kwargs={**block.get("env_kwargs", {}), **cfg.env_kwargs})
    if resolved.prompt is not None or resolved.history_k is not None:
        # an unknown template name or a negative history length is an error now, not after the warm start
        prompt_template(resolved.prompt or "generic-compact", resolved.history_k)
    return resolved


def run_config_names() -> list[str]:
    """What `opid-train --preset` takes: the shipped run configs (opid_train/configs/*.yaml, e.g. the
    main job's) and the presets with a `run` block (the paper's hyperparameters)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) + [n for n in preset_names() if "run" in _read(n)]


def preset_config(name: str):
    """The TrainConfig of `opid-train --preset NAME`: a shipped run config as it is, or a preset's env,
    parity "reference" and its `run` block."""
    from opid_train.config import TrainConfig, bad, from_dict, load_yaml

    if (CONFIG_DIR / f"{name}.yaml").exists():
        return load_yaml(CONFIG_DIR / f"{name}.yaml")
    if name not in run_config_names():
        raise bad("preset", name, f"expected one of {', '.join(run_config_names())}")
    preset = load_preset(name)
    return from_dict(TrainConfig, {"env": preset["env"], "parity": "reference", **preset["run"]})


def agent_config_for(cfg):
    """The agent interface (prompt template, answer format) a run's envs use."""
    from opid_train.rollout import resolve_env_id
    from wrappers import agent_config
    from wrappers.templates import prompt_template

    cfg = resolve_parity(cfg)
    base = agent_config(resolve_env_id(cfg.env))  # a "module:id" env registers its agent config on import
    template = prompt_template(cfg.prompt, cfg.history_k) if cfg.prompt else base.template
    if cfg.history_k is not None and template.history_k != cfg.history_k:
        template = dataclasses.replace(template, history_k=cfg.history_k)
    return dataclasses.replace(base, template=template)


__all__ = ["CONFIG_DIR", "PARITY_MODES", "PRESET_DIR", "agent_config_for", "grpo_with_parity", "is_tiny_policy", "load_preset",
           "parity_mode", "parity_settings", "preset_config", "preset_for_env", "preset_names", "resolve_parity", "run_config_names"]
