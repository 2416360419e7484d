"""torch.distributed for the trainer: one process per GPU under torchrun (NCCL), or per CPU process
(gloo). Without torchrun's environment everything here is a single-process no-op."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from dice_core.training import TrainingData

from .errors import CliError

PIECE_BYTES = 256 * 2**20  # tensors travel in pieces of at most this size (bounds GPU memory on NCCL)


@dataclass
class Context:
    """This process's place among torchrun's ranks. It is the dice_core.training.Collective the training session
    uses (rank, world_size, all_reduce_mean, gather_training_data), plus what the CLI needs around it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- collectives (no-ops in one process) -------------------------------------------------
    def all_reduce_mean(self, t: torch.Tensor) -> None:
        """In place: the mean of t over the ranks (train_refiner's gradient and loss averaging)."""
        if not self.enabled:
            return
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(self.world_size)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if not self.enabled:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, device=self.comm_device)
        return box[0]

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """Run fn on rank 0 only and give its result to every rank; a CliError there is raised on all
        ranks (so no rank is left waiting in a collective for a rank that gave up)."""
        outcome = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except CliError as e:
                outcome = ("error", str(e))
        outcome = self.broadcast_object(outcome)
        if outcome[0] == "error":
            raise CliError(outcome[1])
        return outcome[1]

    def broadcast_rows(self, t: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, src: int = 0) -> torch.Tensor:
        """Rank src's tensor on every rank (CPU), sent in bounded pieces along dim 0."""
        if not self.enabled:
            return t
        out = t.contiguous() if self.rank == src else torch.empty(shape, dtype=dtype)
        if out.numel() == 0:
            return out
        row_bytes = max(1, out[0].numel() * out.element_size())
        step = max(1, PIECE_BYTES // row_bytes)
        for start in range(0, shape[0], step):
            piece = out[start:start + step]
            buf = piece.to(self.comm_device) if self.rank == src else torch.empty(piece.shape, dtype=dtype, device=self.comm_device)
            dist.broadcast(buf, src=src)
            if self.rank != src:
                piece.copy_(buf.cpu())
        return out

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's rows, concatenated in rank order, on every rank (CPU)."""
        if not self.enabled:
            return t
        t = t.detach().cpu()
        shapes = [None] * self.world_size
        dist.all_gather_object(shapes, tuple(t.shape), group=None)
        parts = [self.broadcast_rows(t if r == self.rank else None, tuple(s), t.dtype, src=r) for r, s in enumerate(shapes)]
        filled = [p for p in parts if p.shape[0] > 0]  # a rank with no work sends an empty block of any shape
        return torch.cat(filled) if filled else parts[0]

    def gather_training_data(self, data: TrainingData) -> TrainingData:
        """The teacher data of all ranks' blocks, in rank order: what one process would have made."""
        fields = {}
        for name in (f.name for f in dataclasses.fields(TrainingData)):  # every field, the dial's scales too
            value = getattr(data, name)
            fields[name] = None if value is None else self.gather_rows(value)
        return TrainingData(**fields)


def init(timeout_s: float, cpu: bool) -> Context:
    """Join torchrun's process group when WORLD_SIZE > 1: NCCL on GPUs (one per local rank), else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not cpu
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise CliError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible; "
                           "use --nproc_per_node up to the number of GPUs")
        torch.cuda.set_device(local_rank)  # before ComfyUI is imported: it uses the current device
        backend, comm = "nccl", torch.device("cuda", local_rank)
    else:
        backend, comm = "gloo", torch.device("cpu")
    kwargs = {"device_id": comm} if use_cuda else {}
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, backend=backend,
                   comm_device=comm)


def shutdown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
