"""Hindsight skill analyzers: finished trajectory -> episode skill + step skills at critical steps.

`make_analyzer(config, policy)` builds the configured backend:
    offline  rules over the trajectory's own evidence, no LLM (the embedded default)
    openai   any OpenAI-compatible chat endpoint
    local    a Hugging Face model: `model="policy"` (or unset) reuses the policy being trained
LLM backends are wrapped in the on-disk cache (the offline analyzer is cheaper than a cache read).
"""

from __future__ import annotations

from opid_train.algorithms.config import AnalyzerConfig
from opid_train.analyzers.base import Analysis, AnalysisError, Analyzer, build_messages, parse_analysis
from opid_train.analyzers.cache import CachedAnalyzer
from opid_train.analyzers.offline import OfflineAnalyzer

BACKENDS = ("offline", "openai", "local")


def make_analyzer(config: AnalyzerConfig, policy=None) -> Analyzer:
    if config.backend not in BACKENDS:
        raise ValueError(f"unknown analyzer backend {config.backend!r}; choose one of {BACKENDS}")
    if config.backend == "offline":
        return OfflineAnalyzer(config.max_step_skills)
    if config.backend == "openai":
        from opid_train.analyzers.llm_api import OpenAIAnalyzer

        analyzer: Analyzer = OpenAIAnalyzer(config)
    else:
        from opid_train.analyzers.local import LocalAnalyzer

        if config.model in (None, "policy"):
            if policy is None:
                raise ValueError("the local analyzer with model='policy' needs the policy")
            generator = policy
        else:
            from opid_train.policy.presets import hf_policy

            generator = hf_policy(config.model)
        analyzer = LocalAnalyzer(config, generator)
    return CachedAnalyzer(analyzer, config.cache_dir) if config.cache else analyzer


__all__ = ["Analysis", "AnalysisError", "Analyzer", "BACKENDS", "CachedAnalyzer", "OfflineAnalyzer",
           "build_messages", "make_analyzer", "parse_analysis"]
