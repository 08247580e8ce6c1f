"""Analyzer backed by an OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, llama.cpp server...).

One request per trajectory, `concurrency` in flight. Transient errors (connection, timeout, 429,
5xx, and a 200 whose body is no chat completion: invalid JSON, an HTML page, no `choices`) are
retried `max_retries` times with exponential backoff, or after the server's `Retry-After` (capped
at `backoff_max_s`); an answer that does not parse as an analysis is re-asked `parse_retries` times
with the parse error fed back. Anything else gives `None`, counted in `failures`: that trajectory
gets no teacher signal and training goes on. The body is read and checked here, not by the client
library, so no reply of any shape escapes as an exception. The API key is read from the
environment variable named in the config and never logged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime

from opid_envs.core import clean_text, require
from opid_train.algorithms.config import AnalyzerConfig
from opid_train.analyzers.base import (
    PROMPT_VERSION, Analysis, AnalysisError, Analyzer, build_messages, feedback_message, parse_analysis,
)
from opid_train.types import Trajectory

log = logging.getLogger(__name__)

MAX_REPLY_CHARS = 1 << 20  # an answer longer than this is no analysis (max_tokens is ~1k tokens)


class ReplyError(Exception):
    """A 200 response whose body is not a chat completion (a proxy's error page, a truncated body...)."""


def reply_content(body: str) -> str:
    """The assistant's text from a chat-completion body; ReplyError, naming what is wrong, otherwise."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ReplyError(f"the body is not JSON: {_preview(body)}") from None
    if not isinstance(data, dict):
        raise ReplyError(f"the body is a JSON {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ReplyError(f"no choices in the reply (choices={_preview(json.dumps(choices))})")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if content is None:
        return ""  # e.g. a refusal or a cut-off answer: the parser says "empty" and it is re-asked
    if not isinstance(content, str):
        raise ReplyError(f"message.content is a {type(content).__name__}, not text")
    if len(content) > MAX_REPLY_CHARS:
        raise ReplyError(f"the answer is {len(content)} characters long (limit {MAX_REPLY_CHARS})")
    return clean_text(content)


def retry_after_s(headers) -> float | None:
    """Seconds a 429/503 asks to wait (`retry-after-ms`, `retry-after` in seconds or as a date), or None."""
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            seconds = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after"):
            value = headers["retry-after"]
            try:
                seconds = float(value)
            except ValueError:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
        else:
            return None
    except (TypeError, ValueError, OverflowError):
        return None  # unreadable: fall back to our own backoff
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _preview(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


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
        if isinstance(error, (ReplyError, o.APIConnectionError, o.APITimeoutError, o.RateLimitError,
                              o.InternalServerError)):
            return True
        return isinstance(error, o.APIStatusError) and error.status_code >= 500

    def _wait_s(self, error: Exception, attempt: int) -> float:
        """The server's Retry-After when it gives one, else exponential backoff; never over backoff_max_s."""
        c = self.config
        asked = retry_after_s(getattr(getattr(error, "response", None), "headers", None))
        return min(c.backoff_s * 2**attempt if asked is None else asked, c.backoff_max_s)

    def _complete(self, messages: list[dict]) -> str:
        """One chat completion's text, retried on transient errors."""
        c = self.config
        for attempt in range(c.max_retries + 1):
            try:
                raw = self.client.chat.completions.with_raw_response.create(
                    model=c.model, messages=messages, temperature=c.temperature, max_tokens=c.max_tokens)
                return reply_content(raw.content.decode("utf-8", "replace"))
            except (self._openai.OpenAIError, ReplyError) as error:
                if not self._transient(error) or attempt == c.max_retries:
                    raise
                wait = self._wait_s(error, attempt)
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
        except (self._openai.OpenAIError, ReplyError, AnalysisError) as error:
            self.failures += 1
            log.warning("analysis of trajectory %d failed (%s: %s); it gets no teacher signal",
                        trajectory.traj_id, type(error).__name__, error)
        return None

    def analyze_many(self, trajectories: list[Trajectory]) -> list[Analysis | None]:
        if len(trajectories) <= 1 or self.config.concurrency <= 1:
            return [self.analyze(t) for t in trajectories]
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(trajectories))) as pool:
            return list(pool.map(self.analyze, trajectories))
