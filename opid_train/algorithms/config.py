"""Configuration of each algorithm; the trainer's config nests these (`--opid.w_ep 1e-3`, ...)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GRPOConfig:
    normalize_std: bool = True  # A_ep = (R - mean) / std; False gives (R - mean) (Dr. GRPO style)
    clip_eps: float = 0.2
    kl_coef: float = 0.01  # low-variance KL to the reference policy; 0 turns it off
    invalid_format_penalty: float = 0.1  # subtracted from the score of format-invalid steps' advantages


@dataclass
class AnalyzerConfig:
    backend: str = "offline"  # offline | openai | local (a HF model path or "policy")
    model: str | None = None  # chat model name (openai) or HF path (local)
    base_url: str | None = None  # OpenAI-compatible endpoint; key from $OPENAI_API_KEY
    max_step_skills: int = 5  # K: 5 for ALFWorld/WebShop, 2 for search in the paper
    gamma: float = 0.95  # discount of the return-to-go shown to the analyzer
    concurrency: int = 8
    cache: bool = True  # analyses cached on disk by trajectory hash


@dataclass
class OPIDConfig:
    w_ep: float = 1e-3  # weight of the episode-skill teacher term
    w_step: float = 1e-3  # weight of the step-skill teacher term
    routing: str = "route"  # route | additive | episode_only | step_only
    normalize_teacher: bool = False  # z-normalize the teacher term over active tokens
    clip_teacher: float | None = None  # clip |dlogp| per token
    start_update: int = 0  # teacher term active from this update ...
    stop_update: int | None = None  # ... until this one (exclusive); None = always


@dataclass
class SDARConfig:
    coef: float = 0.01
    beta: float = 5.0
    gate: str = "sigmoid"  # sigmoid | entropy | soft_or (the SDAR paper's variants)
