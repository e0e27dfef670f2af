"""Training on several processes (CPU or GPU) without changing the training code: accelerate / torchrun.

The global batch is explicit: ``global = per_device × gradient accumulation × processes``. Step ``s`` of
:func:`lmcourse.pretraining.train` draws the *global* batch ``batches(s)``; each process keeps its
contiguous shard (:func:`shard_batch`) and splits it into micro-batches (:func:`micro_batches`); DDP
averages the gradients. So one process with batch ``B·k`` and ``k`` processes with batch ``B`` see the
same examples in every step and, for a loss that is a mean over equally sized shards (causal LM on packed
blocks), follow the same loss curve up to float rounding. For masked LM the loss is a mean over the
*masked* tokens, whose count differs between shards; the curves then agree to within that weighting.

Only the main process writes checkpoints, metrics and plots (:func:`is_main_process`); logged numbers
are reduced across processes (:func:`reduce_mean`).

Launching (see the README): ``accelerate launch --num_processes 2 -m lmcourse pretrain ...`` or
``torchrun --nproc-per-node 2 -m lmcourse pretrain ...``; in a notebook
``accelerate.notebook_launcher(fn, num_processes=2)`` (:func:`launch_in_notebook`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from lmcourse.errors import ArgumentError


def world_size() -> int:
    """Number of processes of this run (1 without a launcher)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on the process that writes files (rank 0)."""
    return rank() == 0


def global_batch_size(per_device_batch: int, grad_accum_steps: int = 1, processes: int | None = None) -> int:
    """Examples per optimiser step across all processes."""
    processes = world_size() if processes is None else processes
    if min(per_device_batch, grad_accum_steps, processes) < 1:
        raise ArgumentError("batch size, gradient accumulation steps and processes must all be >= 1")
    return per_device_batch * grad_accum_steps * processes


def per_device_batch_size(global_batch: int, grad_accum_steps: int = 1, processes: int | None = None) -> int:
    """The per-device micro-batch for a global batch; raises when it does not divide evenly."""
    processes = world_size() if processes is None else processes
    parts = grad_accum_steps * processes
    if global_batch % parts:
        raise ArgumentError(f"global batch {global_batch} is not divisible by {grad_accum_steps} accumulation steps × "
                        f"{processes} processes; choose a multiple of {parts}")
    return global_batch // parts


def shard_batch(batch: Mapping[str, Tensor], shard: int, num_shards: int) -> dict[str, Tensor]:
    """Contiguous shard ``shard`` of ``num_shards`` along the batch dimension (equal sizes required)."""
    n = next(iter(batch.values())).size(0)
    if n % num_shards:
        raise ArgumentError(f"a batch of {n} examples cannot be split evenly over {num_shards} shards")
    size = n // num_shards
    return {k: v[shard * size:(shard + 1) * size] for k, v in batch.items()}


def micro_batches(batch: Mapping[str, Tensor], steps: int) -> list[dict[str, Tensor]]:
    """Split a batch into ``steps`` equal micro-batches for gradient accumulation."""
    return [shard_batch(batch, i, steps) for i in range(steps)]


def reduce_mean(value: float | Tensor, device: torch.device | str | None = None) -> float:
    """Mean of a scalar over all processes (the value itself in a single process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return float(value)
    t = torch.as_tensor(float(value), dtype=torch.float64, device=device or "cpu")
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return float(t) / torch.distributed.get_world_size()


def reduce_stats(stats: Mapping[str, float], device: torch.device | str | None = None) -> dict[str, float]:
    """:func:`reduce_mean` for every entry of a dict of logged numbers (one collective call)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or not stats:
        return {k: float(v) for k, v in stats.items()}
    keys = sorted(stats)
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=device or "cpu")
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    t /= torch.distributed.get_world_size()
    return dict(zip(keys, t.tolist()))


def launch_in_notebook(function: Callable[..., Any], args: tuple = (), num_processes: int = 2,
                       mixed_precision: str = "no") -> None:
    """Run ``function(*args)`` on ``num_processes`` processes from a notebook (accelerate's launcher).

    On CPU the processes talk over gloo; on a multi-GPU machine each gets a GPU. The function must be
    importable (defined in a module, not in the notebook) so the processes can find it.
    """
    from accelerate import notebook_launcher

    notebook_launcher(function, args, num_processes=num_processes, mixed_precision=mixed_precision,
                      use_port=str(29500 + os.getpid() % 1000))


def init_from_env() -> tuple[int, int]:
    """Join the process group a launcher (torchrun, ``accelerate launch``, notebook_launcher) set up.

    Reads ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` from the environment; gloo on CPU, NCCL
    on CUDA. Returns ``(rank, world_size)``; a no-op ``(0, 1)`` without a launcher.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend)
    return rank(), world_size()


def wrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when several processes train, the model itself otherwise."""
    if world_size() <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
