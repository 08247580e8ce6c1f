"""Algorithm registry: name -> "module:Class", imported only when asked for.

Every algorithm class is constructed as `Cls(train_config)` with the whole TrainConfig and picks
its own section (`config.grpo`, `config.opid`, ...); see `base.Algorithm`.
"""

from __future__ import annotations

import importlib

from opid_train.algorithms.base import Algorithm, PrepareContext

ALGORITHMS: dict[str, str] = {
    "grpo": "opid_train.algorithms.grpo:GRPO",
    "opid": "opid_train.algorithms.opid:OPID",
    "sdar": "opid_train.algorithms.sdar:SDAR",
}


def algorithm_class(name: str) -> type[Algorithm]:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {sorted(ALGORITHMS)}")
    module, cls = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_algorithm(name: str, train_config) -> Algorithm:
    return algorithm_class(name)(train_config)


__all__ = ["ALGORITHMS", "Algorithm", "PrepareContext", "algorithm_class", "make_algorithm"]
