"""The process group: joining it, rank, and the bounded waits of rank 0's lone work.

A torchrun or RecBole ``--nproc`` launch joins its group when the run's ``Config`` sets its device
(``Config._init_device``, where RecBole joined it): NCCL on GPUs, gloo on CPU. Every collective of
work all ranks share (DDP's and FSDP's, gathering evaluation rows, the CF teacher's and A-LLMRec's
stage-1 training) waits at most ``distributed_timeout_minutes`` for a rank that stops answering.
The waits while rank 0 alone works (fills a frozen Item LLM's embedding cache, writes a checkpoint,
names one: ``wait_for_rank0``, ``from_rank0``) have their own group, bounded by
``distributed_once_timeout_minutes``.
"""

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_distributed(config):
    return not config["single_spec"]


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def launched_by_torchrun():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join_process_group(final):
    """Join (once per process) the group a torchrun or RecBole ``--nproc`` launch set up, and set
    ``device``, ``single_spec``, ``world_size`` and the quiet logging of ranks other than 0."""
    gpu_ids = [g for g in str(final["gpu_id"]).split(",") if g.strip()]
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", final.get("nproc") or 1))
    if len(gpu_ids) >= local_world:  # RecBole's convention; else torchrun's: every visible GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    if launched_by_torchrun():
        final["local_rank"] = int(os.environ["LOCAL_RANK"])
        global_rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        init_method = "env://"
    else:
        global_rank, world = final["local_rank"] + (final.get("offset") or 0), final["world_size"]
        init_method = f"tcp://{final['ip']}:{final['port']}"
    cuda = torch.cuda.is_available() and bool(gpu_ids)
    if cuda:
        torch.cuda.set_device(final["local_rank"])
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            init_method=init_method,
            rank=global_rank,
            world_size=world,
            timeout=_minutes(final, "distributed_timeout_minutes"),
        )
        # the waits for rank 0's lone work (a cache fill, a checkpoint write) get their own group
        # with a longer bound, so that every other collective fails fast on a rank that stops
        # answering
        global _ONCE_GROUP
        _ONCE_GROUP = dist.new_group(timeout=_minutes(final, "distributed_once_timeout_minutes"))
    final.update(
        single_spec=False,
        world_size=world,
        device=torch.device("cuda", final["local_rank"]) if cuda else torch.device("cpu"),
    )
    if global_rank != 0:
        final.update(state="error", show_progress=False, verbose=False)


_ONCE_GROUP = None  # the process group of the waits for rank 0's lone work (join_process_group)
# 120: the longest lone work left is rank 0 encoding the whole catalogue with a frozen Item LLM
# (HLLM's freeze_item_llm, once per cache): for a 7B Item LLM over a million items an hour or more
# on one GPU (estimated from its FLOPs, not measured); a checkpoint write or a name takes seconds
# to minutes
DEFAULT_MINUTES = {"distributed_timeout_minutes": 10, "distributed_once_timeout_minutes": 120}


def _minutes(final, key):
    value = final.get(key)
    return timedelta(minutes=DEFAULT_MINUTES[key] if value is None else value)


def wait_for_rank0():
    """A barrier bounded by ``distributed_once_timeout_minutes``: the others wait while rank 0
    works alone (fills a cache, writes a checkpoint)."""
    if dist.is_initialized():
        dist.barrier(group=_ONCE_GROUP)


def from_rank0(config, obj):
    """``obj`` as rank 0 has it, on every rank (small picklable objects: a path, a file name); the
    others wait for rank 0 at most ``distributed_once_timeout_minutes``."""
    if not is_distributed(config):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0, group=_ONCE_GROUP)
    return holder[0]
