"""Which process of a `torchrun` / `accelerate launch` job this is, and a barrier (no Django).

The launchers set RANK and WORLD_SIZE for every process they start. The commands read them
before any model or process group exists, so that only rank 0 writes the database: the
other ranks train their share of the data and write nothing.
"""

from __future__ import annotations

import os


def process_rank() -> int:
    """This process's global rank (0 when not launched by torchrun / accelerate)."""
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    """Processes in the job (1 when not launched by torchrun / accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """Rank 0: the one process that writes TrainingRun and ModelVersion rows."""
    return process_rank() == 0


def refuse_zero3(accelerator) -> None:  # noqa: ANN001
    """Raise ValueError under DeepSpeed ZeRO stage 3, which these trainers do not support.

    ZeRO-3 shards every parameter: the unwrapped model the main process saves holds empty
    tensors (checked: 0 of 1600 elements of an embedding on one process), and PPO's
    held-out sampling on the main process alone would wait forever for the other ranks'
    parameter gathers. ZeRO-2 shards optimizer states and gradients only and saves whole.
    """
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    if plugin is not None and getattr(plugin, "zero_stage", None) == 3:
        raise ValueError(
            "DeepSpeed ZeRO stage 3 is not supported: the saved weights would be empty "
            "(parameters stay sharded); use configs/accelerate/deepspeed_zero2.yaml or "
            "multi_gpu.yaml"
        )


def deepspeed_settings(accelerator, micro_batch: int, config) -> None:  # noqa: ANN001
    """Tell DeepSpeed, before `prepare`, what PPO's own loop decides.

    accelerate takes DeepSpeed's micro-batch size from a prepared dataloader, and PPO
    prepares none (it samples its batches): without the size, `prepare` refuses to start.
    DeepSpeed clips gradients inside its engine, where accelerate's `clip_grad_norm_` does
    not reach: the run's `max_grad_norm` goes into the engine's config, so the clipping done
    is the one recorded. Nothing happens without DeepSpeed.
    """
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    if plugin is None:
        return
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch
    plugin.deepspeed_config["gradient_clipping"] = config.max_grad_norm


def wait_for_everyone() -> None:
    """A barrier across the job's processes; nothing to wait for in a single process.

    The commands call it after rank 0's last database write, so that no rank reports success
    before the run is recorded.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
