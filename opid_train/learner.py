"""The learner: trajectories -> token batch -> PPO update (with the algorithm's advantages, the KL
to a frozen reference, gradient accumulation and clipping) -> atomic checkpoints.

All randomness of an update comes from (seed, update), so a run resumed from the checkpoint of
update k takes exactly the step an uninterrupted run takes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from opid_train.algorithms.base import Algorithm, PrepareContext
from opid_train.algorithms.grpo import low_var_kl, masked_mean, ppo_clip_loss
from opid_train.policy.hf import HFPolicy
from opid_train.rollout import derive_seed
from opid_train.types import Batch, Trajectory


def make_batch(trajectories: list[Trajectory]) -> Batch:
    """One row per step, responses right-padded to the longest one."""
    rows = [(i, t) for i, traj in enumerate(trajectories) for t in range(len(traj.steps))]
    steps = [trajectories[i].steps[t] for i, t in rows]
    width = max(1, max((len(s.response_ids) for s in steps), default=1))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width))
    old = torch.zeros((len(rows), width))
    for r, s in enumerate(steps):
        n = len(s.response_ids)
        ids[r, :n] = torch.tensor(s.response_ids, dtype=torch.long)
        mask[r, :n] = 1.0
        old[r, :n] = torch.tensor(s.old_logprobs, dtype=torch.float32)
    return Batch(
        trajectories=trajectories, rows=rows, prompt_ids=[s.prompt_ids for s in steps],
        response_ids=ids, response_mask=mask, old_logp=old,
        group_ids=torch.tensor([trajectories[i].group_id for i, _ in rows], dtype=torch.long),
        format_valid=torch.tensor([s.format_valid for s in steps], dtype=torch.bool),
    )


def token_weights(batch: Batch, loss_agg: str) -> torch.Tensor:
    """[R, T] weights of the token losses: the mask (token-mean) or mask / tokens of the row's trajectory."""
    if loss_agg == "token-mean":
        return batch.response_mask.clone()
    if loss_agg != "traj-mean":
        raise ValueError(f"unknown loss_agg {loss_agg!r}; use 'token-mean' or 'traj-mean'")
    traj = torch.tensor([t for t, _ in batch.rows], dtype=torch.long)
    tokens = torch.zeros(len(batch.trajectories)).index_add_(0, traj, batch.response_mask.sum(1))
    return batch.response_mask / tokens[traj].clamp(min=1)[:, None]


def chunks(index: torch.Tensor, size: int):
    for start in range(0, len(index), size):
        yield index[start:start + size]


@torch.no_grad()
def score_in_chunks(policy, batch: Batch, size: int) -> torch.Tensor:
    parts = []
    for idx in chunks(torch.arange(len(batch)), size):
        mb = batch.select(idx)
        parts.append(policy.score(mb.prompt_ids, mb.response_ids, mb.response_mask).cpu())
    return torch.cat(parts)


KEEP_CHECKPOINTS = 2  # checkpoints a run keeps: the newest and the one before it, to fall back to


