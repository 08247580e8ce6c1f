"""A toy contract-abiding text env: walk a corridor, take the key, open the door.

Used by the tests to exercise the contract, the wrappers, the recorder and the group env
without any optional dependency. Doubles as the README's "register your own env" example.
"""

from __future__ import annotations

from opid_envs.core import Outcome, Task, TextEnv


class KeyDoorEnv(TextEnv):
    splits = ("train", "test")

    def __init__(self, split=None, max_steps=12, length=4, render_mode=None):
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        self.length = length

    def num_tasks(self, split):
        return 5 if split == "train" else 3

    def _actions(self):
        acts = ["go left", "go right"]
        if self.pos == self.key_at and not self.has_key:
            acts.append("take key")
        if self.pos == self.length - 1:
            acts.append("open door")
        return acts

    def _start(self, split, task_id):
        self.pos, self.has_key = 0, False
        self.key_at = (task_id * 7 + (split == "test")) % self.length
        return Task(observation=self._look(), instruction="take the key and open the door",
                    task_type="key_door", admissible_actions=self._actions())

    def _look(self):
        key = " A key lies here." if self.pos == self.key_at and not self.has_key else ""
        door = " A locked door is here." if self.pos == self.length - 1 else ""
        return f"You are in cell {self.pos} of a corridor.{key}{door}"

    def _act(self, action):
        action = action.strip().lower()
        if action not in self._actions():
            return Outcome(f"Nothing happens: '{action}' is not possible here.", valid=False,
                           admissible_actions=self._actions())
        if action == "open door":
            won = self.has_key
            return Outcome("The door opens. You win." if won else "The door is locked.",
                           done=won, score=1.0 if won else 0.0, won=won, admissible_actions=self._actions())
        if action == "take key":
            self.has_key = True
        else:
            self.pos = max(0, min(self.length - 1, self.pos + (1 if action == "go right" else -1)))
        return Outcome(self._look(), admissible_actions=self._actions())
