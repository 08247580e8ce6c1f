"""From a model's response to an environment action.

One documented rule for bad responses: a response that does not hold exactly one well-formed
answer block is a *format-invalid* step. The wrapper then steps the environment with the empty
action "" (a no-op under the contract, `action_valid=False`, the step still counts towards the
limit) and puts the parser's reason in front of the observation, so the agent sees what went
wrong. It never raises, and never passes a guess to the environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from opid_envs.core import clean_text, tagged_blocks

MAX_RESPONSE_CHARS = 65_536  # parsing is linear in the length (`tagged_blocks`) and bounded by this
_ANY_TAG = re.compile(r"</?[A-Za-z_]+>")


@dataclass(frozen=True)
class ParsedResponse:
    action: str | None
    error: str | None = None
    think: str | None = None

    @property
    def valid(self) -> bool:
        return self.action is not None


@dataclass(frozen=True)
class TagFormat:
    """Answers wrapped in one of `tags`, e.g. `<think>...</think><action>go to desk 1</action>`.

    With `keep_tag` the action keeps its tag (`<search> q </search>`), for envs whose actions
    are the tagged blocks themselves (Search-R1's protocol).
    """

    name: str
    tags: tuple[str, ...]
    instruction: str
    keep_tag: bool = False

    def parse(self, response: Any) -> ParsedResponse:
        if isinstance(response, bytes):
            return ParsedResponse(None, "the response is bytes, not text")
        if not isinstance(response, str):
            return ParsedResponse(None, f"the response must be text, got {type(response).__name__}")
        if len(response) > MAX_RESPONSE_CHARS:
            return ParsedResponse(None, f"the response is too long ({len(response)} characters)")
        think = _single_block(response, "think")
        blocks, opens, closes = tagged_blocks(response, self.tags)
        for tag in self.tags:
            if opens[tag.lower()] != closes[tag.lower()]:
                return ParsedResponse(None, f"unbalanced <{tag}> tags", think)
        wanted = " or ".join(f"<{t}>...</{t}>" for t in self.tags)
        if not blocks:
            return ParsedResponse(None, f"no {wanted} block found", think)
        if len(blocks) > 1:
            return ParsedResponse(None, f"expected exactly one {wanted} block, found {len(blocks)}", think)
        tag, content = blocks[0]
        if _ANY_TAG.search(content):
            return ParsedResponse(None, f"tags nested inside <{tag}>", think)
        content = " ".join(clean_text(content).split())  # a lone surrogate would poison the env and the prompt
        if not content:
            return ParsedResponse(None, f"the <{tag}> block is empty", think)
        return ParsedResponse(f"<{tag}> {content} </{tag}>" if self.keep_tag else content, None, think)


def _single_block(text: str, tag: str) -> str | None:
    found = tagged_blocks(text, (tag,))[0]
    return clean_text(found[0][1].strip()) if len(found) == 1 else None


ACTION_FORMAT = TagFormat(
    name="action",
    tags=("action",),
    instruction="Think briefly inside <think> </think>, then give exactly one action inside "
    "<action> </action>, for example <action>look</action>.",
)
SEARCH_FORMAT = TagFormat(
    name="search",
    tags=("search", "answer"),
    instruction="Reason inside <think> </think>. To look something up write <search> query </search>; "
    "when you know the answer write <answer> answer </answer>. Exactly one search or answer per turn.",
    keep_tag=True,
)
FORMATS = {f.name: f for f in (ACTION_FORMAT, SEARCH_FORMAT)}


class ParseResponse(gym.Wrapper):
    """Takes the model's raw response as the action, extracts the env action from it.

    Adds `info["format_valid"]`, `info["format_error"]` and `info["action"]` (the parsed action,
    or None).
    """

    def __init__(self, env: gym.Env, response_format: TagFormat | str = ACTION_FORMAT):
        super().__init__(env)
        self.response_format = FORMATS[response_format] if isinstance(response_format, str) else response_format

    def step(self, response: Any):
        parsed = self.response_format.parse(response)
        obs, reward, terminated, truncated, info = self.env.step(parsed.action if parsed.valid else "")
        info = dict(info, format_valid=parsed.valid, format_error=parsed.error, action=parsed.action)
        if not parsed.valid:
            obs = f"Invalid response: {parsed.error}. {self.response_format.instruction}\n{obs}"
        return obs, reward, terminated, truncated, info