class Learner:
    def __init__(self, policy: HFPolicy, algorithm: Algorithm, config, reference: HFPolicy | None = None):
        self.policy, self.algorithm, self.cfg = policy, algorithm, config
        self.reference = reference
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def update(self, batch: Batch, ctx: PrepareContext) -> dict[str, Any]:
        cfg = self.cfg
        with torch.no_grad():
            metrics = dict(self.algorithm.prepare(batch, ctx))
            if cfg.grpo.kl_coef > 0 and self.reference is not None:
                batch.ref_logp = score_in_chunks(self.reference, batch, cfg.micro_batch_size)
        if batch.advantages is None:
            raise RuntimeError(f"{type(self.algorithm).__name__}.prepare did not set batch.advantages")
        batch.extras["token_weight"] = token_weights(batch, cfg.grpo.loss_agg)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, ctx.update, 77))
        sums: dict[str, float] = {}
        n_minibatches = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(batch), generator=gen)
            for mb_index in chunks(order, cfg.minibatch_size):
                total_weight = batch.extras["token_weight"][mb_index].sum().clamp(min=1e-8)
                self.optimizer.zero_grad(set_to_none=True)
                rows = self.loss_rows(batch, mb_index)
                for micro_index in chunks(rows, cfg.micro_batch_size):
                    micro = batch.select(micro_index)
                    dev = self.policy.device
                    adv, old = micro.advantages.to(dev), micro.old_logp.to(dev)
                    weight_tok = micro.extras["token_weight"].to(dev)
                    logp = self.policy.logprobs(micro.prompt_ids, micro.response_ids, micro.response_mask)
                    pg_loss, pg_metrics = ppo_clip_loss(logp, old, adv, weight_tok, cfg.grpo.clip_eps,
                                                        cfg.grpo.clip_ratio_c)
                    loss = pg_loss
                    stats = {"pg_loss": pg_loss.item(), **pg_metrics}
                    if micro.ref_logp is not None:
                        kl = masked_mean(low_var_kl(logp, micro.ref_logp.to(dev)), weight_tok)
                        loss = loss + cfg.grpo.kl_coef * kl
                        stats["kl"] = kl.item()
                    extra, extra_metrics = self.algorithm.extra_loss(micro, logp)
                    if extra is not None:
                        loss = loss + extra
                        stats.update(extra_metrics)
                    weight = weight_tok.sum() / total_weight.to(dev)  # this micro-batch's share of the minibatch
                    (loss * weight).backward()
                    stats["loss"] = loss.item()
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * float(weight)
                if len(rows) == 0:  # no row carried loss: step on a zero gradient, as if they had run
                    for p in self.policy.parameters():
                        p.grad = torch.zeros_like(p)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm)
                n_minibatches += 1
        metrics.update({k: v / max(1, n_minibatches) for k, v in sums.items()})
        return self.algorithm.finish_metrics(metrics)

    def loss_rows(self, batch: Batch, index: torch.Tensor) -> torch.Tensor:
        """The rows of a minibatch that carry loss, longest prompt first so micro-batches pad little.

        Without a KL term or an algorithm's extra loss, a row whose advantage is zero everywhere (a
        group with one outcome) has exactly zero loss and gradient, so it is not run at all; the
        minibatch's normalisation still counts it, so the step is the same, only cheaper.
        """
        if batch.ref_logp is None and not self.algorithm.has_extra_loss:
            index = index[(batch.advantages[index] != 0).any(dim=1)]
        lengths = torch.tensor([len(batch.prompt_ids[int(i)]) for i in index], dtype=torch.long)
        return index[torch.argsort(lengths, descending=True, stable=True)]

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, run_dir: Path, update: int, keep: int = KEEP_CHECKPOINTS) -> Path:
        """Write checkpoints/update_XXXXX atomically (temp folder + rename), point `latest` at it,
        then drop the checkpoints before it beyond `keep`. Later ones (left by a run that resumed
        from an earlier checkpoint) are not touched: this run replaces them when it gets there."""
        root = Path(run_dir) / "checkpoints"
        final = root / f"update_{update:05d}"
        for stale in root.glob(".tmp_update_*"):  # this save's folder, or one of a save that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp_update_{update:05d}"
        self.policy.save(tmp / "model")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"update": update}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        latest_tmp = root / ".latest.tmp"
        latest_tmp.write_text(final.name)
        os.replace(latest_tmp, root / "latest")
        earlier = [folder for folder in checkpoint_folders(run_dir) if folder_update(folder) < update]
        for old in earlier[keep - 1:]:
            shutil.rmtree(old, ignore_errors=True)
        return final


