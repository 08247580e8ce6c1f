"""Command-line tools: opid-train, opid-eval, and the main job (python -m opid_train.cli.main).

Their flags are built by tyro from the config dataclasses (`parse`): the comment beside a field is
its help, its default and its choices (a Literal) are shown, booleans are `--x/--no-x`, nested
fields are `--grpo.clip-eps`. Hyphens are the canonical spelling; the underscore spelling of
earlier versions (`--env_kwargs`, `--group_size`) and a boolean given a value (`--progress false`)
still work.

They share how errors reach a person: a bad option is one line naming it, its value and what is
allowed (exit status 2); any other failure is one line too (status 1). `--debug` or OPID_DEBUG=1
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from contextlib import contextmanager
from typing import Any, TypeVar

import tyro
import tyro._errors  # tyro's parse-error hook (private, stable within 1.0.x: pinned in pyproject)
from tyro.constructors import ConstructorRegistry, PrimitiveConstructorSpec

from opid_train.config import ConfigError, one_line

T = TypeVar("T")
TRUE_WORDS, FALSE_WORDS, NONE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off"), ("none", "null")


# -- how flag values become field values -------------------------------------------------------------
def _json_object(texts: list[str]) -> dict[str, Any]:
    try:
        value = json.loads(texts[0])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{texts[0]!r}: expected a JSON object ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{texts[0]!r}: expected a JSON object")
    return value


def _number(kind: type, name: str, optional: bool):
    def convert(texts: list[str]):
        if optional and texts[0].lower() in NONE_WORDS:
            return None
        try:
            return kind(texts[0])
        except ValueError:
            raise ValueError(f"{texts[0]!r}: expected {name}") from None
    return convert


REGISTRY = ConstructorRegistry()


@REGISTRY.primitive_rule
def _opid_types(info) -> PrimitiveConstructorSpec | None:
    """JSON for dicts (`--env-kwargs '{"level": "easy"}'`); lists as `a b` or `a,b`; numbers with
    errors that name the value."""
    if info.type_origin is dict:
        return PrimitiveConstructorSpec(nargs=1, metavar="JSON", instance_from_str=_json_object,
                                        is_instance=lambda x: isinstance(x, dict),
                                        str_from_instance=lambda d: [json.dumps(d)])
    if info.type_origin is list and typing.get_args(info.type) == (str,):
        return PrimitiveConstructorSpec(nargs="*", metavar="NAME,...",
                                        instance_from_str=lambda texts: [s.strip() for t in texts for s in t.split(",")
                                                                         if s.strip()],
                                        is_instance=lambda x: isinstance(x, list),
                                        str_from_instance=lambda items: [",".join(items)])
    if info.type == (str | None):
        return PrimitiveConstructorSpec(nargs=1, metavar="STR|None",
                                        instance_from_str=lambda t: None if t[0].lower() in NONE_WORDS else t[0],
                                        is_instance=lambda x: x is None or isinstance(x, str),
                                        str_from_instance=lambda x: [str(x)])
    for kind, name in ((int, "an integer"), (float, "a number")):
        optional = info.type == (kind | None)
        if info.type is kind or optional:
            return PrimitiveConstructorSpec(
                nargs=1, metavar=kind.__name__.upper() + ("|None" if optional else ""),
                instance_from_str=_number(kind, name + (" or none" if optional else ""), optional),
                is_instance=lambda x, kind=kind: type(x) is kind or (kind is float and type(x) is int) or (optional and x is None),
                str_from_instance=lambda x: [str(x)])
    return None


# -- what the user typed, in the canonical spelling --------------------------------------------------
def _flag_types(cls, prefix: str = "") -> dict[str, Any]:
    """{'--grpo.clip-eps': float, ...} for every leaf of a dataclass tree (a field marked
    `tyro.conf.arg(name="")` adds no prefix)."""
    out, hints = {}, typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        marks = getattr(hint, "__metadata__", ())
        hint = typing.get_args(hint)[0] if marks else hint
        if dataclasses.is_dataclass(hint):
            flat = any(getattr(m, "name", None) == "" for m in marks)
            out.update(_flag_types(hint, prefix if flat else f"{prefix}{f.name}."))
        else:
            out[f"--{prefix}{f.name}".replace("_", "-")] = hint
    return out


def _negated(flag: str) -> str:
    head, _, last = flag[2:].rpartition(".")
    return f"--{head + '.' if head else ''}no-{last}"


def canonical_argv(argv: list[str], cls) -> list[str]:
    """`argv` with the spellings tyro does not take rewritten: a boolean given a value
    (`--progress false` -> `--no-progress`) and an optional boolean (None: automatic) given as a
    bare flag (`--tensorboard` -> True, `--no-tensorboard` -> False)."""
    types_ = _flag_types(cls)
    optional_bools = {f for f, h in types_.items() if h == (bool | None) or h == typing.Optional[bool]}
    negations = {_negated(f): f for f in optional_bools}
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return out + argv[i:]
        name, eq, value = token.partition("=")
        name = name.replace("_", "-") if name.startswith("--") else name
        nxt = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
        takes_next = not eq and nxt is not None
        if types_.get(name) is bool and nxt is not None and nxt.lower() in TRUE_WORDS + FALSE_WORDS:
            out.append(name if nxt.lower() in TRUE_WORDS else _negated(name))
            i += 2 if takes_next else 1
        elif name in optional_bools:
            word = (nxt or "").lower()
            if word in TRUE_WORDS + FALSE_WORDS + NONE_WORDS + ("auto",):
                out += [name, "True" if word in TRUE_WORDS else "False" if word in FALSE_WORDS else "None"]
                i += 2 if takes_next else 1
            else:  # bare: the next token is another flag, or there is none
                out += [name, "True"]
                i += 1
        elif name in negations:
            out += [negations[name], "False"]
            i += 1
        else:
            out.append(name + eq + value if name.startswith("--") else token)
            i += 1
    return out


# -- parsing -----------------------------------------------------------------------------------------
def _flag_of(argument) -> str:
    return "/".join(argument.lowered.name_or_flags) or argument.lowered.metavar


def _one_line(event) -> None:
    """tyro's parse errors as one ConfigError line (tyro draws a box of several lines)."""
    E = tyro._errors
    if isinstance(event, E.InvalidChoice):
        raise ConfigError(f"{_flag_of(event.argument)} {event.value!r}: expected one of {', '.join(event.choices)}")
    if isinstance(event, E.InstantiationFailure):
        where = _flag_of(event.argument) if event.argument is not None else "option"
        sep = " " if event.message.startswith("'") else ": "  # our constructors start with the bad value
        raise ConfigError(f"{where}{sep}{one_line(Exception(event.message))}")
    if isinstance(event, E.UnrecognizedArgs):
        raise ConfigError(f"unrecognized arguments: {' '.join(event.tokens)}")
    if isinstance(event, E.MissingArgs):
        raise ConfigError(f"missing {', '.join(_flag_of(a.arg) for a in event.missing_arguments)}")
    if isinstance(event, E.BadValue):
        raise ConfigError(f"{_flag_of(event.argument)}: expected a value"
                          + (f", got {event.offending_value!r}" if event.offending_value else ""))


