"""Configuration of each algorithm; the trainer's config nests these (`--opid.w-ep 1e-3`, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

OutcomeAdvantage = Literal["verl_agent", "per_trajectory_population_std"]
Reward = Literal["score", "success"]
Routing = Literal["route", "additive", "episode_only", "step_only"]  # wrappers.skills.ROUTING_MODES
OUTCOME_ADVANTAGES = get_args(OutcomeAdvantage)
REWARDS = get_args(Reward)
# GRPOConfig fields that the parity mode sets when they are left at None
PARITY_FIELDS = ("outcome_advantage", "normalize_std", "reward", "reward_scale", "invalid_format_penalty", "clip_ratio_c")


@dataclass
class GRPOConfig:
    # Fields left at None are set by the run's parity mode (`opid_train.presets.resolve_parity`): the
    # OPID reference's values per env (opid_train/presets/*.yaml) or ours, the tiny policy's.
    # How the group statistics are taken: "verl_agent" (the reference: over the group's step rows, so a
    # longer trajectory weighs more, unbiased std, invalid-step penalties inside the row's score, a group
    # of one row keeps its score) or "per_trajectory_population_std" (ours: over trajectories, population
    # std, a group of one gets 0, penalties subtracted after normalization). See grpo.py.
    outcome_advantage: OutcomeAdvantage | None = None
    normalize_std: bool | None = None  # A_ep = (R - mean) / std ("mean_std_norm"); False: R - mean ("mean_norm")
    reward: Reward | None = None  # "score": the env's outcome score in [0, 1]; "success": 1 if won else 0 (reference)
    reward_scale: float | None = None  # R = reward_scale * reward (the reference: 10 on ALFWorld and WebShop)
    clip_eps: float = 0.2  # PPO ratio clip: the ratio is kept within [1 - clip_eps, 1 + clip_eps]
    # Dual-clip PPO (Ye et al. 2020; verl's actor.clip_ratio_c): a token with A < 0 loses at most
    # -A * clip_ratio_c, so a token whose ratio ran far above 1 cannot push an unbounded loss. A number
    # > 1 (the reference: 3.0), or 0 for off (ours: the loss without it); None: set by the parity mode.
    clip_ratio_c: float | None = None
    kl_coef: float = 0.01  # low-variance KL to the reference policy; 0 turns it off
    invalid_format_penalty: float | None = None  # for format-invalid steps (0.1; the reference's search: 0.01)
    # Subtracted from the advantage of a step the env could not carry out (an action that is not
    # admissible, or a malformed response, which also pays invalid_format_penalty): a per-step signal
    # against the loops of impossible actions a small policy falls into.
    invalid_action_penalty: float = 0.0
    # How token losses are averaged: "token-mean" (every token counts the same, verl's default) or
    # "traj-mean" (every trajectory counts the same, whatever its length: long failed episodes
    # then do not outweigh the short successes whose first actions they share).
    loss_agg: Literal["token-mean", "traj-mean"] = "token-mean"


@dataclass
class AnalyzerConfig:
    # who writes the hindsight skills: offline (rules from the trajectory, no model), openai (an
    # OpenAI-compatible chat endpoint) or local (a HF model path, or "policy" for the policy itself)
    backend: Literal["offline", "openai", "local"] = "offline"
    model: str | None = None  # chat model name (openai) or HF path (local)
    base_url: str | None = None  # OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never logged
    max_step_skills: int = 5  # K: 5 for ALFWorld/WebShop, 2 for search in the paper
    gamma: float = 0.95  # discount of the return-to-go shown to the analyzer
    concurrency: int = 8  # requests in flight (openai)
    temperature: float = 0.0  # sampling temperature of the analyzer model
    max_tokens: int = 1024  # longest analysis the analyzer model may write
    timeout_s: float = 120.0  # per request
    max_retries: int = 5  # API retries (connection errors, timeouts, 429, 5xx)
    backoff_s: float = 1.0  # first retry wait; doubles each retry
    backoff_max_s: float = 30.0  # longest wait between retries
    parse_retries: int = 2  # re-asks that feed the parse error back
    max_chars_per_step: int = 600  # observation/response clip in the analyzer prompt
    cache: bool = True  # analyses cached on disk by trajectory hash (LLM backends)
    cache_dir: str | None = None  # default $OPID_CACHE/analyses


@dataclass
class OPIDConfig:
    w_ep: float = 1e-3  # weight of the episode-skill teacher term
    w_step: float = 1e-3  # weight of the step-skill teacher term
    routing: Routing = "route"  # which skill the teacher sees per step (episode or step skill, or both)
    normalize_teacher: bool = False  # z-normalize the teacher term over active tokens
    clip_teacher: float | None = None  # clip |dlogp| per token
    start_update: int = 0  # teacher term active from this update ...
    stop_update: int | None = None  # ... until this one (exclusive); None = always
    rescore_old: bool = False  # l_old from a re-scoring pass (batched with the teacher's) instead of sampling log-probs
    score_chunk_rows: int | None = 16  # teacher prompts per score call, length-sorted (CPU: small is faster); None = one call


@dataclass
class SDARConfig:
    coef: float = 0.01  # weight of the gated distillation term
    beta: float = 5.0  # sharpness of the gate (0: the gate is always 1/2)
    gate: Literal["sigmoid", "entropy", "soft_or"] = "sigmoid"  # sigmoid (gap gate), entropy or soft_or (the SDAR paper's variants)
    # routed: OPID's skill injection; prefix: a "[Privileged Skill Information]" block before the prompt
    teacher_context: Literal["routed", "prefix"] = "routed"
    routing: Routing = "route"  # which skill the teacher sees (both levels in one prompt for "additive")
    score_chunk_rows: int | None = 16  # teacher prompts per score call, length-sorted (CPU: small is faster); None = one call
