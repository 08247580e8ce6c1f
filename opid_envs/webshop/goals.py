"""Goals: what to buy. Synthetic ones are built per product and option combination, as WebShop does.

A synthetic goal is the product's base instruction, then " with k: v, and k2: v2" for one
combination of its options, then ", and price lower than X dollars", X drawn from the multiples of
10 just above the product's price. Goals are shuffled with a fixed seed; the "test" split is the
first 500, "train" the rest. (The indices are not the original WebShop's: its goal list depends on
Python's global random state at the time it was built.)
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

from opid_envs.webshop.catalog import CatalogError, Product, _read_json

NUM_TEST_GOALS = 500
NO_PRICE_BOUND = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Goal:
    asin: str  # the product the goal was built from
    instruction: str
    attributes: tuple[str, ...]
    options: tuple[tuple[str, str], ...]  # (option name, value); the name is "" for human goals
    price_upper: float
    # the target's fields that the type reward compares against
    title: str
    query: str
    category_path: str
    department: str

    @property
    def option_values(self) -> tuple[str, ...]:
        return tuple(v for _, v in self.options)


def _price_upper(price: float, rng: random.Random) -> float:
    """One of the 2nd-4th multiples of 10 above the price (below 1000), else no bound."""
    first = math.floor(price / 10) + 1  # the first multiple of 10 strictly above the price
    above = [10.0 * i for i in range(first, min(first + 4, 100))]
    return rng.choice(above[1:]) if len(above) >= 2 else NO_PRICE_BOUND


def _goal(product: Product, instruction: str, attributes, options, price_upper: float) -> Goal:
    return Goal(asin=product.asin, instruction=instruction, attributes=tuple(attributes), options=tuple(options),
                price_upper=price_upper, title=product.title, query=product.query,
                category_path=product.category_path, department=product.department)


def synthetic_goals(products: list[Product], seed: int = 0, per_product: int = 3) -> list[Goal]:
    """Up to `per_product` option combinations of every product that has a base instruction."""
    goals = []
    for product in products:
        if not product.instruction:
            continue
        rng = random.Random(f"goal:{seed}:{product.asin}")
        names = list(product.options)
        sizes = [len(product.options[n]) for n in names]
        total = math.prod(sizes)
        for combo_index in rng.sample(range(total), min(per_product, total)):
            options = []
            for name, size in zip(names, sizes):  # mixed-radix digits of the combination's index
                combo_index, digit = divmod(combo_index, size)
                options.append((name, product.options[name][digit]))
            price_upper = _price_upper(product.price, rng)
            text = product.instruction.rstrip(". ")
            if options:
                text += " with " + ", and ".join(f"{n}: {v}" for n, v in options)
            if price_upper < NO_PRICE_BOUND:
                text += f", and price lower than {price_upper:.2f} dollars"
            goals.append(_goal(product, text, product.instruction_attributes, options, price_upper))
    random.Random(f"shuffle:{seed}").shuffle(goals)
    return goals


def human_goals(products: list[Product], path: str | Path) -> list[Goal]:
    """Goals from WebShop's items_human_ins.json (asin -> list of written instructions)."""
    data = _read_json(path, "WebShop human instructions")
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a JSON object keyed by asin")
    by_asin = {p.asin: p for p in products}
    goals = []
    for asin, entries in data.items():
        product = by_asin.get(asin)
        if product is None or not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict) or not str(entry.get("instruction") or "").strip():
                continue
            text = str(entry["instruction"]).strip().rstrip(".")
            bound = re.search(r"price lower than ([\d.]+) dollars", text)
            price_upper = float(bound.group(1).rstrip(".")) if bound else NO_PRICE_BOUND
            options = [("", str(v).lower()) for v in entry.get("instruction_options") or []]
            goals.append(_goal(product, text, entry.get("instruction_attributes") or [], options, price_upper))
    random.Random("shuffle:human").shuffle(goals)
    return goals


def split_goals(goals: list[Goal]) -> dict[str, list[Goal]]:
    return {"test": goals[:NUM_TEST_GOALS], "train": goals[NUM_TEST_GOALS:]}