def parse(cls: type[T], argv: list[str] | None, prog: str, description: str, default: T | None = None) -> T:
    """An instance of the dataclass `cls` from the command line (flags over `default`); a bad flag
    is one line on stderr and exit status 2."""
    argv = canonical_argv(list(sys.argv[1:] if argv is None else argv), cls)
    # indented, every line break of the description is kept (tyro joins the lines of a paragraph)
    description = "\n".join("  " + line if line.strip() else "" for line in description.strip().splitlines())
    try:
        with tyro._errors.on_parse_error(_one_line):
            return tyro.cli(cls, args=argv, prog=prog, description=description, default=default, registry=REGISTRY)
    except ConfigError as exc:
        if "--debug" in argv or debugging():
            raise
        print(f"{prog}: error: {exc} (see --help)", file=sys.stderr)
        raise SystemExit(2) from None


def option_value(argv: list[str] | None, name: str) -> str | None:
    """The value of `--name VALUE` / `--name=VALUE` in `argv` (either spelling), read before
    parsing: the flags that choose the defaults of the others (--config, --preset)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    value = None
    for i, token in enumerate(argv):
        key, eq, rest = token.partition("=")
        if key.replace("_", "-") == f"--{name}":
            value = rest if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return value


# -- argparse tools (scripts) --------------------------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written; every option's help ends with its default."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the scripts, in the tools' style: defaults in --help, hyphenated flags (an
    underscore spelling is taken too), one-line usage errors with exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        args = [a.partition("=")[0].replace("_", "-") + "".join(a.partition("=")[1:]) if a.startswith("--") else a
                for a in args]
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def debugging(args: Any = None) -> bool:
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
