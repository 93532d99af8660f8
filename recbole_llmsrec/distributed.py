"""torch.distributed for every model run through the plugin, RecBole's and ours (README "Multi-GPU and
multi-node"; RecBole's ``single_spec`` decides): process group, DDP/FSDP2 training with accumulation,
evaluation over every rank's rows, once-per-job work and one-process checkpoints."""

import contextlib
import math
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.nn.parallel import DistributedDataParallel

from recbole_llmsrec.compat import load_checkpoint

STRATEGIES = ("ddp", "fsdp")
TRAINERS_WITH_OWN_LOOP = ("NCLTrainer",)  # RecBole's: its _train_epoch drives RecBole's own DDP


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
        dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=global_rank,
                                world_size=world, timeout=_minutes(final, "distributed_timeout_minutes"))
        # the once-per-job waits (rank 0 trains the teacher or fills a cache alone) get their own group
        # with a longer bound, so that every other collective fails fast on a rank that stops answering
        global _ONCE_GROUP
        _ONCE_GROUP = dist.new_group(timeout=_minutes(final, "distributed_once_timeout_minutes"))
    final.update(single_spec=False, world_size=world,
                 device=torch.device("cuda", final["local_rank"]) if cuda else torch.device("cpu"))
    if global_rank != 0:
        final.update(state="error", show_progress=False, verbose=False)


_ONCE_GROUP = None  # the process group of the once-per-job waits (join_process_group)
DEFAULT_MINUTES = {"distributed_timeout_minutes": 10, "distributed_once_timeout_minutes": 120}


def _minutes(final, key):
    value = final.get(key)
    return timedelta(minutes=DEFAULT_MINUTES[key] if value is None else value)


def wait_for_rank0():
    """A barrier bounded by ``distributed_once_timeout_minutes``: the others wait while rank 0 works."""
    if dist.is_initialized():
        dist.barrier(group=_ONCE_GROUP)


def as_single_process(config):
    """``config`` made a one-process run's, for work one rank does alone (``run_once``)."""
    config.final_config_dict.update(single_spec=True, world_size=1)
    return config


def from_rank0(config, obj):
    """``obj`` as rank 0 has it, on every rank (small picklable objects: a path, a file name); the others
    wait for rank 0 at most ``distributed_once_timeout_minutes``."""
    if not is_distributed(config):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0, group=_ONCE_GROUP)
    return holder[0]


@contextlib.contextmanager
def per_process_batch(config):
    """``train_batch_size`` x world size while RecBole's loaders, which divide it by that, are built."""
    batch = config["train_batch_size"]
    if is_distributed(config):
        config["train_batch_size"] = batch * config["world_size"]
    try:
        yield
    finally:
        config["train_batch_size"] = batch


def run_once(config, work):
    """``work()`` on rank 0 only; every rank gets its small result (waits at most
    ``distributed_once_timeout_minutes``)."""
    if not is_distributed(config):
        return work()
    return from_rank0(config, work() if rank() == 0 else None)


def _all_gather(tensor):
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def sharded_rows(compute, items, config):
    """``compute(items)`` over equal, disjoint slices per rank (the last padded with the last item, so
    every rank runs the same forwards), all-gathered."""
    if not is_distributed(config):
        return compute(items)
    world = dist.get_world_size()
    per_rank = math.ceil(len(items) / world)
    mine = items[rank() * per_rank:(rank() + 1) * per_rank]
    mine = torch.cat([mine, items[-1:].expand(per_rank - len(mine))])
    return torch.cat(_all_gather(compute(mine)))[:len(items)]


def same_forward_count(batches, filler, config):
    """``batches`` followed by as many ``filler`` batches as make every rank's count equal. Under FSDP a
    rank that ran fewer forwards of a sharded layer than another would leave its collectives waiting;
    the caller adds the fillers' outputs to its loss with weight 0 (their backward must run too)."""
    if not is_distributed(config) or config["distributed_strategy"] != "fsdp":
        return batches, 0
    count = torch.tensor([len(batches)], device=config["device"])
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    extra = int(count) - len(batches)
    return batches + [filler] * extra, extra


TARGET_KEY = "rec.target_item"  # each row's target, for eval_item_groups
EVAL_ROW_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label", TARGET_KEY)


def gather_eval_rows(struct, total_rows):
    """Every rank's per-row tensors of RecBole's evaluation ``DataStruct``, in single-process order:
    RecBole's ``DistributedSampler`` (no shuffle) gives rank r rows r, r + W, ... of the list padded to a
    multiple of W with its start, so interleaving the ranks and cutting at ``total_rows`` restores it."""
    world = dist.get_world_size()
    per_rank = math.ceil(total_rows / world)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    for key in (key for key in EVAL_ROW_KEYS if key in struct):
        local = struct[key]
        if len(local) != per_rank:
            raise RuntimeError(f"distributed evaluation: rank {rank()} has {len(local)} rows of {key}, "
                               f"expected {per_rank}; this evaluation mode gives several rows per sample.")
        rows = torch.stack(_all_gather(local.to(device)), dim=1)
        struct.set(key, rows.reshape(world * per_rank, *local.shape[1:])[:total_rows].cpu())
    return struct


