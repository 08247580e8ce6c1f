"""A `--backend verl` run folder laid out as the local backend's, so opid-eval, opid-view and the
curves read it the same way:

    config.yaml        the opid TrainConfig of the run, the keys verl owns filled from verl's config
    verl_config.yaml   the composed verl config (what verl ran)
    run_info.json      seed, argv, versions, start time, backend, task counts (each resume under `resumed`)
    tasks/             the task files verl's dataloader reads
    metrics.jsonl      one line per update, the local backend's names (`local_metrics`), verl's others kept
    skills.jsonl       the analyzer's skills per update (written by OPID's / SDAR's prepare, as locally)
    records.jsonl.gz   rollout records (`record.enabled`), from the advantage step's Batch
    checkpoints/global_step_N/actor/huggingface   verl's Hugging Face export (save_contents incl. hf_model),
                       which `opid-eval --checkpoint RUN_DIR` finds (`learner.verl_hf_folder`)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from opid_train.config import TrainConfig, from_dict, to_dict

# verl's actor metrics (after its trainer's "actor/" prefix) -> the local learner's names
LOCAL_NAMES = {"actor/loss": "loss", "actor/pg_loss": "pg_loss", "actor/pg_clipfrac": "pg_clipfrac",
               "actor/pg_clipfrac_lower": "pg_clipfrac_lower",
               "actor/kl_loss": "kl", "actor/grad_norm": "grad_norm"}
PREFIXES = {"actor/sdar/": "sdar/"}  # SDAR's loss metrics, logged by the actor workers


def local_metrics(verl_metrics: dict[str, Any]) -> dict[str, Any]:
    """One update's verl metrics under the local backend's names where both have the quantity
    (verl's others, e.g. perf/ and timing_s/, kept under their own names), plus rollout_seconds and
    update_seconds from verl's timings; numpy and torch values (verl computes many) as Python numbers."""
    out = {}
    for key, value in verl_metrics.items():
        name = LOCAL_NAMES.get(key, key)
        for prefix, local in PREFIXES.items():
            if key.startswith(prefix):
                name = local + key.removeprefix(prefix)
        out[name] = value.tolist() if hasattr(value, "tolist") else value
    if "timing_s/gen" in verl_metrics:
        out["rollout_seconds"] = verl_metrics["timing_s/gen"]
        if "timing_s/step" in verl_metrics:
            out["update_seconds"] = verl_metrics["timing_s/step"] - verl_metrics["timing_s/gen"]
    return out


def get_path(cfg, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = value[part]
    return value


def run_config(cfg, train: TrainConfig) -> TrainConfig:
    """`train` with the keys verl owns (lr, group size, updates, KL, ...) set to what verl runs, so the
    run's config.yaml tells the truth about them."""
    from omegaconf import OmegaConf

    from opid_train.verl.config import VERL_OWNS

    resolved = OmegaConf.to_container(cfg, resolve=True)
    data = to_dict(train)
    for key, path in VERL_OWNS.items():
        if key == "init":
            continue  # the same path as `policy`; a verl run starts from it
        value = get_path(resolved, path)
        if value is None:  # unset in verl, e.g. micro-batch rows when it splits by tokens (verl_config.yaml has how)
            continue
        section, _, name = key.rpartition(".")
        target = data[section] if section else data
        target[name] = value
    data["minibatch_size"] *= data["group_size"]  # verl counts prompts (x rollout.n), the local learner rows
    return dataclasses.replace(from_dict(TrainConfig, data), init=None)
