"""Command-line tools: opid-train, opid-eval, and the main job (python -m opid_train.cli.main).

They share how errors reach a person: a bad option is one line naming it, its value and what is
allowed (exit status 2); any other failure is one line too (status 1). `--debug` or OPID_DEBUG=1
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager

from opid_train.config import ConfigError, one_line


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a --debug flag and one-line usage errors (no usage block), exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show tracebacks of errors (also OPID_DEBUG=1)")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def debugging(args: argparse.Namespace | None = None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("OPID_DEBUG", "").lower() in ("1", "true", "yes")


@contextmanager
def reported_errors(prog: str, debug: bool = False):
    """Turn an error of the body into one line on stderr and an exit status (2: bad option, 1: other)."""
    try:
        yield
    except ConfigError as exc:
        if debug:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:  # noqa: BLE001  (any failure: one line; --debug for the traceback)
        if debug:
            raise
        print(f"{prog}: error: {type(exc).__name__}: {one_line(exc)} (--debug or OPID_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        raise SystemExit(1) from None
