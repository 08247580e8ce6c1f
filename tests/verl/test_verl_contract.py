"""The verl API the adapter relies on (verl 0.9.x). When a verl release changes it, this fails first and
says what changed and which opid file to adapt, instead of a run failing on a GPU cluster."""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import pytest

if importlib.util.find_spec("verl") is None:  # with verl installed, a broken import fails here, loudly
    pytest.skip("the verl extra is not installed: pip install 'opid[verl]'", allow_module_level=True)


def params(fn) -> list[str]:
    """The parameter names, less `_ray_trace_ctx`: Ray adds it to a class's methods once the class has
    run as an actor in this process (the TransferQueue fit tests do), so the order of tests must not matter."""
    return [name for name in inspect.signature(fn).parameters if name != "_ray_trace_ctx"]


def require(condition: bool, what: str, where: str) -> None:
    if not condition:
        import verl

        pytest.fail(f"verl {verl.__version__} changed {what}; adapt opid_train/verl/{where}", pytrace=False)


@pytest.mark.parametrize("module", ["verl.experimental.agent_loop", "verl.trainer.ppo.v1", "verl.trainer.main_ppo",
                                    "verl.workers.utils.padding", "transfer_queue"])
def test_the_modules_the_adapter_uses_import(module):
    try:
        importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} does not import ({exc}): verl moved it, or the verl extra misses a dependency "
                    f"(the Makefile's VERL_DEPS)", pytrace=False)


def test_verl_version_is_the_pinned_minor():
    import verl

    require(verl.__version__.startswith("0.9."), f"its version ({verl.__version__}, pinned >=0.9.1,<0.10)", "*")


def test_agent_loop_api():
    from verl.experimental.agent_loop import agent_loop as al
    from verl.workers.rollout.replica import TokenOutput

    init = params(al.AgentLoopBase.__init__)
    require(init[:8] == ["self", "trainer_config", "server_manager", "tokenizer", "processor", "dataset_cls",
                         "data_config", "hf_model_type"], f"AgentLoopBase.__init__ to {init}", "agent_loop.py")
    require(inspect.iscoroutinefunction(al.AgentLoopBase.run), "AgentLoopBase.run (no longer async)", "agent_loop.py")
    require(inspect.iscoroutinefunction(al.AgentLoopBase.ct_build_initial_tokens),
            "AgentLoopBase.ct_build_initial_tokens", "agent_loop.py")
    fields = set(al.AgentLoopOutput.model_fields)
    needed = {"prompt_ids", "response_ids", "response_mask", "response_logprobs", "reward_score", "num_turns",
              "metrics", "extra_fields"}
    require(needed <= fields, f"AgentLoopOutput's fields (missing {needed - fields})", "agent_loop.py")
    require({"generate_sequences", "tool_calls", "num_preempted"} <= set(al.AgentLoopMetrics.model_fields),
            "AgentLoopMetrics's fields", "agent_loop.py")
    require({"token_ids", "log_probs", "num_preempted"} <= set(TokenOutput.model_fields), "TokenOutput's fields",
            "agent_loop.py")
    from verl.workers.rollout.llm_server import LLMServerClient

    gen = inspect.signature(LLMServerClient.generate).parameters
    require({"request_id", "prompt_ids", "sampling_params"} <= set(gen), "LLMServerClient.generate", "agent_loop.py")


def test_registered_agent_loop_is_found_by_name():
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

    import opid_train.verl.agent_loop  # noqa: F401
    from opid_train.verl import AGENT_NAME

    require(_agent_loop_registry.get(AGENT_NAME) == {"_target_": "opid_train.verl.agent_loop.OpidEnvAgentLoop"},
            "the agent-loop registry (verl.experimental.agent_loop.register)", "agent_loop.py")


def test_v1_worker_takes_one_output_per_step():
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    post = AgentLoopWorkerTQ.__ray_metadata__.modified_class._agent_loop_postprocess
    source = inspect.getsource(post)
    require("isinstance(output, list)" in source and '["reward_extra_info"]' in source,
            "how the v1 agent-loop worker stores a list of outputs (one per step) and copies reward_extra_info",
            "agent_loop.py")


