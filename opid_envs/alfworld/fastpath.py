"""Memoized text generation for textworld's PDDL engine: identical output, far less re-work.

Profiling a step of an ALFRED-sized game (~100 ms) shows that textworld spends it re-deriving the
command text of every applicable action, and for each derivation it
- re-parses the same grammar strings and query expressions with TatSu (~60 %),
- deep-copies derivation contexts, which drags the whole game state along (~30 %).
The parses are pure functions of their strings, so we cache them; the contexts' entities are
never mutated during a derivation, so symbols share them instead of copying them. A reset
re-translates the same PDDL problem with fast-downward, so the translation is cached too; and
textworld translates every problem twice, the second time optimized for its planner, which
only `planning()` blocks (walkthroughs) need: elsewhere the planner gets the plain translation.

`scripts/bench_alfworld.py` checks that observations and admissible commands are identical
to the unpatched engine on the same games and actions, and prints the speed-up.
"""

from __future__ import annotations

import copy
import functools
from contextlib import contextmanager

_installed = False
_planning = False
_game_caches: list = []  # the per-game caches (translations, game logic), for forget_games()
PARSE_CACHE = 8192  # distinct grammar strings and queries; a game adds only its task sentence
# Translated problems kept (~0.4 MB each): a GRPO group resets one game many times, and the main job
# plays each of its 400 evaluation games six times (two policies, sampled twice and greedy) minutes apart
TRANSLATION_CACHE = 512
LOGIC_CACHE = 16  # parsed (domain, grammar) pairs, shared by envs loading the same game


def install() -> None:
    """Patch textworld's PDDL text generation in this process (idempotent)."""
    global _installed
    if _installed:
        return
    import fast_downward
    from textworld.envs.pddl import logic as pddl_logic
    from textworld.envs.pddl import textgen
    from textworld.logic import Rule

    # 1. TatSu parses of grammar strings: parse once, convert to fresh symbols each time.
    parse_textgen = functools.lru_cache(maxsize=PARSE_CACHE)(
        lambda text, rule_name: textgen._PARSER.parse(text, rule_name=rule_name))
    original_convert = textgen._parse_and_convert

    def parse_and_convert(text, rule_name, trace=False, **kwargs):
        if trace or kwargs or not isinstance(text, str):
            return original_convert(text, rule_name=rule_name, trace=trace, **kwargs)
        return textgen._Converter().walk(parse_textgen(text, rule_name))

    textgen._parse_and_convert = parse_and_convert

    # 2. Conjunctive queries (conditions of grammar rules): parsed once per expression.
    original_query = Rule.parse_conjunctive_query.__func__
    cached_query = functools.lru_cache(maxsize=PARSE_CACHE)(lambda expr: original_query(Rule, expr))
    Rule.parse_conjunctive_query = classmethod(
        lambda cls, expr: cached_query(expr) if cls is Rule else original_query(cls, expr))

    # 3. Contexts: new dicts for what a derivation updates, shared entities for what it reads.
    def copy_context(context):
        return {
            "state": context["state"],
            "facts": context["facts"],
            "variables": dict(context["variables"]),
            "mapping": dict(context["mapping"]),
            "entity_infos": context["entity_infos"],
        }

    def symbol_deepcopy(self, memo):
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__ = {k: v if k == "context" else copy.deepcopy(v, memo) for k, v in self.__dict__.items()}
        return new

    textgen.copy_context = copy_context
    textgen.Symbol.__deepcopy__ = symbol_deepcopy

    # 4. fast-downward translation of a (domain, problem): the same on every reset of a game.
    translate = functools.lru_cache(maxsize=TRANSLATION_CACHE)(fast_downward.pddl2sas)

    def pddl2sas(domain, problem, verbose=False, optimize=False):
        return translate(domain, problem, verbose=verbose, optimize=optimize and _planning)

    fast_downward.pddl2sas = pddl2sas
    _game_caches.append(translate)

    # 5. Game logic (domain + grammar parse): shared by envs that load the same game.
    pddl_logic.GameLogic = _cached_logic(pddl_logic.GameLogic)
    _installed = True


def forget_games() -> None:
    """Drop cached translations and game logic (the benchmark times resets of new games)."""
    for cache in _game_caches:
        cache.cache_clear()


@contextmanager
def planning():
    """Engines loaded or reset inside get the planner's optimized translation (fast replans)."""
    global _planning
    saved, _planning = _planning, True
    try:
        yield
    finally:
        _planning = saved


def _cached_logic(game_logic_cls):
    @functools.lru_cache(maxsize=LOGIC_CACHE)
    def make(domain: str, grammar: str):
        return game_logic_cls(domain=domain, grammar=grammar)

    _game_caches.append(make)

    return lambda domain, grammar: make(domain, grammar)
