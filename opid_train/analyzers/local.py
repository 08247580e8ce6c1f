"""Analyzer backed by a local Hugging Face model (the policy itself or another model), same prompt.

All trajectories of a batch are analysed in one batched greedy generation; replies that do not
parse are re-asked together, with their parse error fed back, up to `parse_retries` times.
"""

from __future__ import annotations

import logging

from opid_train.algorithms.config import AnalyzerConfig
from opid_train.analyzers.base import (
    PROMPT_VERSION, Analysis, AnalysisError, Analyzer, build_messages, feedback_message, parse_analysis,
)
from opid_train.types import Trajectory

log = logging.getLogger(__name__)


def messages_to_text(messages: list[dict]) -> str:
    """A policy's `generate` takes one plain prompt (its chat template wraps it as a user turn)."""
    return "\n\n".join(m["content"] if m["role"] != "assistant" else f"Your previous reply:\n{m['content']}"
                       for m in messages)


class LocalAnalyzer(Analyzer):
    name = "local"

    def __init__(self, config: AnalyzerConfig, generator):
        """`generator`: anything with the policy's `generate(prompts, max_new_tokens=, greedy=)`."""
        self.config = config
        self.generator = generator
        self.failures = 0

    def identity(self) -> str:
        c = self.config
        return f"{self.name}|{c.model}|{PROMPT_VERSION}|K={c.max_step_skills}"

    def analyze(self, trajectory: Trajectory) -> Analysis | None:
        return self.analyze_many([trajectory])[0]

    def analyze_many(self, trajectories: list[Trajectory]) -> list[Analysis | None]:
        c = self.config
        results: list[Analysis | None] = [None] * len(trajectories)
        conversations = {i: build_messages(t, c.max_step_skills, c.gamma, c.max_chars_per_step)
                         for i, t in enumerate(trajectories)}
        for attempt in range(c.parse_retries + 1):
            if not conversations:
                break
            order = sorted(conversations)
            replies = self.generator.generate([messages_to_text(conversations[i]) for i in order],
                                              max_new_tokens=c.max_tokens, greedy=True)
            for i, reply in zip(order, replies):
                try:
                    results[i] = parse_analysis(reply.text, len(trajectories[i].steps), c.max_step_skills)
                    del conversations[i]
                except AnalysisError as error:
                    if attempt == c.parse_retries:
                        log.warning("local analysis of trajectory %d failed (%s); it gets no teacher signal",
                                    trajectories[i].traj_id, error)
                    conversations[i] = [*conversations[i], {"role": "assistant", "content": reply.text},
                                        feedback_message(str(error))]
        self.failures += len(conversations)
        return results