class LossForward(nn.Module):
    """``model.calculate_loss`` (or another loss function of it) as a ``forward``, for DDP's hooks."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, interaction, loss_func):
        return loss_func(interaction)


def wrap_ddp(model, config):
    """DDP over the trainable parameters (frozen ones never broadcast or bucketed). Plugin models use every
    trained parameter each step and hold only constant buffers (ignored too); RecBole's are wrapped as it
    did: buffers broadcast from rank 0, SyncBatchNorm on GPU, unused parameters allowed (KTUP, KGAT)."""
    from recbole_llmsrec.utils import is_plugin_model

    plugin = is_plugin_model(type(model))
    if not plugin and config["device"].type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    wrapper = LossForward(model)
    ignored = [n for n, p in wrapper.named_parameters() if not p.requires_grad]
    ignored += [n for n, _ in wrapper.named_buffers()] if plugin else []
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(wrapper, ignored)
    device_ids = [config["local_rank"]] if config["device"].type == "cuda" else None
    return DistributedDataParallel(wrapper, device_ids=device_ids, broadcast_buffers=not plugin,
                                   find_unused_parameters=not plugin)


def shard_fsdp(model, config):
    """FSDP2 on ``model`` in place: a unit per transformer layer with a trainable parameter, the rest the
    root; ``calculate_loss``/``predict``/``full_sort_predict`` gather like ``forward``."""
    from recbole_llmsrec.utils import is_plugin_model

    if getattr(model, "unsaved_prefixes", None) or not is_plugin_model(type(model)):
        raise ValueError(f"distributed_strategy: fsdp is for models whose LLMs train (HLLM); "
                         f"{type(model).__name__} fits one GPU or trains only small modules next to a "
                         "frozen LLM: use distributed_strategy: ddp.")
    dtype = config["mixed_precision"]
    policy = MixedPrecisionPolicy(param_dtype=getattr(torch, dtype), reduce_dtype=torch.float32) \
        if dtype and config["device"].type == "cuda" else MixedPrecisionPolicy()
    layer_classes = {name for m in model.modules() for name in getattr(m, "_no_split_modules", None) or ()}
    for module in model.modules():
        if type(module).__name__ in layer_classes and any(p.requires_grad for p in module.parameters()):
            fully_shard(module, mp_policy=policy)
    # frozen parameters (a frozen Item LLM) are replicated, never gathered: rank 0 alone may run them
    fully_shard(model, mp_policy=policy, ignored_params={p for p in model.parameters() if not p.requires_grad})
    for method in ("calculate_loss", "predict", "full_sort_predict"):
        register_fsdp_forward_method(model, method)
    return model


def is_fsdp(model):
    return isinstance(model, FSDPModule)


FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _optimizer_index(model, optimizer):
    """Parameter name -> the integer id ``Optimizer.state_dict`` gives it in one process."""
    names = {id(p): n for n, p in model.named_parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {names[id(p)]: i for i, p in enumerate(params)}


def _renamed(optimizer_state, key):
    """An optimizer state dict with every parameter key ``k`` replaced by ``key[k]``."""
    return {"state": {key[k]: value for k, value in optimizer_state.get("state", {}).items()},
            "param_groups": [{**g, "params": [key[k] for k in g["params"]]}
                             for g in optimizer_state["param_groups"]]}


def full_training_state(model, optimizer):
    """``(state_dict, optimizer_state)`` in the single-process format; under FSDP a collective every rank
    calls (rank 0 gets the full tensors, on CPU)."""
    if not is_fsdp(model):
        return model.state_dict(), optimizer.state_dict()
    state = get_model_state_dict(model, options=FULL)
    by_name = get_optimizer_state_dict(model, optimizer, options=FULL)
    if rank() != 0:
        return state, by_name  # empty: only rank 0 receives the gathered tensors
    return state, _renamed(by_name, _optimizer_index(model, optimizer))


def load_full_state(model, state_dict):
    """Load a single-process state dict into ``model``, sharded or not."""
    if not is_fsdp(model):
        return model.load_state_dict(state_dict)
    return set_model_state_dict(model, state_dict, options=FULL)


def load_full_optimizer_state(model, optimizer, optimizer_state):
    if not is_fsdp(model):
        return optimizer.load_state_dict(optimizer_state)
    # the saved hyper-parameters first, as Optimizer.load_state_dict does: torch's loader only fills
    # keys the groups already have (a schedule's initial_lr is in the file, not yet in the groups)
    for group, saved in zip(optimizer.param_groups, optimizer_state["param_groups"]):
        group.update({key: value for key, value in saved.items() if key != "params"})
    name = {i: n for n, i in _optimizer_index(model, optimizer).items()}
    set_optimizer_state_dict(model, optimizer, _renamed(optimizer_state, name), options=FULL)


def accumulation_steps(config):
    from recbole_llmsrec.config import require_at_least

    steps = config["gradient_accumulation_steps"]
    return 1 if steps is None else require_at_least(config, "gradient_accumulation_steps", 1)


def train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
    """RecBole's ``Trainer._train_epoch`` with gradient accumulation and the plugin's DDP/FSDP. With one
    process and ``gradient_accumulation_steps: 1`` it computes exactly what RecBole's does."""
    from recbole.utils import get_gpu_usage, set_color
    from torch.nn.utils.clip_grad import clip_grad_norm_
    from tqdm import tqdm

    self.model.train()
    loss_func = loss_func or self.model.calculate_loss
    steps, batches = accumulation_steps(self.config), len(train_data)
    distributed = is_distributed(self.config)
    if distributed and getattr(train_data, "shuffle", False):
        train_data.sampler.set_epoch(epoch_idx)
    if distributed and not is_fsdp(self.model) and getattr(self, "ddp_model", None) is None:
        self.ddp_model = wrap_ddp(self.model, self.config)  # now: earlier stages may change what trains
    ddp = getattr(self, "ddp_model", None)
    iter_data = tqdm(train_data, total=batches, ncols=100, desc=set_color(f"Train {epoch_idx:>5}", "pink")) \
        if show_progress else train_data
    scaler = torch.amp.GradScaler(enabled=self.enable_scaler)
    total_loss = None
    self.optimizer.zero_grad()
    for batch_idx, interaction in enumerate(iter_data):
        interaction = interaction.to(self.device)
        group_start = batch_idx - batch_idx % steps
        group_size = min(steps, batches - group_start)
        last_of_group = batch_idx == group_start + group_size - 1
        # DDP synchronises on a group's last batch; FSDP reduce-scatters after every batch (keeping
        # unsharded gradients between batches would undo its memory saving)
        with ddp.no_sync() if ddp is not None and not last_of_group else contextlib.nullcontext():
            with torch.autocast(device_type=self.device.type, enabled=self.enable_amp):
                losses = loss_func(interaction) if ddp is None else ddp(interaction, loss_func)
            if isinstance(losses, tuple):
                loss = sum(losses)
                loss_tuple = tuple(per_loss.item() for per_loss in losses)
                total_loss = loss_tuple if total_loss is None else tuple(map(sum, zip(total_loss, loss_tuple)))
            else:
                loss = losses
                total_loss = losses.item() if total_loss is None else total_loss + losses.item()
            self._check_nan(loss)
            scaler.scale(loss / group_size).backward()
        if last_of_group:
            if self.clip_grad_norm:
                clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            scaler.step(self.optimizer)
            scaler.update()
            self.optimizer.zero_grad()
            if hasattr(self.model, "after_optimizer_step"):
                self.model.after_optimizer_step()
        if self.gpu_available and show_progress:
            iter_data.set_postfix_str(set_color("GPU RAM: " + get_gpu_usage(self.device), "yellow"))
    return total_loss


