"""The task list verl's dataloader iterates: one row per (env, split, task id), from a JSONL file.

`opid-train --backend verl` writes `<run_dir>/tasks/train.jsonl` (and `val.jsonl`) before verl
starts; each update draws `data.train_batch_size` rows and the agent loop plays every row
`actor_rollout_ref.rollout.n` times. The rows carry no prompt text: the env renders it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from opid_train.rollout import EnvPool, spread_task_ids

from opid_train.verl import AGENT_NAME


def write_task_file(path: str | Path, env_id: str, env_kwargs: dict[str, Any], split: str, count: int | None,
                    seed: int = 0) -> int:
    """`count` task ids spread over `split` (all when None), one JSON line each; returns the count."""
    pool = EnvPool(env_id, 1, env_kwargs)
    try:
        n_tasks = pool.num_tasks(split)
    finally:
        pool.close()
    ids = spread_task_ids(n_tasks, count)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for task_id in ids:
            f.write(json.dumps({"env_id": env_id, "env_kwargs": env_kwargs, "split": split, "task_id": task_id,
                                "seed": seed}) + "\n")
    return len(ids)


class OpidTaskDataset(Dataset):
    """verl's `data.custom_cls`: reads task files, yields what the agent loop's `run` takes."""

    def __init__(self, data_files, tokenizer=None, processor=None, config=None, max_samples: int = -1):
        files = [data_files] if isinstance(data_files, (str, Path)) else list(data_files)
        self.rows: list[dict[str, Any]] = []
        for file in files:
            path = Path(file).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"no task file {path}: opid-train --backend verl writes it before verl starts")
            self.rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if max_samples is not None and max_samples > 0:
            self.rows = self.rows[:max_samples]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {
            "agent_name": AGENT_NAME, "env_id": row["env_id"], "split": row["split"], "task_id": int(row["task_id"]),
            "env_kwargs": json.dumps(row.get("env_kwargs") or {}, sort_keys=True), "seed": int(row.get("seed", 0)),
            "index": index, "data_source": row["env_id"],
            # verl's agent-loop worker and reward plumbing read a chat prompt; the env renders the real one
            "raw_prompt": [{"role": "user", "content": f"{row['env_id']} {row['split']} task {row['task_id']}"}],
        }
