"""Analyzer backed by an OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, llama.cpp server...).

One request per trajectory, `concurrency` in flight. Transient API errors (connection, timeout,
429, 5xx) are retried `max_retries` times with exponential backoff; a reply that does not parse is
re-asked `parse_retries` times with the parse error fed back. Anything else gives `None`: that
trajectory gets no teacher signal and training goes on. The API key is read from the environment
variable named in the config and never logged.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from opid_envs.core import require
from opid_train.algorithms.config import AnalyzerConfig
from opid_train.analyzers.base import (
    PROMPT_VERSION, Analysis, AnalysisError, Analyzer, build_messages, feedback_message, parse_analysis,
)
from opid_train.types import Trajectory

log = logging.getLogger(__name__)


class OpenAIAnalyzer(Analyzer):
    name = "openai"

    def __init__(self, config: AnalyzerConfig):
        openai = require("openai", "openai")
        if not config.model:
            raise ValueError("the openai analyzer needs a model name (--analyzer.model)")
        self.config = config
        self._openai = openai
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            log.warning("$%s is not set; sending requests without an API key", config.api_key_env)
        # the client's own retries are off: the loop below owns retries and their backoff
        self.client = openai.OpenAI(base_url=config.base_url, api_key=api_key or "EMPTY",
                                    timeout=config.timeout_s, max_retries=0)
        self.failures = 0

    def identity(self) -> str:
        c = self.config
        return f"{self.name}|{c.base_url}|{c.model}|{PROMPT_VERSION}|K={c.max_step_skills}|T={c.temperature}"

    def _transient(self, error: Exception) -> bool:
        o = self._openai
        if isinstance(error, (o.APIConnectionError, o.APITimeoutError, o.RateLimitError, o.InternalServerError)):
            return True
        return isinstance(error, o.APIStatusError) and error.status_code >= 500

    def _complete(self, messages: list[dict]) -> str:
        """One chat completion, retried with exponential backoff on transient errors."""
        c = self.config
        for attempt in range(c.max_retries + 1):
            try:
                reply = self.client.chat.completions.create(
                    model=c.model, messages=messages, temperature=c.temperature, max_tokens=c.max_tokens)
                return reply.choices[0].message.content or ""
            except self._openai.OpenAIError as error:
                if not self._transient(error) or attempt == c.max_retries:
                    raise
                wait = min(c.backoff_s * 2**attempt, c.backoff_max_s)
                log.info("analyzer request failed (%s); retry %d/%d in %.2fs",
                         type(error).__name__, attempt + 1, c.max_retries, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def analyze(self, trajectory: Trajectory) -> Analysis | None:
        c = self.config
        messages = build_messages(trajectory, c.max_step_skills, c.gamma, c.max_chars_per_step)
        try:
            for attempt in range(c.parse_retries + 1):
                text = self._complete(messages)
                try:
                    return parse_analysis(text, len(trajectory.steps), c.max_step_skills)
                except AnalysisError as error:
                    if attempt == c.parse_retries:
                        raise
                    messages = [*messages, {"role": "assistant", "content": text}, feedback_message(str(error))]
        except (self._openai.OpenAIError, AnalysisError) as error:
            self.failures += 1
            log.warning("analysis of trajectory %d failed (%s: %s); it gets no teacher signal",
                        trajectory.traj_id, type(error).__name__, error)
        return None

    def analyze_many(self, trajectories: list[Trajectory]) -> list[Analysis | None]:
        if len(trajectories) <= 1 or self.config.concurrency <= 1:
            return [self.analyze(t) for t in trajectories]
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(trajectories))) as pool:
            return list(pool.map(self.analyze, trajectories))
