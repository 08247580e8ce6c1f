"""verl's advantage step, computed by opid's shared algorithm core.

verl's trainer holds the update's step rows as a `DataProto`: right-padded `responses` and
`response_mask`, left-padded `prompts` (with `attention_mask`), the actor's `old_log_probs` (or the
sampler's `rollout_log_probs`), and per row the record the agent loop wrote (`records.py`). Rows
come in any order; the rows verl adds to divide the batch over GPUs are copies of the first row
tagged `is_padding` (response mask 0), and `step_records` drops their copied record. This module

    1. rebuilds the trajectories from the records and makes the local learner's `Batch` of them
       (`opid_train.learner.make_batch`, the very same function),
    2. runs the algorithm's `prepare` (GRPO, OPID or SDAR, `opid_train.algorithms`), whose OPID
       teacher term scores the skill-augmented prompts with `ctx.policy` (on verl: the actor),
    3. scatters the advantages (and any per-row extras, e.g. SDAR's teacher log-probs) back to
       verl's rows; rows without a record get advantage 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from opid_train.algorithms import Algorithm, PrepareContext
from opid_train.learner import make_batch
from opid_train.learning_signal import rollout_metrics
from opid_train.types import Batch
from opid_train.verl.records import trajectories_from_records

RECORD_KEY = "opid"  # non-tensor column of the records (the agent loop's extra_fields["opid"])


def step_records(extra_fields, tags) -> list[dict[str, Any] | None]:
    """Each row's opid record; None for verl's padding rows, whose extra_fields are the first row's copy."""
    return [None if tag.get("is_padding", False) else (extra or {}).get(RECORD_KEY)
            for extra, tag in zip(extra_fields, tags, strict=True)]


def sampling_logprobs(data) -> torch.Tensor:
    """The old policy's per-token log-probs: the actor's recomputation when verl made one, else the sampler's."""
    for key in ("old_log_probs", "rollout_log_probs"):
        if key in data.batch.keys():
            return data.batch[key].float()
    raise KeyError("the batch has neither old_log_probs nor rollout_log_probs: set "
                   "actor_rollout_ref.rollout.calculate_log_probs=true or let verl compute old_log_probs")


def opid_batch(data) -> tuple[Batch, list[int], list[int]]:
    """(the local learner's Batch of `data`'s recorded rows, the data row of each Batch row, the recorded rows)."""
    records = list(data.non_tensor_batch[RECORD_KEY])
    kept = [i for i, rec in enumerate(records) if rec is not None]
    if not kept:
        raise ValueError("no row of the batch carries an opid record: was it rolled out by the opid_env agent loop?")
    prompts = data.batch["prompts"]
    prompt_mask = data.batch["attention_mask"][:, : prompts.shape[1]]
    prompt_ids = [prompts[i][prompt_mask[i] > 0].tolist() for i in kept]
    idx = torch.tensor(kept, dtype=torch.long)
    trajectories, rows = trajectories_from_records([records[i] for i in kept], prompt_ids, data.batch["responses"][idx],
                                                   data.batch["response_mask"][idx], sampling_logprobs(data)[idx])
    batch = make_batch(trajectories)
    position = {row: r for r, row in enumerate(batch.rows)}
    data_row_of = [0] * len(batch)
    for k, row in enumerate(rows):
        data_row_of[position[row]] = kept[k]
    return batch, data_row_of, kept


def scatter(values: torch.Tensor, data_rows: list[int], n_rows: int, width: int | None = None) -> torch.Tensor:
    """Rows of `values` placed at `data_rows` of a zero tensor with `n_rows` rows (and `width` columns)."""
    shape = (n_rows,) if values.dim() == 1 else (n_rows, width)
    out = torch.zeros(shape, dtype=torch.float32)
    idx = torch.tensor(data_rows, dtype=torch.long)
    if values.dim() == 1:
        out[idx] = values.float()
    else:
        w = min(values.shape[1], width)
        out[idx, :w] = values[:, :w].float()
    return out


class Advantages(NamedTuple):
    advantages: torch.Tensor  # [R, T] on verl's rows
    metrics: dict[str, Any]  # the algorithm's and the rollout's, under the local backend's names
    extras: dict[str, torch.Tensor]  # the algorithm's per-row extras on verl's rows (SDAR's teacher log-probs)
    batch: Batch  # the local learner's Batch of the recorded rows (for the run's records)


@torch.no_grad()
def compute_advantages(data, algorithm: Algorithm, ctx: PrepareContext) -> Advantages:
    batch, data_rows, _ = opid_batch(data)
    metrics = dict(algorithm.prepare(batch, ctx))
    if batch.advantages is None:
        raise RuntimeError(f"{type(algorithm).__name__}.prepare did not set the advantages")
    metrics.update(rollout_metrics(batch.trajectories))
    n_rows, width = data.batch["response_mask"].shape
    advantages = scatter(batch.advantages, data_rows, n_rows, width) * data.batch["response_mask"].float()
    extras = {key: scatter(value, data_rows, n_rows, width) for key, value in batch.extras.items()}
    return Advantages(advantages, metrics, extras, batch)
