"""Results of every rank put together: sharded computations all-gathered, and the rows of a
distributed evaluation restored to their one-process order."""

import math

import torch
import torch.distributed as dist

from recbole_llmsrec.distribution.process_group import is_distributed, rank


def _all_gather(tensor):
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def sharded_rows(compute, items, config):
    """``compute(items)`` over equal, disjoint slices per rank (the last padded with the last item,
    so every rank runs the same forwards), all-gathered."""
    if not is_distributed(config):
        return compute(items)
    world = dist.get_world_size()
    per_rank = math.ceil(len(items) / world)
    mine = items[rank() * per_rank : (rank() + 1) * per_rank]
    mine = torch.cat([mine, items[-1:].expand(per_rank - len(mine))])
    return torch.cat(_all_gather(compute(mine)))[: len(items)]


def gather_eval_rows(struct, total_rows, row_keys):
    """Every rank's per-row tensors of RecBole's evaluation ``DataStruct``, in single-process order:
    RecBole's ``DistributedSampler`` (no shuffle) gives rank r rows r, r + W, ... of the list padded
    to a multiple of W with its start, so interleaving the ranks and cutting at ``total_rows``
    restores it. ``row_keys``: the struct's per-row keys (``evaluation.results.EVAL_ROW_KEYS``)."""
    world = dist.get_world_size()
    per_rank = math.ceil(total_rows / world)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    for key in (key for key in row_keys if key in struct):
        local = struct[key]
        if len(local) != per_rank:
            raise RuntimeError(
                f"distributed evaluation: rank {rank()} has {len(local)} rows of {key}, "
                f"expected {per_rank}; this evaluation mode gives several rows per sample."
            )
        rows = torch.stack(_all_gather(local.to(device)), dim=1)
        struct.set(key, rows.reshape(world * per_rank, *local.shape[1:])[:total_rows].cpu())
    return struct
