"""The toy KeyDoor env with an expert, so warm start runs in the tests without ALFWorld."""

from __future__ import annotations

import gymnasium as gym

from tests.toy_env import KeyDoorEnv

EXPERT_ID = "OPIDTest/KeyDoorExpert-v0"


class KeyDoorExpertEnv(KeyDoorEnv):
    def expert_action(self) -> str:
        if not self.has_key:
            if self.pos == self.key_at:
                return "take key"
            return "go right" if self.key_at > self.pos else "go left"
        return "open door" if self.pos == self.length - 1 else "go right"


if EXPERT_ID not in gym.registry:
    gym.register(id=EXPERT_ID, entry_point="tests.train.toy_expert:KeyDoorExpertEnv")
