"""The training loop of every model run through the plugin: RecBole's epoch with gradient
accumulation, DDP or FSDP, and the batch-size bookkeeping of several processes."""

import contextlib

import torch
import torch.distributed as dist
from recbole.utils import get_gpu_usage, set_color
from torch.nn.utils.clip_grad import clip_grad_norm_
from tqdm import tqdm

from recbole_llmsrec.distribution.process_group import is_distributed
from recbole_llmsrec.distribution.wrapping import is_fsdp, wrap_ddp
from recbole_llmsrec.hooks import model_hook
from recbole_llmsrec.settings import require_at_least

TRAINERS_WITH_OWN_LOOP = ("NCLTrainer",)  # RecBole's: its _train_epoch drives RecBole's own DDP


@contextlib.contextmanager
def per_process_batch(config):
    """``train_batch_size`` x world size while RecBole's loaders, which divide it by that, are
    built."""
    batch = config["train_batch_size"]
    if is_distributed(config):
        config["train_batch_size"] = batch * config["world_size"]
    try:
        yield
    finally:
        config["train_batch_size"] = batch


def same_forward_count(batches, filler, config):
    """``batches`` followed by as many ``filler`` batches as make every rank's count equal. Under
    FSDP a rank that ran fewer forwards of a sharded layer than another would leave its collectives
    waiting; the caller adds the fillers' outputs to its loss with weight 0 (their backward must run
    too)."""
    if not is_distributed(config) or config["distributed_strategy"] != "fsdp":
        return batches, 0
    count = torch.tensor([len(batches)], device=config["device"])
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    extra = int(count) - len(batches)
    return batches + [filler] * extra, extra


def accumulation_steps(config):
    steps = config["gradient_accumulation_steps"]
    return 1 if steps is None else require_at_least(config, "gradient_accumulation_steps", 1)


def train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
    """RecBole's ``Trainer._train_epoch`` with gradient accumulation and the plugin's DDP/FSDP. With
    one process and ``gradient_accumulation_steps: 1`` it computes exactly what RecBole's does."""
    self.model.train()
    loss_func = loss_func or self.model.calculate_loss
    steps, batches = accumulation_steps(self.config), len(train_data)
    ddp = _ddp_model(self, train_data, epoch_idx)
    iter_data = (
        tqdm(train_data, total=batches, ncols=100, desc=set_color(f"Train {epoch_idx:>5}", "pink"))
        if show_progress
        else train_data
    )
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
            loss, total_loss = _summed(losses, total_loss)
            self._check_nan(loss)
            scaler.scale(loss / group_size).backward()
        if last_of_group:
            _optimizer_step(self, scaler)
        if self.gpu_available and show_progress:
            iter_data.set_postfix_str(set_color("GPU RAM: " + get_gpu_usage(self.device), "yellow"))
    return total_loss


def _ddp_model(trainer, train_data, epoch_idx):
    """The trainer's DDP wrapper in a distributed DDP run (made at the first step: earlier stages
    may change what trains), else None; the distributed sampler is set to the epoch."""
    if not is_distributed(trainer.config):
        return None
    if getattr(train_data, "shuffle", False):
        train_data.sampler.set_epoch(epoch_idx)
    if not is_fsdp(trainer.model) and trainer.ddp_model is None:
        trainer.ddp_model = wrap_ddp(trainer.model, trainer.config)
    return trainer.ddp_model


def _summed(losses, total_loss):
    """``(loss to back-propagate, running total)``: RecBole's bookkeeping of one or several
    losses."""
    if not isinstance(losses, tuple):
        return losses, losses.item() if total_loss is None else total_loss + losses.item()
    values = tuple(per_loss.item() for per_loss in losses)
    total = values if total_loss is None else tuple(map(sum, zip(total_loss, values)))
    return sum(losses), total


def _optimizer_step(trainer, scaler):
    """One optimizer step (gradients clipped as RecBole does), then the model's hook."""
    if trainer.clip_grad_norm:
        clip_grad_norm_(trainer.model.parameters(), **trainer.clip_grad_norm)
    scaler.step(trainer.optimizer)
    scaler.update()
    trainer.optimizer.zero_grad()
    after_step = model_hook(trainer.model, "after_optimizer_step")
    if after_step is not None:
        after_step()
