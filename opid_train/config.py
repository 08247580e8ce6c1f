"""The training configuration: one dataclass tree, from YAML and/or command-line overrides.

Every leaf is a flag with dots for nesting: `--lr 3e-4 --grpo.kl_coef 0 --opid.w_ep 1e-3
--warmstart.episodes 200 --env_kwargs '{"level": "easy"}'`. `--config run.yaml` loads a file
first; flags override it. Unknown keys are errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from opid_train.algorithms.config import AnalyzerConfig, GRPOConfig, OPIDConfig, SDARConfig
from opid_train.policy.presets import TinyConfig


@dataclass
class WarmstartConfig:
    episodes: int = 0  # expert demonstrations to collect (0: no warm start)
    split: str = "train"
    epochs: int = 8
    lr: float = 2e-3
    batch_size: int = 32
    max_minutes: float | None = None  # stop the SFT early after this many minutes
    skill_share: float = 0.0  # share of demo steps also shown with hindsight skills they follow (OPID/SDAR, tiny policy)


@dataclass
class EvalConfig:
    splits: list[str] = field(default_factory=list)  # evaluated after training (empty: none)
    episodes: int = 0  # per split; 0 = every task of the split
    greedy: bool = True
    samples: int = 1  # trajectories per task when sampling (greedy=False)
    temperature: float | None = None  # sampling temperature (greedy=False); None = the training temperature


@dataclass
class RecordConfig:
    enabled: bool = True  # every trajectory played, to <run_dir>/records.jsonl.gz (`opid-view` reads it)
    every: int = 1  # record the rollouts of every n-th update (evaluations always)
    max_trajectories: int = 0  # per update and per evaluation, whole groups (0: all)

    def __post_init__(self):
        if self.every < 1 or self.max_trajectories < 0:
            raise ValueError(f"record.every must be >= 1 and record.max_trajectories >= 0, got {self.every} and "
                             f"{self.max_trajectories}")


@dataclass
class TrainConfig:
    env: str = "OPID/ALFWorld-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    algo: str = "grpo"
    policy: str = "tiny"  # tiny | smollm2-135m | a local HF model folder
    init: str | None = None  # start RL from this model folder (e.g. another run's initial/), skipping the warm start
    tiny: TinyConfig = field(default_factory=TinyConfig)
    lora_rank: int = 0  # > 0 trains a LoRA adapter of this rank (peft) instead of all weights
    device: str | None = None  # default: cuda when available
    seed: int = 0
    run_dir: str | None = None  # default runs/<env>-<algo>-seed<seed>
    threads: int | None = None  # torch CPU threads

    # rollouts
    train_split: str = "train"
    num_train_tasks: int | None = None  # draw training tasks from n task ids spread over the split
    # RL only on training tasks the warm start did not demonstrate: BC memorizes its demonstrated
    # tasks, so RL on them mostly learns to undo sampling noise, not to act on unseen tasks.
    exclude_demo_tasks: bool = False
    updates: int = 10
    tasks_per_update: int = 4  # G
    group_size: int = 8  # N trajectories per task (one GRPO group)
    max_new_tokens: int = 24
    temperature: float = 1.0
    env_workers: int = 0  # env worker processes (0: step envs in the learner's process)

    # learner
    lr: float = 1e-4
    weight_decay: float = 0.0
    ppo_epochs: int = 1
    minibatch_size: int = 256  # rows per optimizer step
    micro_batch_size: int = 32  # rows per forward/backward (gradient accumulation)
    max_grad_norm: float = 1.0
    checkpoint_every: int = 1

    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    opid: OPIDConfig = field(default_factory=OPIDConfig)
    sdar: SDARConfig = field(default_factory=SDARConfig)
    record: RecordConfig = field(default_factory=RecordConfig)

    tensorboard: bool = True  # when tensorboard is installed
    wandb: bool = False  # when wandb is installed; project from $WANDB_PROJECT
    progress: bool = True

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        return Path("runs") / f"{self.env.replace('/', '_')}-{self.algo}-seed{self.seed}"


# -- (de)serialisation ---------------------------------------------------------------------------
def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict[str, Any], where: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config keys {sorted(where + k for k in unknown)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where}{key} must be a mapping")
            kwargs[key] = from_dict(hint, value, f"{where}{key}.")
        else:
            kwargs[key] = value
    return cls(**kwargs)


def load_yaml(path: str | Path) -> TrainConfig:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a YAML mapping")
    return from_dict(TrainConfig, data)


# -- command line ----------------------------------------------------------------------------------
def _leaves(cls, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, hint


def coerce(text: str, hint) -> Any:
    """A command-line string as the field's type (bool, int, float, str, list, dict, optional)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if origin is list:
        if text.lstrip().startswith("["):  # a JSON array, as YAML and config dumps write lists
            items = json.loads(text)
            if not isinstance(items, list):
                raise ValueError(f"expected a JSON array or comma-separated values, got {text!r}")
            return [coerce(str(x), args[0]) for x in items]
        return [coerce(x.strip(), args[0]) for x in text.split(",") if x.strip()]
    if origin is dict or hint is dict:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {text!r}")
        return value
    return hint(text)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with a TrainConfig; flags override it")
    for name, hint in _leaves(TrainConfig):
        parser.add_argument(f"--{name}", dest=name, default=None, metavar=getattr(hint, "__name__", "VALUE").upper())


def with_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """`cfg` with dotted leaves replaced, e.g. {"opid.w_ep": 0.1, "lr": 3e-4}; unknown keys are errors."""
    data = to_dict(cfg)
    for name, value in overrides.items():
        node = data
        *parents, leaf = name.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return from_dict(TrainConfig, data)


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    cfg = load_yaml(args.config) if getattr(args, "config", None) else (base or TrainConfig())
    overrides = {}
    for name, hint in _leaves(TrainConfig):
        text = getattr(args, name, None)
        if text is None:
            continue
        try:
            overrides[name] = coerce(text, hint)
        except (ValueError, json.JSONDecodeError) as exc:
            raise SystemExit(f"--{name}: {exc}") from None
    return with_overrides(cfg, overrides)
