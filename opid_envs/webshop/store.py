"""One catalog, its search index and its goals, built once per process and shared read-only.

Every env instance with the same `StoreConfig` gets the same `Store` object, so 64 envs cost
about the memory of one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from opid_envs.webshop.catalog import CatalogConfig, Product, load_catalog
from opid_envs.webshop.goals import Goal, human_goals, split_goals, synthetic_goals
from opid_envs.webshop.search import SearchEngine, make_search_engine


@dataclass(frozen=True)
class StoreConfig:
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    goal_source: str = "synthetic"  # or "human" (needs catalog.human_instructions_path)
    goals_per_product: int = 3
    search_backend: str = "bm25s"


@dataclass(frozen=True, eq=False)
class Store:
    config: StoreConfig
    products: tuple[Product, ...]
    by_asin: dict[str, Product]
    search_engine: SearchEngine
    goals: dict[str, tuple[Goal, ...]]


_STORES: dict[StoreConfig, Store] = {}
_LOCK = threading.Lock()


def build_store(config: StoreConfig) -> Store:
    if config.goal_source not in ("synthetic", "human"):
        raise ValueError(f"goal_source must be 'synthetic' or 'human', got {config.goal_source!r}")
    products = load_catalog(config.catalog)
    if config.goal_source == "human":
        if not config.catalog.human_instructions_path:
            raise ValueError("goal_source='human' needs human_instructions_path (items_human_ins.json)")
        goals = human_goals(products, config.catalog.human_instructions_path)
    else:
        goals = synthetic_goals(products, seed=config.catalog.seed, per_product=config.goals_per_product)
    return Store(
        config=config,
        products=tuple(products),
        by_asin={p.asin: p for p in products},
        search_engine=make_search_engine(products, config.search_backend),
        goals={split: tuple(gs) for split, gs in split_goals(goals).items()},
    )


def get_store(config: StoreConfig) -> Store:
    """The process-wide store for `config`, built on first use."""
    with _LOCK:
        if config not in _STORES:
            _STORES[config] = build_store(config)
        return _STORES[config]
