"""Several processes (Lightning DDP): who does which image, and putting per-image results back
together in image order on every process, so that a detector fitted or a threshold calibrated
after distributed training is exactly what one process would have computed."""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def my_images(n: int) -> list[int]:
    """The indices of the images this process handles: every world-th one from its rank."""
    rank, world = rank_and_world()
    return list(range(rank, n, world))


def gather_by_image(
    local: dict[int, torch.Tensor], n: int, width: int, dtype: torch.dtype
) -> list[torch.Tensor]:
    """Every process's per-image (rows, ``width``) tensors, on every process, in image order.
    ``local`` holds this process's images (those of :func:`my_images`)."""
    _, world = rank_and_world()
    if world == 1:
        return [local[i] for i in range(n)]
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    per_rank = -(-n // world)
    counts = torch.zeros(per_rank, dtype=torch.long)
    for j, i in enumerate(my_images(n)):
        counts[j] = len(local[i])
    all_counts = [torch.zeros_like(counts, device=device) for _ in range(world)]
    dist.all_gather(all_counts, counts.to(device))
    totals = [int(c.sum()) for c in all_counts]
    flat = torch.cat([local[i] for i in my_images(n)] or [torch.zeros(0, width, dtype=dtype)])
    padded = torch.zeros((max(totals), width), dtype=dtype, device=device)
    padded[: len(flat)] = flat.to(device)
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    out: list[torch.Tensor | None] = [None] * n
    for r in range(world):
        owned = range(r, n, world)
        sizes = all_counts[r].cpu().tolist()[: len(owned)]
        for i, piece in zip(owned, gathered[r][: totals[r]].cpu().split(sizes), strict=True):
            out[i] = piece
    return out  # type: ignore[return-value]


def broadcast_module(module: torch.nn.Module) -> None:
    """Give every process the first process's parameters and buffers. After DDP training the
    parameters agree but batch-norm running statistics are each process's own (the last steps
    update them locally), and the first process's are the ones the bundle saves."""
    if rank_and_world()[1] == 1:
        return
    nccl = dist.get_backend() == "nccl"
    for tensor in module.state_dict().values():
        moved = tensor.cuda() if nccl else tensor
        dist.broadcast(moved, src=0)
        if moved is not tensor:
            tensor.copy_(moved)
