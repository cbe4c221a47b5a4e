"""Small helpers around :mod:`torch.distributed` used by OGM and OPM.

Both methods need every rank to take the same decision from the same numbers: the
uni-modal scores are batch *sums*, so one ``all_reduce(SUM)`` of a stacked ``(M,)`` vector
gives every rank the scores of the global batch, and a seed broadcast from rank 0 gives every
rank the same random stream for the GE noise and the OPM execution draw.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a default process group is initialised (``torchrun`` or ``init_process_group``)."""
    return dist.is_available() and dist.is_initialized()


def resolve_sync(sync: bool | None) -> bool:
    """Turn the user's ``sync`` argument into a decision: ``None`` means "when distributed"."""
    if sync is None:
        return is_distributed()
    if sync and not is_distributed():
        raise ValueError("sync=True needs an initialised torch.distributed process group; none is initialised")
    return bool(sync)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Return the element-wise sum of ``values`` over all ranks (a new tensor; input untouched)."""
    reduced = values.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def shared_seed(device: torch.device, *, distributed: bool) -> int:
    """Draw a 63-bit seed from the global torch RNG; under ``distributed`` rank 0's draw wins.

    The broadcast tensor lives on ``device`` so that it works with both gloo (CPU) and
    NCCL (CUDA) process groups.
    """
    seed = torch.randint(0, 2**62, (1,), dtype=torch.int64)
    if distributed:
        buffer = seed.to(device)
        dist.broadcast(buffer, src=0)
        seed = buffer.cpu()
    return int(seed.item())


def shared_generator(
    generator: torch.Generator | None, device: torch.device, *, sync: bool | None, owner: str
) -> torch.Generator:
    """Return ``generator``, or a new one on ``device`` seeded identically on every rank.

    Raises:
        ValueError: ``generator`` lives on another device type than the tensors it must serve.
    """
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(shared_seed(device, distributed=resolve_sync(sync)))
    if generator.device.type != device.type:
        raise ValueError(
            f"{owner} generator is on {generator.device} but its tensors are on {device}; "
            "pass generator=torch.Generator(device=...) on that device"
        )
    return generator


def rank() -> int:
    """This process's rank, 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0
