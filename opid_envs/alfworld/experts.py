"""Demonstrations: ALFWorld's handcoded expert, patched, fed lazily from an episode's history.

The handcoded expert searches like a person (it opens receptacles, remembers what it saw), which
makes it a better teacher than the planner, which knows where everything is. Upstream (alfworld
0.4.x) it never registers a placement: its tracker looks for "put" while the grammar's command is
"move X to Y" (PR #114, open), so pick_two fails. We translate the command for its tracker only.
Its random choices come from a per-episode `random.Random`, so demonstrations are reproducible.
"""

from __future__ import annotations

import random
from typing import Any

FALLBACK_ACTION = "look"  # what upstream's AlfredExpert proposes when the expert has nothing valid


def tracked_command(command: str) -> str:
    """The spelling the expert's state tracker understands: 'move X to Y' -> 'put X to Y'."""
    return "put" + command[4:] if command.startswith("move ") else command


class HandcodedExpert:
    """alfworld's `HandCodedTWAgent` for one episode, replayed over the steps it has not seen."""

    def __init__(self, gamefile: str, seed: int = 0, max_steps: int = 200):
        from alfworld.agents.expert import handcoded_expert
        from alfworld.agents.expert.handcoded_expert_tw import HandCodedTWAgent

        self._module = handcoded_expert
        self._errors = (handcoded_expert.HandCodedAgentTimeout, handcoded_expert.HandCodedAgentFailed)
        self.rng = random.Random(seed)
        self.agent = HandCodedTWAgent(max_steps=max_steps)
        self.agent.reset(gamefile)  # reads the task parameters from the game's traj_data.json
        self.task_type = self.agent.task_params["task_type"]
        self.seen = 0  # history entries already fed to the expert
        self.next_action = FALLBACK_ACTION
        self.failed = False

    def catch_up(self, engine: Any, history: list[tuple[Any, str, str]]) -> str:
        """Feed the steps since the last call and return the next action for the last state."""
        saved, self._module.random = self._module.random, self.rng
        try:
            while self.seen < len(history):
                state, command, feedback = history[self.seen]
                if self.seen == 0:
                    self.agent.observe(feedback)
                if not self.failed:
                    self.next_action = self._act(engine, state, command, feedback)
                self.seen += 1
        finally:
            self._module.random = saved
        return self.next_action

    def _act(self, engine, state, command: str, feedback: str) -> str:
        admissible = [c for c in state["admissible_commands"] if c != "help"]
        game_state = {
            "feedback": feedback,
            "admissible_commands": admissible,
            "facts": [engine.tw._get_human_readable_fact(f) for f in state["_facts"]],
        }
        policy = self.agent.policy
        try:
            action = policy.act(game_state, tracked_command(command))
        except self._errors:
            self.failed = True
            return FALLBACK_ACTION
        # HandCodedAgent.act's loop breaker, compared against the command actually played.
        if action == command or (command == "look" and action not in admissible):
            action = self.rng.choice(admissible)
        return action if action in admissible else FALLBACK_ACTION

