"""The verl backend of opid-train (`--backend verl`): verl's Ray + FSDP + vLLM trainer, opid's envs and
algorithm core. Nothing here is imported unless that backend is asked for.

    agent_loop.py   the registered verl agent loop: an opid env episode, one training row per step
    envs.py         env slots stepped off the event loop (threads or env processes)
    records.py      the per-step record a row carries, and the trajectories rebuilt from rows
    advantage.py    verl batch -> opid Batch -> the shared GRPO / OPID / SDAR `prepare` -> advantages
    trainer.py      verl's v1 trainer with opid's advantage step, and the teacher's log-prob pass
    dataset.py      the task files verl's dataloader reads
    config.py       presets (Hydra configs extending verl's ppo_trainer) -> checked verl + opid configs
    main.py         `opid-train --backend verl --preset FILE [overrides]`
"""

AGENT_NAME = "opid_env"  # the agent loop's registered name, the dataset rows' agent_name
