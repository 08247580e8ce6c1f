"""opid's training harness. Importing it registers the opid env ids, as `opid_envs` does."""

import opid_envs  # noqa: F401
