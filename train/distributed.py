"""Data-parallel setup from the environment: torchrun (RANK/WORLD_SIZE/LOCAL_RANK) or Slurm
(SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID), else a single process."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _first_slurm_host(nodelist: str) -> str:
    """'gpu[03-05,07],cpu1' -> 'gpu03' (the first host of a Slurm hostlist)."""
    first = re.split(r",(?![^\[]*\])", nodelist)[0]
    m = re.match(r"^([^\[]*)\[([^\]]*)\]", first)
    if not m:
        return first
    return m.group(1) + re.split(r"[-,]", m.group(2))[0]


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's or Slurm's variables; (0, 1, 0) if neither."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def init_distributed(device_type: str) -> DistEnv:
    """Join (or create) the process group when the environment describes several processes.

    NCCL on CUDA, gloo on CPU. Under Slurm without torchrun, MASTER_ADDR defaults to the first host
    of the job and MASTER_PORT to a port derived from the job id.
    """
    rank, world, local = env_world()
    if world <= 1:
        return DistEnv()
    if dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), local, False)
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST", "localhost")
        os.environ["MASTER_ADDR"] = _first_slurm_host(nodes)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000)
    if device_type == "cuda":
        torch.cuda.set_device(local)
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world)
    return DistEnv(rank, world, local, True)


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sum_over_ranks(env: DistEnv):  # noqa: ANN201 - Callable[[Tensor], Tensor] | None
    """An in-place sum over ranks for the model's ratio-loss statistics (F and G of the global
    batch, see models/chunking.ratio_loss), or None in a single process. Kept out of
    torch.compile's graph."""
    if not env.enabled:
        return None

    @torch.compiler.disable
    def reduce(t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    return reduce


def all_reduce_grads(params: list[torch.nn.Parameter], env: DistEnv,
                     bucket_numel: int = 1 << 24) -> None:
    """Sum gradients over ranks in flat buckets per dtype (each rank's objective is already
    scaled by its share of the global batch, so a sum gives the global gradient).

    Done by hand after the last micro-batch rather than with the DDP wrapper: it is exact for any
    model (parameters a forward pass leaves unused get zero gradients instead of a DDP error),
    needs no `no_sync` bookkeeping for accumulation, and leaves torch.compile's graph alone. The
    price is no overlap of communication with the backward pass.
    """
    if not env.enabled:
        return
    buckets: dict[torch.dtype, list[list[torch.nn.Parameter]]] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        groups = buckets.setdefault(p.grad.dtype, [[]])
        if groups[-1] and sum(q.numel() for q in groups[-1]) + p.numel() > bucket_numel:
            groups.append([])
        groups[-1].append(p)
    for group in (g for groups in buckets.values() for g in groups):
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n


def broadcast_params(model: torch.nn.Module, env: DistEnv) -> None:
    """Make every rank start from rank 0's weights (same seed should already agree; this is cheap
    insurance against initialisers that consult other RNGs)."""
    if env.enabled:
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
