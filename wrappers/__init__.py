"""The agent interface: environment-agnostic Gymnasium wrappers.

`make_agent_env(env_id)` builds the stack for one id (TextArena-style per-id configs):
    AgentPrompt(ParseResponse(gym.make(env_id)))
so `reset()` returns a prompt and `step(response)` takes the model's raw text.
"""

from __future__ import annotations

import gymnasium as gym

import opid_envs  # noqa: F401  (registers the OPID env ids, so `import wrappers` alone is enough)
from wrappers.parsing import ACTION_FORMAT, FORMATS, SEARCH_FORMAT, ParsedResponse, ParseResponse, TagFormat
from wrappers.prompt import AgentConfig, AgentPrompt, PromptContext, PromptTemplate
from wrappers.recording import RecordTrajectories, StepRecord, read_records
from wrappers.skills import ROUTING_MODES, inject_skills, route_skills

AGENT_CONFIGS: dict[str, AgentConfig] = {
    "OPID/ALFWorld-v0": AgentConfig(
        PromptTemplate(history_k=2, intro="You are an expert agent operating in the ALFRED embodied household."),
    ),
    "OPID/WebShop-v0": AgentConfig(
        PromptTemplate(history_k=2, intro="You are an expert agent shopping in an online store."),
    ),
    "OPID/SearchQA-v0": AgentConfig(
        PromptTemplate(
            history_k=4,
            intro="Answer the question. You may search a knowledge base.",
            task_line="Question: {task}",
            history_line="Information: {observation}\nYou: {action}",
            current_line="Latest information: {observation}",
            instruction=SEARCH_FORMAT.instruction,
        ),
        SEARCH_FORMAT,
    ),
}


def register_agent_config(env_id: str, config: AgentConfig) -> None:
    """Give a user environment its own prompt template or answer format."""
    AGENT_CONFIGS[env_id] = config


def agent_config(env_id: str) -> AgentConfig:
    return AGENT_CONFIGS.get(env_id, AgentConfig())


def make_agent_env(env_id: str, record_to: str | None = None, **env_kwargs) -> gym.Env:
    """gym.make(env_id) wrapped for an LLM agent: prompts out, raw responses in."""
    config = agent_config(env_id)
    env = AgentPrompt(ParseResponse(gym.make(env_id, **env_kwargs), config.response_format), config.template)
    return RecordTrajectories(env, record_to) if record_to else env


__all__ = [
    "ACTION_FORMAT", "AGENT_CONFIGS", "FORMATS", "SEARCH_FORMAT", "AgentConfig", "AgentPrompt",
    "ParseResponse", "ParsedResponse", "PromptContext", "PromptTemplate", "ROUTING_MODES",
    "RecordTrajectories", "StepRecord", "TagFormat", "agent_config", "inject_skills",
    "make_agent_env", "read_records", "register_agent_config", "route_skills",
]
