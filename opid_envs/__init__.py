"""opid environments. Importing this package (or `wrappers`, or `opid_train`) registers every
environment id with Gymnasium; in a fresh interpreter `gym.make("opid_envs:OPID/ALFWorld-v0")`
imports it for you (Gymnasium's `module:Id` form).

Entry points are strings, so an environment's heavy dependencies load only when it is made.
A user environment registers the same way (see README, "Register your own environment").
"""

from gymnasium.envs.registration import register

from opid_envs.core import MissingDependencyError, Outcome, Task, TextEnv, TextSpace, resolve_env_id

register(id="OPID/ALFWorld-v0", entry_point="opid_envs.alfworld.env:ALFWorldEnv")
register(id="OPID/WebShop-v0", entry_point="opid_envs.webshop.env:WebShopEnv")
register(id="OPID/SearchQA-v0", entry_point="opid_envs.searchqa.env:SearchQAEnv")

OPID_ENV_IDS = ("OPID/ALFWorld-v0", "OPID/WebShop-v0", "OPID/SearchQA-v0")

__all__ = ["MissingDependencyError", "OPID_ENV_IDS", "Outcome", "Task", "TextEnv", "TextSpace", "resolve_env_id"]