class DistributedTrainer:
    """Trainer mixin: FSDP set-up, rank 0's checkpoint name, metrics over all ranks' rows, sharded loading."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.saved_model_file = from_rank0(config, self.saved_model_file)
        batch = [config["train_batch_size"], accumulation_steps(config), dist.get_world_size()
                 if is_distributed(config) else 1]
        self.logger.info(f"global batch = train_batch_size x gradient_accumulation_steps x processes = "
                         f"{' x '.join(map(str, batch))} = {math.prod(batch)}")
        if (config["distributed_strategy"] or "ddp") not in STRATEGIES:
            raise ValueError(f"distributed_strategy={config['distributed_strategy']!r} is not one of "
                             f"{STRATEGIES}.")
        if not is_distributed(config):
            return
        if any(c.__name__ in TRAINERS_WITH_OWN_LOOP for c in type(self).__mro__):
            raise ValueError(f"{type(self).__name__} trains with its own loop, which recbole_llmsrec "
                             "does not distribute: run it in one process.")
        if config["distributed_strategy"] == "fsdp":
            shard_fsdp(self.model, config)
            self.optimizer = self._build_optimizer()  # over the sharded parameters
        collect = self.eval_collector.get_data_struct
        self.eval_collector.get_data_struct = lambda: gather_eval_rows(collect(), self._eval_rows)

    def _map_reduce(self, result, num_sample):
        return result  # computed from every rank's rows already: RecBole's averaging would skew it

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file)  # CPU, memory-mapped: not a full copy per GPU
            load_full_state(self.model, checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        self._eval_rows = eval_data.sample_size
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def resume_checkpoint(self, resume_file):
        if not is_fsdp(self.model):
            return super().resume_checkpoint(resume_file)
        self.saved_model_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file)
        self.start_epoch, self.cur_step = checkpoint["epoch"] + 1, checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        load_full_state(self.model, checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        load_full_optimizer_state(self.model, self.optimizer, checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")
