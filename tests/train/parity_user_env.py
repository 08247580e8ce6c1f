"""A user module: importing it registers an env id and its own prompt (for the presets test)."""

import gymnasium as gym

from wrappers import AgentConfig, PromptTemplate, register_agent_config

USER_ID = "ParityTest/KeyDoor-v0"
if USER_ID not in gym.registry:
    gym.register(id=USER_ID, entry_point="tests.toy_env:KeyDoorEnv")
register_agent_config(USER_ID, AgentConfig(PromptTemplate(history_k=7, intro="A user's prompt.")))
