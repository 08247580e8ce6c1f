"""Policies behind one interface (`base.Policy`): generate, score, train."""

from opid_train.policy.base import Generation, Policy
from opid_train.policy.presets import load_policy

__all__ = ["Generation", "Policy", "load_policy"]