def test_v1_trainer_seams():
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.trainer.ppo.v1 import trainer_base
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    require(params(trainer_base.PPOTrainer._compute_advantage) == ["self", "batch", "metrics"],
            "PPOTrainer._compute_advantage(batch, metrics)", "trainer.py")
    require(params(trainer_base.PPOTrainer._compute_metrics) == ["self", "batch", "metrics", "timing_raw",
                                                                  "global_steps", "epoch"],
            "PPOTrainer._compute_metrics (where metrics.jsonl is written)", "trainer.py")
    require(params(trainer_base.PPOTrainer.fit) == ["self", "agent_loop_manager"] and
            params(PPOTrainerSync.on_init_end) == ["self"], "PPOTrainer.fit / on_init_end", "trainer.py")
    fit = inspect.getsource(trainer_base.PPOTrainer.fit)
    require(-1 < fit.find("self._save_checkpoint()") < fit.find("self._compute_metrics("),
            "fit's order (a step's _save_checkpoint before its _compute_metrics, where the save is deferred to)",
            "trainer.py")
    save = inspect.getsource(trainer_base.PPOTrainer._save_checkpoint)
    require('f"global_step_{self.global_steps}"' in save and '"actor"' in save,
            "the checkpoint layout global_step_N/actor (opid-eval looks there)", "../learner.py (verl_hf_folder)")
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    require('os.path.join(local_path, "huggingface")' in inspect.getsource(FSDPCheckpointManager.save_checkpoint),
            "where hf_model is saved (actor/huggingface)", "../learner.py (verl_hf_folder)")
    require(issubclass(PPOTrainerSync, trainer_base.PPOTrainer) and hasattr(trainer_base, "register_trainer"),
            "the v1 trainer registry", "trainer.py")
    require(params(run_ppo)[:2] == ["config", "task_runner_class"], "run_ppo(config, task_runner_class)", "main.py")
    require(params(TaskRunnerV1.__ray_metadata__.modified_class.run)[:2] == ["self", "config"], "TaskRunnerV1.run",
            "trainer.py")
    from opid_train.verl.trainer import TRAINER_MODE

    require(trainer_base.get_trainer_cls(TRAINER_MODE).__name__ == "OpidTrainer", "get_trainer_cls", "trainer.py")
    balance = inspect.getsource(trainer_base.PPOTrainer._balance_batch)
    require("_dispatch_info" in balance and "_query_dispatch_info" in balance,
            "the actor's data-parallel ranks as verl's _balance_batch reads them", "trainer.py (ActorScorer.rows_multiple)")
    init = inspect.getsource(trainer_base.PPOTrainer.__init__)
    require(all(name in init for name in ("trainer_mode", "parameter_sync_step", "_build_replay_buffer")),
            "the trainer mode, parameter_sync_step and replay buffer set in PPOTrainer.__init__",
            "trainer.py (OpidTrainer.__init__ runs as sync)")
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size

    require(params(upsample_batch_to_divisible_size) == ["batch", "batch_multiple", "eos_token_id"],
            "upsample_batch_to_divisible_size(batch, batch_multiple, eos_token_id)", "trainer.py (ActorScorer.score)")


def test_data_and_loss_seams():
    import transfer_queue as tq
    from verl.protocol import DataProto
    from verl.trainer.ppo import core_algos
    from verl.utils.dataset.rl_dataset import get_dataset_class
    from verl.workers.utils import padding

    require({"batch", "non_tensor_batch"} <= set(params(DataProto.__init__)), "DataProto's constructor", "advantage.py")
    require(all(hasattr(tq, f) for f in ("kv_batch_get", "kv_batch_put", "kv_clear")), "TransferQueue's kv API",
            "trainer.py")
    require(hasattr(padding, "response_to_nested") and hasattr(padding, "response_from_nested"),
            "verl.workers.utils.padding", "trainer.py")
    require(params(core_algos.compute_policy_loss_vanilla)[:5] == ["old_log_prob", "log_prob", "advantages",
                                                                   "response_mask", "loss_agg_mode"],
            "compute_policy_loss_vanilla", "(the parity test)")
    require("custom_cls" in inspect.getsource(get_dataset_class), "data.custom_cls", "dataset.py")


def test_actor_loss_seams_sdar_uses():
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.padding_utils import construct_minimal_padding_template
    from verl.workers import engine_workers
    from verl.workers.utils import losses

    worker = engine_workers.ActorRolloutRefWorker
    require(hasattr(worker, "set_loss_fn") and params(worker.set_loss_fn) == ["self", "loss_fn"],
            "ActorRolloutRefWorker.set_loss_fn(loss_fn)", "trainer.py")
    require(params(losses.ppo_loss) == ["config", "model_output", "data", "dp_group"],
            "verl.workers.utils.losses.ppo_loss(config, model_output, data, dp_group)", "loss.py")
    require(params(core_algos.agg_loss)[:3] == ["loss_mat", "loss_mask", "loss_agg_mode"], "agg_loss", "loss.py")
    require("is_padding" in inspect.getsource(construct_minimal_padding_template),
            "how padding rows are tagged (is_padding)", "advantage.py (step_records)")
