"""ALFWorld on the real TextWorld PDDL engine, with offline game suites built from ALFRED's scenes.

`alfworld` creates (and exports) `$ALFWORLD_DATA`, defaulting to ~/.cache/alfworld, when it is
first imported, so the user's own value is read here, before anything imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

from opid_envs.core import require

USER_ALFWORLD_DATA = os.environ.get("ALFWORLD_DATA")
_ALFWORLD_DEFAULT_DATA = str(Path.home() / ".cache" / "alfworld")


def opid_cache() -> Path:
    return Path(os.environ.get("OPID_CACHE") or Path.home() / ".cache" / "opid")


def import_alfworld():
    """Import alfworld (and textworld) or raise an error naming the 'alfworld' extra."""
    # Keep alfworld from creating ~/.cache/alfworld: point it into our cache unless the user chose.
    os.environ.setdefault("ALFWORLD_DATA", str(opid_cache() / "alfworld"))
    require("textworld", "alfworld")
    return require("alfworld", "alfworld")


def user_data_dir() -> str | None:
    """The official-data directory the user named with $ALFWORLD_DATA, if any.

    The defaults exported on import, alfworld's own and ours (`import_alfworld`, which child
    processes inherit), count only when they hold official games.
    """
    value = USER_ALFWORLD_DATA
    defaults = (_ALFWORLD_DEFAULT_DATA, os.path.abspath(opid_cache() / "alfworld"))
    if value and os.path.abspath(os.path.expanduser(value)) in defaults:
        if not (Path(value).expanduser() / "json_2.1.1").is_dir():
            return None
    return value or None
