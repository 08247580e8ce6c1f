"""Presets to verl configs: a preset is a Hydra config that extends verl's own `ppo_trainer`.

    defaults: [ppo_trainer, _self_]        # verl's config files, found via hydra.searchpath
    opid: {...}                            # the method: opid's TrainConfig keys (env, algo, opid, ...)
    opid_rollout: {...}                    # the agent loop: env slots and processes, task files
    actor_rollout_ref: ... data: ... trainer: ...   # verl's own keys, as in any verl recipe

One source for each number. The reference's hyperparameters live in opid's parity presets
(opid_train/presets/NAME.yaml, which the local backend's `--preset NAME` runs): a verl preset reads
them with `${opid_preset:NAME,run.lr}`, into verl's keys (what verl runs: learning rate, KL, clip,
group size, lengths, temperatures) and the `opid` section, which refuses the keys verl owns. The
reference's prompt template, history window, env settings and GRPO statistics come from the same
file's `reference` block through the local backend's own `resolve_parity`, and are written into the
composed config's `opid` section, so the agent loop and the trainer read them from there.

`compose_preset(path, overrides)` composes a preset with Hydra (command-line overrides last, verl's
syntax), resolves it, checks that the two halves agree, and returns the OmegaConf config, the opid
`TrainConfig` and the `opid_rollout` options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opid_train.algorithms.config import PARITY_FIELDS
from opid_train.config import TrainConfig, from_dict, to_dict
from opid_train.presets import load_preset, resolve_parity
from opid_train.verl import AGENT_NAME

PRESETS = Path(__file__).parent / "presets"
DATASET_CLASS = ("pkg://opid_train.verl.dataset", "OpidTaskDataset")

# TrainConfig keys that verl owns in this backend, and where to set them instead.
VERL_OWNS = {
    "lr": "actor_rollout_ref.actor.optim.lr",
    "weight_decay": "actor_rollout_ref.actor.optim.weight_decay",
    "group_size": "actor_rollout_ref.rollout.n",
    "tasks_per_update": "data.train_batch_size",
    "updates": "trainer.total_training_steps",
    "temperature": "actor_rollout_ref.rollout.temperature",
    "max_new_tokens": "data.max_response_length",
    "ppo_epochs": "actor_rollout_ref.actor.ppo_epochs",
    "minibatch_size": "actor_rollout_ref.actor.ppo_mini_batch_size",
    "micro_batch_size": "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
    "max_grad_norm": "actor_rollout_ref.actor.grad_clip",
    "policy": "actor_rollout_ref.model.path",
    "init": "actor_rollout_ref.model.path",
    "grpo.kl_coef": "actor_rollout_ref.actor.kl_loss_coef",
    "grpo.clip_eps": "actor_rollout_ref.actor.clip_ratio",
    "grpo.loss_agg": "actor_rollout_ref.actor.loss_agg_mode",
    "env_workers": "opid_rollout.env_workers",
}


@dataclass
class OpidRollout:
    """The `opid_rollout` section: how the agent loop plays the envs."""

    env_slots: int = 64  # envs per agent-loop worker (episodes beyond wait for a free one)
    env_workers: int = 0  # env processes per agent-loop worker; 0: envs step in threads (thread-safe envs only)
    max_turns: int | None = None  # stop an episode after this many steps (None: the env's own limit)
    num_train_tasks: int | None = None  # task ids spread over the split for the task file (None: all)
    eval_split: str | None = "valid_seen"  # tasks of the validation file (None: no validation file)
    num_eval_tasks: int | None = 128


def _dotted(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in ("grpo", "opid", "sdar", "analyzer", "warmstart", "eval", "tiny"):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def opid_config(section: dict) -> TrainConfig:
    """The preset's `opid` section as a TrainConfig, refusing keys verl owns here."""
    owned = sorted(k for k in _dotted(section) if k in VERL_OWNS)
    if owned:
        raise ValueError("with --backend verl these are set in verl's keys: "
                         + ", ".join(f"opid.{k} -> {VERL_OWNS[k]}" for k in owned))
    return from_dict(TrainConfig, section, "opid.")


def rollout_options(section: dict | None) -> OpidRollout:
    return from_dict(OpidRollout, dict(section or {}), "opid_rollout.")


