"""Wrapping a model for several processes: DDP over what trains, FSDP2 sharding (HLLM), and state
dicts in the one-process format whatever the wrapping."""

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import (
    FSDPModule,
    MixedPrecisionPolicy,
    fully_shard,
    register_fsdp_forward_method,
)
from torch.nn.parallel import DistributedDataParallel

from recbole_llmsrec.distribution.process_group import rank
from recbole_llmsrec.hooks import model_hook
from recbole_llmsrec.registry import entry_of, is_plugin_model


class LossForward(nn.Module):
    """``model.calculate_loss`` (or another loss function of it) as a ``forward``, for DDP's
    hooks."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, interaction, loss_func):
        return loss_func(interaction)


def wrap_ddp(model, config):
    """DDP over the trainable parameters (frozen ones never broadcast or bucketed), called as
    ``ddp(interaction, loss_func)``. Plugin models use every trained parameter each step and hold
    only constant buffers (ignored too); RecBole's, and any other module (A-LLMRec's stage-1
    modules, whose text encoder's pooler never trains), are wrapped as RecBole wrapped its models:
    buffers broadcast from rank 0, SyncBatchNorm on GPU, unused parameters allowed (KTUP, KGAT).
    Its collectives wait at most ``distributed_timeout_minutes``."""
    plugin = is_plugin_model(type(model))
    if not plugin and config["device"].type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    wrapper = LossForward(model)
    ignored = [n for n, p in wrapper.named_parameters() if not p.requires_grad]
    ignored += [n for n, _ in wrapper.named_buffers()] if plugin else []
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(wrapper, ignored)
    device_ids = [config["local_rank"]] if config["device"].type == "cuda" else None
    return DistributedDataParallel(
        wrapper,
        device_ids=device_ids,
        broadcast_buffers=not plugin,
        find_unused_parameters=not plugin,
    )


def shard_fsdp(model, config):
    """FSDP2 on ``model`` in place: a unit per transformer layer with a trainable parameter, the
    rest the root; ``calculate_loss``/``predict``/``full_sort_predict`` gather like ``forward``.
    Only models whose registry entry allows it (``fsdp``: their LLMs train) are sharded; the
    settings check refuses the key earlier for a run, this for a direct call."""
    entry = entry_of(type(model).__name__)
    if model_hook(model, "unsaved_prefixes") or not (entry and entry.fsdp):
        raise ValueError(
            "distributed_strategy: fsdp is for models whose LLMs train (HLLM); "
            f"{type(model).__name__} fits one GPU or trains only small modules next to a frozen "
            "LLM: "
            "use distributed_strategy: ddp."
        )
    dtype = config["mixed_precision"]
    policy = (
        MixedPrecisionPolicy(param_dtype=getattr(torch, dtype), reduce_dtype=torch.float32)
        if dtype and config["device"].type == "cuda"
        else MixedPrecisionPolicy()
    )
    layer_classes = {
        name for m in model.modules() for name in getattr(m, "_no_split_modules", None) or ()
    }
    for module in model.modules():
        if type(module).__name__ in layer_classes and any(
            p.requires_grad for p in module.parameters()
        ):
            fully_shard(module, mp_policy=policy)
    # frozen parameters (a frozen Item LLM) are replicated, never gathered: rank 0 alone may run
    # them
    fully_shard(
        model,
        mp_policy=policy,
        ignored_params={p for p in model.parameters() if not p.requires_grad},
    )
    staged = (
        ("full_sort_predict_excluding",) if model_hook(model, "full_sort_predict_excluding") else ()
    )
    for method in ("calculate_loss", "predict", "full_sort_predict", *staged):
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
    return {
        "state": {key[k]: value for k, value in optimizer_state.get("state", {}).items()},
        "param_groups": [
            {**g, "params": [key[k] for k in g["params"]]} for g in optimizer_state["param_groups"]
        ],
    }


def full_training_state(model, optimizer):
    """``(state_dict, optimizer_state)`` in the single-process format; under FSDP a collective every
    rank calls (rank 0 gets the full tensors, on CPU)."""
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
