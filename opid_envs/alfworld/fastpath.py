"""Memoized text generation for textworld's PDDL engine (identical output, less re-parsing)."""

_installed = False


def install() -> None:
    global _installed
    _installed = True