def preset_value(name: str, key: str):
    """`${opid_preset:NAME,KEY}`: the value at dotted KEY (list items by index) of opid's parity preset NAME."""
    value = load_preset(name)
    for part in key.split("."):
        try:
            value = value[int(part)] if isinstance(value, list) else value[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise KeyError(f"${{opid_preset:{name},{key}}}: opid_train/presets/{name}.yaml has no {key}") from None
    return value


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("opid_preset"):
        OmegaConf.register_new_resolver("opid_preset", preset_value)


PARITY_KEYS = ("parity", "prompt", "history_k", "env_kwargs", "grpo")  # what resolve_parity settles (grpo: PARITY_FIELDS)


def compose_preset(preset: str | Path, overrides: list[str] | None = None):
    """(verl config, opid TrainConfig, OpidRollout) of a preset file or a bundled preset's name; the
    config comes resolved (no interpolation left for verl's Ray workers to resolve)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    register_resolvers()
    path = resolve_preset(preset)
    with initialize_config_dir(config_dir=str(path.parent), version_base=None):
        cfg = compose(config_name=path.stem, overrides=list(overrides or []))
    if cfg.get("opid", {}).get("run_dir"):  # absolute: verl's task runner is a Ray actor, its folder may not be ours
        with open_dict(cfg):
            cfg.opid.run_dir = str(Path(cfg.opid.run_dir).expanduser().resolve())
    OmegaConf.resolve(cfg)
    data = OmegaConf.to_container(cfg)
    train = opid_config(dict(data.get("opid") or {}))
    # the parity mode follows the policy verl trains ("reference" for any pretrained model), as locally
    train = resolve_parity(dataclasses.replace(train, policy=str(cfg.actor_rollout_ref.model.path)))
    resolved = to_dict(train)
    resolved["grpo"] = {**data["opid"].get("grpo", {}), **{k: resolved["grpo"][k] for k in PARITY_FIELDS}}
    with open_dict(cfg):
        for key in PARITY_KEYS:
            cfg.opid[key] = resolved[key]
    train = opid_config(OmegaConf.to_container(cfg.opid))
    rollout = rollout_options(data.get("opid_rollout"))
    check_agreement(cfg, train, rollout)
    validate_with_verl(cfg)
    return cfg, train, rollout


def validate_with_verl(cfg) -> None:
    """verl's own checks (batch sizes against GPUs, micro-batch settings, ...), as its entry point runs them."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    try:
        validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    except (AssertionError, ValueError) as exc:
        raise ValueError(f"verl rejects the config: {exc}") from None


def resolve_preset(preset: str | Path) -> Path:
    path = Path(preset)
    if not path.suffix and not path.exists():
        path = PRESETS / f"{preset}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise FileNotFoundError(f"no preset {preset!r}: give a YAML file or one of {names}")
    return path.resolve()


# Envs whose instances cannot step in parallel threads of one process: ALFWorld's game parser (TatSu)
# keeps global state, and two games loading at once corrupt it.
THREAD_UNSAFE_ENVS = {"OPID/ALFWorld-v0"}


def check_agreement(cfg, train: TrainConfig, options: OpidRollout | None = None) -> None:
    """What both halves must agree on, checked before any GPU is asked for."""
    rollout = cfg.actor_rollout_ref.rollout
    problems = []
    if options is not None and options.env_workers < 1 and train.env.split(":")[-1] in THREAD_UNSAFE_ENVS:
        problems.append(f"{train.env} cannot step in threads (its game parser is not thread-safe): "
                        "set opid_rollout.env_workers >= 1 (env processes)")
    if rollout.agent.default_agent_loop != AGENT_NAME:
        problems.append(f"actor_rollout_ref.rollout.agent.default_agent_loop must be {AGENT_NAME!r}")
    if (cfg.data.custom_cls.path, cfg.data.custom_cls.name) != DATASET_CLASS:
        problems.append(f"data.custom_cls must be path={DATASET_CLASS[0]}, name={DATASET_CLASS[1]}")
    if not cfg.trainer.get("use_v1", True):
        problems.append("trainer.use_v1 must be true (one training row per env step needs verl's v1 trainer)")
    if cfg.algorithm.adv_estimator != "grpo":
        problems.append("algorithm.adv_estimator must be 'grpo' (the outcome baseline opid's advantage step replaces)")
    algorithm = cfg.algorithm
    if algorithm.use_kl_in_reward:
        problems.append("algorithm.use_kl_in_reward must be false (opid's advantage step replaces the one that "
                        "applies it; the KL term is the actor's kl_loss)")
    correction = algorithm.get("rollout_correction") or {}
    if (correction.get("rollout_is") or correction.get("rollout_rs")) and not correction.get("bypass_mode"):
        problems.append("algorithm.rollout_correction.rollout_is / rollout_rs: opid's advantage step replaces the "
                        "one that computes their weights; leave them null")
    longest = cfg.data.max_prompt_length + cfg.data.max_response_length
    for role, budget in (("actor", "ppo_max_token_len_per_gpu"), ("rollout", "log_prob_max_token_len_per_gpu")):
        section = cfg.actor_rollout_ref[role]
        dynamic = section.get("use_dynamic_bsz", section.get("log_prob_use_dynamic_bsz", False))
        if dynamic and section[budget] < longest:
            problems.append(f"actor_rollout_ref.{role}.{budget} {section[budget]} is below the longest row "
                            f"(data.max_prompt_length + max_response_length = {longest}): verl cannot split it")
    if int(rollout.n) < 2:
        problems.append(f"actor_rollout_ref.rollout.n is {rollout.n}: a GRPO group needs at least 2 rollouts")
    if train.algo not in ("grpo", "opid", "sdar"):
        problems.append(f"opid.algo {train.algo!r} is not grpo, opid or sdar")
    actor = cfg.actor_rollout_ref.actor
    if "hf_model" not in (actor.checkpoint.save_contents or []):
        problems.append("actor_rollout_ref.actor.checkpoint.save_contents needs hf_model "
                        "(the Hugging Face folder opid-eval reads)")
    if train.grpo.clip_ratio_c != actor.get("clip_ratio_c", 3.0):  # verl's actor always dual-clips (bound > 1)
        problems.append(f"opid.grpo.clip_ratio_c {train.grpo.clip_ratio_c} (the parity mode's or yours) differs from "
                        f"actor_rollout_ref.actor.clip_ratio_c {actor.get('clip_ratio_c', 3.0)}: set both to one bound > 1")
    if actor.use_kl_loss and actor.kl_loss_type not in ("low_var_kl", "k3"):
        problems.append(f"actor_rollout_ref.actor.kl_loss_type {actor.kl_loss_type!r}: opid's KL is low_var_kl")
    if problems:
        raise ValueError("preset does not fit the verl backend:\n  " + "\n  ".join(problems))
