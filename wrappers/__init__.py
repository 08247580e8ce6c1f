"""The agent interface: environment-agnostic Gymnasium wrappers.

`make_agent_env(env_id)` builds the stack for one id (TextArena-style per-id configs):
    AgentPrompt(ParseResponse(gym.make(env_id)))
so `reset()` returns a prompt and `step(response)` takes the model's raw text.
"""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym

import opid_envs  # noqa: F401  (registers the OPID env ids, so `import wrappers` alone is enough)
from wrappers.parsing import ACTION_FORMAT, FORMATS, SEARCH_FORMAT, ParsedResponse, ParseResponse, TagFormat
from wrappers.prompt import AgentConfig, AgentPrompt, PromptContext, PromptTemplate
from wrappers.recording import RecordTrajectories, StepRecord, read_records
from wrappers.skills import ROUTING_MODES, inject_skills, route_skills
from wrappers.templates import COMPACT_TEMPLATES, REFERENCE_TEMPLATES, TEMPLATES, ReferenceTemplate, prompt_template

# The registered defaults are our compact templates; a training run picks the reference's or ours by
# its parity mode (opid_train.presets), and `make_agent_env(..., prompt=NAME)` takes any named one.
AGENT_CONFIGS: dict[str, AgentConfig] = {
    "OPID/ALFWorld-v0": AgentConfig(COMPACT_TEMPLATES["alfworld-compact"]),
    "OPID/WebShop-v0": AgentConfig(COMPACT_TEMPLATES["webshop-compact"]),
    "OPID/SearchQA-v0": AgentConfig(COMPACT_TEMPLATES["searchqa-compact"], SEARCH_FORMAT),
}


def register_agent_config(env_id: str, config: AgentConfig) -> None:
    """Give a user environment its own prompt template or answer format."""
    AGENT_CONFIGS[env_id] = config


def agent_config(env_id: str) -> AgentConfig:
    return AGENT_CONFIGS.get(env_id, AgentConfig())


def make_agent_env(env_id: str, record_to: str | None = None, prompt: str | None = None,
                   history_k: int | None = None, **env_kwargs) -> gym.Env:
    """gym.make(env_id) wrapped for an LLM agent: prompts out, raw responses in. `prompt` names a
    template of `wrappers.templates` (e.g. "alfworld-reference"); None: the env's registered one."""
    config = agent_config(env_id)
    if prompt is not None or history_k is not None:
        template = prompt_template(prompt, history_k) if prompt else replace(config.template, history_k=history_k)
        config = replace(config, template=template)
    env = AgentPrompt(ParseResponse(gym.make(env_id, **env_kwargs), config.response_format), config.template)
    return RecordTrajectories(env, record_to) if record_to else env


__all__ = [
    "ACTION_FORMAT", "AGENT_CONFIGS", "COMPACT_TEMPLATES", "FORMATS", "REFERENCE_TEMPLATES", "SEARCH_FORMAT",
    "TEMPLATES", "AgentConfig", "AgentPrompt", "ReferenceTemplate", "prompt_template",
    "ParseResponse", "ParsedResponse", "PromptContext", "PromptTemplate", "ROUTING_MODES",
    "RecordTrajectories", "StepRecord", "TagFormat", "agent_config", "inject_skills",
    "make_agent_env", "read_records", "register_agent_config", "route_skills",
]