def folder_update(folder: Path) -> int:
    return int(folder.name.removeprefix("update_"))


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders, newest first."""
    root = Path(run_dir) / "checkpoints"
    found = [p for p in root.glob("update_*") if p.is_dir() and p.name.removeprefix("update_").isdigit()]
    return sorted(found, key=folder_update, reverse=True)


def checkpoint_update(checkpoint: Path) -> int:
    return int(json.loads((Path(checkpoint) / "state.json").read_text())["update"])


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint folder that looks whole (its state, model config and weight headers
    read, an optimizer file present); None when there is none."""
    from opid_train.policy.presets import check_model_folder

    for folder in checkpoint_folders(run_dir):
        try:
            checkpoint_update(folder)
            check_model_folder(folder / "model")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (folder / "optimizer.pt").is_file():
            return folder
    return None


@dataclass
class Resumed:
    folder: Path
    update: int
    policy: Any
    optimizer_state: dict


def load_newest_checkpoint(run_dir: Path, load_policy: Callable[[Path], Any], log=print) -> Resumed | None:
    """The newest checkpoint that loads (its update, model and optimizer state), saying which and
    why. None when the run has no checkpoint. When it has some and none loads this raises instead:
    starting over would replace a run whose files may only need repairing."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if pointer.is_file():
        named = pointer.read_text(errors="replace").strip()
        if not (root / named / "state.json").is_file():
            log(f"{pointer} names {named!r}, which is not a checkpoint: looking for the newest checkpoint that loads")
    failed = []
    for folder in checkpoint_folders(run_dir):
        try:
            update = checkpoint_update(folder)
            policy = load_policy(folder / "model")
            optimizer_state = torch.load(folder / "optimizer.pt", map_location=policy.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001  (whatever is wrong with the files, the one before may load)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            failed.append(f"{folder.name}: {reason}")
            log(f"checkpoint {folder} does not load ({type(exc).__name__}: {reason}); trying the one before it")
            continue
        why = "the newest checkpoint" if not failed else f"the newest that loads ({len(failed)} newer did not)"
        log(f"resuming from {folder} (update {update}): {why}")
        return Resumed(folder, update, policy, optimizer_state)
    if failed:
        raise RuntimeError(f"no checkpoint in {root} loads ({'; '.join(failed)}); nothing was changed: "
                           "repair or move them away, then resume again")
    return None


VERL_HF_FOLDER = Path("actor") / "huggingface"  # in verl's global_step_N/, with save_contents incl. hf_model


def verl_hf_folder(path: Path) -> Path | None:
    """The newest whole Hugging Face model verl saved in `path`: a global_step_N folder of verl's, its
    checkpoints folder, or a `--backend verl` run folder. None when there is none (verl writes config
    and tokenizer there always, the weights only with `hf_model` in the actor's checkpoint.save_contents)."""
    from opid_train.policy.presets import check_model_folder

    steps = [path] if path.name.startswith("global_step_") else [
        p for root in (path, path / "checkpoints") for p in root.glob("global_step_*")
        if p.name.removeprefix("global_step_").isdigit()]
    for step in sorted(steps, key=lambda p: int(p.name.removeprefix("global_step_")), reverse=True):
        try:
            return check_model_folder(step / VERL_HF_FOLDER)
        except (OSError, ValueError):
            continue
    return None


def model_folder_of(path: str | Path) -> Path:
    """The model folder `path` names: itself, a checkpoint's model/, a run's final/, else the run's
    newest whole checkpoint (ours, or verl's Hugging Face export)."""
    folder = Path(path)
    if (folder / "config.json").exists() or (folder / "adapter_config.json").exists():
        return folder
    if (folder / "model").is_dir():
        return folder / "model"
    if (folder / "final").is_dir():
        return folder / "final"
    latest = latest_checkpoint(folder)
    if latest is not None:
        return latest / "model"
    verl = verl_hf_folder(folder)
    if verl is not None:
        return verl
    raise ValueError(f"{path}: not a model folder, checkpoint or run folder (or none of its checkpoints is whole; "
                     f"a verl checkpoint needs 'hf_model' in actor_rollout_ref.actor.checkpoint.save_contents)")
