"""Process-group set-up, rank-sharded batches, exact metric reduction and deterministic mode.

One command line serves one CPU process, several processes on one machine and several
machines: :func:`init_distributed` reads the variables ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and starts a process group
only when ``WORLD_SIZE > 1`` (gloo on CPU, NCCL on CUDA).

:class:`ShardedBatchSampler` cuts every *global* batch of ``batch_size * world_size``
consecutive indices of one (seed, epoch) permutation into per-rank slices, so a run on W
processes with per-rank batch B sees the same global batches, in the same steps, as one process
with batch W·B. Metrics are kept as sums and reduced with :func:`reduce_sums` (one all-reduce),
which gives exactly the single-process totals.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistributedContext",
    "ShardedBatchSampler",
    "barrier",
    "broadcast_object",
    "gather_objects",
    "init_distributed",
    "reduce_sums",
    "seed_worker",
    "set_deterministic",
    "shutdown_distributed",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, ``0 .. world_size - 1``.
        world_size: number of processes.
        local_rank: rank on this machine (selects the CUDA device).
        device: the device this process computes on.
        is_main: ``rank == 0``; only the main process writes files.
        distributed: whether a process group is initialised (``world_size > 1``).

    Example:
        >>> ctx = init_distributed("cpu")  # no torchrun variables: a single process
        >>> ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed, ctx.device
        (0, 1, True, False, device(type='cpu'))
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool
    distributed: bool


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer (it is set by torchrun)") from None


def _resolve_device(device: str, local_rank: int, world_size: int) -> torch.device:
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but CUDA is not available (use device='cpu' or 'auto')")
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(f"LOCAL_RANK={local_rank} but this machine has only {count} CUDA device(s)")
        return torch.device("cuda", local_rank)
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if resolved.type == "cuda" and resolved.index is not None and world_size > 1:
        raise ValueError(
            f"device={device!r} pins one GPU, but {world_size} processes were launched; use device='cuda' so "
            "that each rank takes the GPU of its LOCAL_RANK"
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available (use device='cpu' or 'auto')")
    return resolved


def init_distributed(device: str = "auto") -> DistributedContext:
    """Read torchrun's environment and start the process group when there is more than one process.

    Args:
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` (the GPU of
            ``LOCAL_RANK``) or ``"cuda:N"`` (single process only).

    Returns:
        The :class:`DistributedContext`. Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) no
        process group is created. If a default process group already exists, it is reused.

    Raises:
        ValueError: malformed or inconsistent variables (``RANK >= WORLD_SIZE``), missing
            ``MASTER_ADDR``/``MASTER_PORT`` when ``WORLD_SIZE > 1``, or an unusable device.

    Backend: ``gloo`` for CPU, ``nccl`` for CUDA; on CUDA the current device is set to
    ``cuda:LOCAL_RANK`` before the group starts.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", 0)
        resolved = _resolve_device(device, local_rank, world_size)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        return DistributedContext(rank, world_size, local_rank, resolved, rank == 0, True)

    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world_size}")
    if local_rank < 0:
        raise ValueError(f"LOCAL_RANK must be >= 0, got {local_rank}")
    resolved = _resolve_device(device, local_rank, world_size)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if world_size == 1:
        return DistributedContext(0, 1, local_rank, resolved, True, False)

    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {' and '.join(missing)} is not set; launch with torchrun, which sets them"
        )
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    logger.info(
        "rank %d/%d (local %d) joined the %s process group on %s",
        rank,
        world_size,
        local_rank,
        backend,
        resolved,
    )
    return DistributedContext(rank, world_size, local_rank, resolved, rank == 0, True)


def shutdown_distributed(ctx: DistributedContext) -> None:
    """Destroy the process group that :func:`init_distributed` started (no-op for one process)."""
    if ctx.distributed and dist.is_available() and dist.is_initialized():
        # Every rank must be done with its collectives before any rank tears its connections down;
        # otherwise a rank still in gloo's teardown can abort ("terminate called without an active exception").
        barrier(ctx)
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    """Wait for every rank (no-op for one process), e.g. after rank 0 has written a file the others read."""
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index or 0])
        else:
            dist.barrier()


def broadcast_object(obj: Any, ctx: DistributedContext, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every rank (pickled; for small objects such as a run folder name)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (e.g. per-rank RNG states for a checkpoint)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def reduce_sums(values: Mapping[str, Tensor], ctx: DistributedContext) -> dict[str, Tensor]:
    """Sum each tensor over all ranks with a single all-reduce.

    Every value is flattened into one float64 buffer (integer counts up to 2**53 stay exact),
    summed across ranks, and split back into tensors of the original shapes, dtypes and
    devices. Keys are processed in sorted order, so ranks may build the dict in any order, but
    every rank must pass the same keys and shapes.

    Args:
        values: name -> tensor of any shape (e.g. 0-d loss sum, 0-d sample count, ``(C,)`` per-class hits).
        ctx: the distributed context; without a process group the values are returned as they are.

    Returns:
        name -> summed tensor.

    Example:
        >>> ctx = init_distributed("cpu")
        >>> out = reduce_sums({"correct": torch.tensor(3), "loss_sum": torch.tensor(1.5)}, ctx)
        >>> int(out["correct"]), float(out["loss_sum"])
        (3, 1.5)
    """
    for name, value in values.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"reduce_sums: values[{name!r}] must be a Tensor, got {type(value).__name__}")
    if not ctx.distributed:
        return dict(values)
    names = sorted(values)
    if not names:
        return {}
    flat = torch.cat([values[name].detach().reshape(-1).to(ctx.device, torch.float64) for name in names])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out: dict[str, Tensor] = {}
    offset = 0
    for name in names:
        value = values[name]
        part = flat[offset : offset + value.numel()].reshape(value.shape)
        offset += value.numel()
        if not value.dtype.is_floating_point and not value.dtype.is_complex:
            part = part.round()
        out[name] = part.to(device=value.device, dtype=value.dtype)
    return out


# ---------------------------------------------------------------------------------------------- sampler
def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed from (seed, epoch) that does not collide for (s, e + 1) and (s + 1, e)."""
    digest = hashlib.sha256(f"modbalance-sampler:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class ShardedBatchSampler:
    """Per-rank batches of indices that together form the single-process global batches.

    Each epoch orders ``range(num_samples)`` (a permutation drawn from a private
    ``torch.Generator`` seeded from ``(seed, epoch)`` when ``shuffle``, else the identity), cuts
    it into global batches of ``G = batch_size * world_size`` consecutive positions, and gives
    rank ``r`` the ``r``-th of ``world_size`` contiguous, balanced parts of each global batch:
    of a global batch of size ``L``, rank ``r`` takes ``L // W + (r < L % W)`` indices starting
    at ``r * (L // W) + min(r, L % W)``. A full global batch thus gives every rank exactly
    ``batch_size`` indices, and a run on W ranks with per-rank batch B sees the same samples in
    the same steps as one rank with batch W·B.

    The last global batch (``drop_last=False``) keeps every remaining sample, split the same
    balanced way; every rank gets the same number of batches. In the one case where that
    would leave a rank with an empty batch (``0 < num_samples % G < world_size``), the few
    remaining samples join the previous global batch instead, so no sample is dropped and no
    batch is empty (the single-process run has one more, tiny, step there). Across ranks every
    index of the epoch appears exactly once, with no padding duplicates, so
    ``ShardedBatchSampler(n, b, seed=0, shuffle=False, rank=r, world_size=w)`` is also the
    evaluation sampler: reduce the per-rank sums (correct, loss sum, count) with
    :func:`reduce_sums` and divide, which equals the single-process metric exactly.

    With unequal per-rank batch sizes (only in the last global batch) DDP's gradient average
    over ranks is not the global per-sample mean; for an exact match use a summed loss
    divided by :meth:`global_batch_size` and multiplied by ``world_size``.

    Args:
        num_samples: dataset length.
        batch_size: per-rank batch size.
        seed: permutation seed.
        shuffle: permute every epoch; ``False`` keeps dataset order.
        drop_last: drop the last global batch if it is smaller than ``G``.
        rank: this process's rank.
        world_size: number of processes.

    Example:
        >>> s0 = ShardedBatchSampler(10, 2, seed=0, shuffle=False, rank=0, world_size=2)
        >>> s1 = ShardedBatchSampler(10, 2, seed=0, shuffle=False, rank=1, world_size=2)
        >>> list(s0), list(s1)
        ([[0, 1], [4, 5], [8]], [[2, 3], [6, 7], [9]])
        >>> s0.set_start_batch(2); list(s0), list(s0)  # resume skips batches once
        ([[8]], [[0, 1], [4, 5], [8]])
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int,
        shuffle: bool,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        for name, value, low in (
            ("num_samples", num_samples, 1),
            ("batch_size", batch_size, 1),
            ("world_size", world_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if num_samples < world_size:
            raise ValueError(
                f"num_samples={num_samples} is smaller than world_size={world_size}; some rank would get no data"
            )
        global_batch = batch_size * world_size
        if drop_last and num_samples < global_batch:
            raise ValueError(
                f"drop_last=True with num_samples={num_samples} < global batch {global_batch} "
                f"(batch_size={batch_size} x world_size={world_size}) leaves no batch at all"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        self.extra = torch.empty(0, dtype=torch.long)

    def set_extra(self, indices: Tensor | None) -> None:
        """Append ``(K,)`` dataset indices (repeats allowed) to the samples of the next epochs.

        The epoch then orders ``num_samples + K`` *positions* (the permutation of ``(seed, epoch)``
        over all of them): position ``p < num_samples`` is sample ``p``, position
        ``num_samples + k`` is sample ``indices[k]``; :meth:`positions` gives each batch's
        positions, so that a loop can look up per-row data of the extra samples (a balancing
        method's modality mask, :class:`~modbalance.methods.ExtraSamples`). ``None`` or an empty
        tensor: no extra samples. Call it on every rank with the same indices, before
        :meth:`set_start_batch`.
        """
        extra = torch.empty(0, dtype=torch.long) if indices is None else torch.as_tensor(indices).cpu()
        if extra.dim() != 1 or extra.is_floating_point() or extra.dtype == torch.bool:
            raise ValueError(f"extra indices must be a 1-d integer tensor, got {tuple(extra.shape)} {extra.dtype}")
        if extra.numel() and not (int(extra.min()) >= 0 and int(extra.max()) < self.num_samples):
            raise ValueError(
                f"extra indices must lie in [0, num_samples={self.num_samples}), got min {int(extra.min())} "
                f"and max {int(extra.max())}"
            )
        self.extra = extra.long()

    @property
    def total(self) -> int:
        """Samples per epoch: ``num_samples`` plus the extra ones of :meth:`set_extra`."""
        return self.num_samples + int(self.extra.numel())

    @property
    def global_batch(self) -> int:
        """Nominal global batch size ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    def _bounds(self) -> list[tuple[int, int]]:
        """(start, stop) positions in the epoch order of every global batch."""
        g, n = self.global_batch, self.total
        full, rest = divmod(n, g)
        bounds = [(i * g, (i + 1) * g) for i in range(full)]
        if rest and not self.drop_last:
            if rest >= self.world_size or not bounds:
                bounds.append((full * g, n))
            else:  # too few to give every rank one sample: merge into the previous global batch
                bounds[-1] = (bounds[-1][0], n)
        return bounds

    def __len__(self) -> int:
        """Batches per full epoch (the same on every rank; ignores :meth:`set_start_batch`)."""
        return len(self._bounds())

    def global_batch_size(self, index: int) -> int:
        """Number of samples, over all ranks, in batch ``index`` of an epoch."""
        bounds = self._bounds()
        if not 0 <= index < len(bounds):
            raise IndexError(f"batch index {index} out of range for {len(bounds)} batches per epoch")
        start, stop = bounds[index]
        return stop - start

    def order(self) -> Tensor:
        """``(total,)`` int64: the epoch's order of positions, identical on every rank (see :meth:`set_extra`)."""
        if not self.shuffle:
            return torch.arange(self.total)
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.total, generator=generator)

    def positions(self) -> list[Tensor]:
        """This rank's batches of the whole epoch as positions (``< num_samples``: the sample itself;
        above: the extra samples of :meth:`set_extra`); ignores :meth:`set_start_batch`."""
        order = self.order()
        w, r = self.world_size, self.rank
        batches = []
        for lo, hi in self._bounds():
            base, extra = divmod(hi - lo, w)
            begin = lo + r * base + min(r, extra)
            batches.append(order[begin : begin + base + (r < extra)])
        return batches

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation is used next (call before iterating, on every rank)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def set_start_batch(self, index: int) -> None:
        """Skip the first ``index`` batches of the next iteration only (resuming mid-epoch)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= len(self):
            raise ValueError(f"start batch must be an int in [0, {len(self)}], got {index!r}")
        self.start_batch = index

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start_batch = self.start_batch, 0
        batches = self.positions()[start:]
        if self.extra.numel():
            lookup = torch.cat([torch.arange(self.num_samples), self.extra])
            batches = [lookup[b] for b in batches]
        return iter([b.tolist() for b in batches])

    def __repr__(self) -> str:
        return (
            f"ShardedBatchSampler(num_samples={self.num_samples}, batch_size={self.batch_size}, "
            f"seed={self.seed}, shuffle={self.shuffle}, drop_last={self.drop_last}, rank={self.rank}, "
            f"world_size={self.world_size}, epoch={self.epoch})"
        )


# ---------------------------------------------------------------------------------------------- determinism
def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=seed_worker)``: seed ``random`` and NumPy in each worker.

    torch seeds each worker with ``base_seed + worker_id`` (``base_seed`` drawn from the
    DataLoader's ``generator``), but Python's ``random`` and NumPy's global RNG are copied from
    the parent, so with ``fork`` every worker would draw the same "random" augmentations. This
    derives both from ``torch.initial_seed()``, which differs per worker and is reproducible
    when the DataLoader gets ``generator=torch.Generator().manual_seed(seed)``.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed)


#: Value of ``CUBLAS_WORKSPACE_CONFIG`` that makes cuBLAS deterministic (see the CUDA docs).
CUBLAS_DETERMINISTIC = ":4096:8"


def set_deterministic(enabled: bool) -> None:
    """Switch the framework's deterministic mode on or off.

    On: ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic
    implementation raises instead of running), ``cudnn.deterministic = True``,
    ``cudnn.benchmark = False``, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless already set
    (it only takes effect if set before CUDA initialises, so call this early; harmless on
    CPU). Off: ``use_deterministic_algorithms(False)`` and ``cudnn.deterministic = False``
    (``cudnn.benchmark`` and the environment are left as they are).

    Seeding is separate: seed the run, pass ``worker_init_fn=seed_worker`` and a seeded
    ``generator`` to the DataLoader.

    Example:
        >>> set_deterministic(True); torch.are_deterministic_algorithms_enabled()
        True
        >>> set_deterministic(False); torch.are_deterministic_algorithms_enabled()
        False
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"set_deterministic expects a bool, got {type(enabled).__name__}")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        torch.backends.cudnn.benchmark = False
        if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
            logger.debug("set CUBLAS_WORKSPACE_CONFIG=%s", CUBLAS_DETERMINISTIC)
