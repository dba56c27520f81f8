"""Data-parallel training setup: one process per device, started by ``torchrun``.

``torchrun --nproc_per_node=N -m tfs_decoder train ...`` starts N processes and sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in each one's environment. When
``WORLD_SIZE > 1`` the training loop joins the process group (``gloo`` on CPU, ``nccl``
on CUDA), wraps the model in ``DistributedDataParallel`` (gradients averaged over the
ranks after each backward pass) and gives each rank its own share of the windows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tfs_decoder.training.errors import TfsError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands among the training processes.

    Attributes:
        rank: this process's index among all processes, ``0 .. world_size - 1``.
        local_rank: its index on this machine; selects the CUDA device.
        world_size: the number of processes (1 = no distributed training).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """Whether there are several processes (and a process group to talk through)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0, the one that logs and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TfsError(f"environment variable {name}: expected an int, got {raw!r}") from None
    if value < 0:
        raise TfsError(f"environment variable {name}: expected an int >= 0, got {value}")
    return value


def env_dist_info() -> DistInfo:
    """The rank, local rank and world size that ``torchrun`` put in the environment.

    Without ``WORLD_SIZE`` (a plain ``python`` or ``tfs`` run) this is one process, rank 0.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if rank >= world_size:
        raise TfsError(f"environment variable RANK: expected < WORLD_SIZE={world_size}, got {rank}")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size)


def backend_for(device_type: str) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` for CPU; other devices have no backend here."""
    if device_type == "cuda":
        return "nccl"
    if device_type == "cpu":
        return "gloo"
    raise TfsError(
        f"--device: distributed training (WORLD_SIZE > 1) runs on cpu or cuda, got {device_type!r}"
    )


@contextmanager
def distributed(info: DistInfo, device: torch.device) -> Iterator[DistInfo]:
    """Join the process group for the duration of the block when ``info.enabled``.

    The group is destroyed on leaving the block, also when it raises, unless it existed
    before (a caller that set it up keeps it); on a normal exit every rank first waits for
    the others. On one process this does nothing.
    """
    if not info.enabled:
        yield info
        return
    owned = not dist.is_initialized()
    if owned:
        backend = backend_for(device.type)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group(backend=backend, device_id=device)
        else:
            dist.init_process_group(backend=backend)
    try:
        if dist.get_world_size() != info.world_size or dist.get_rank() != info.rank:
            raise TfsError(
                f"process group: expected rank {info.rank} of {info.world_size} (from the "
                f"environment), got rank {dist.get_rank()} of {dist.get_world_size()}"
            )
        yield info
        if owned:
            # Tearing the group down while another rank still talks through it aborted
            # a gloo rank now and then ("terminate called without an active exception").
            dist.barrier()
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place; returned for chaining. No-op on one process."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (pickled through the process group)."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here. No-op on one process."""
    if info.enabled:
        dist.barrier()
