"""A-LLMRec's stages as one trainer: the CF teacher (0), the alignment (1), then RecBole's ``fit``
(2). In a distributed run every rank trains each stage: stage 0 through the plugin's ``Trainer``
(``CFTeacherTrainer``), stage 1 here with DDP over its modules."""

import os

import torch
import torch.distributed as dist
from recbole.utils import set_color
from tqdm import tqdm

from recbole_llmsrec.checkpoints import (
    check_checkpoint_data,
    data_ids,
    load_checkpoint,
    unique_checkpoint_path,
)
from recbole_llmsrec.distribution.process_group import (
    from_rank0,
    is_distributed,
    rank,
    wait_for_rank0,
)
from recbole_llmsrec.distribution.wrapping import wrap_ddp
from recbole_llmsrec.models.cf_teacher.stage0 import check_same_data
from recbole_llmsrec.models.cf_teacher.trainer import CFTeacherTrainer
from recbole_llmsrec.safe_write import atomic_torch_save
from recbole_llmsrec.training.trainer import adam_betas


def stage1_share(index, config):
    """``(rows, fraction)``: the rows of the global batch ``index`` this rank computes the stage-1
    loss on, and the fraction of the batch they stand for. With W processes rank r takes part r of
    ``index.tensor_split(W)`` (contiguous parts whose sizes differ by at most one), fraction
    ``len(part) / len(index)``. The stage-1 loss is a mean over rows, so the sum over ranks of
    fraction x loss is the whole batch's loss, and DDP's average over ranks of the gradients of W x
    fraction x loss is its gradient. A rank whose part is empty (a last batch smaller than W)
    computes the batch's first row with fraction 0: every rank runs the same forwards and backwards.
    One process: ``(index, 1.0)``."""
    if not is_distributed(config):
        return index, 1.0
    part = index.tensor_split(dist.get_world_size())[rank()]
    return (part, len(part) / len(index)) if len(part) else (index[:1], 0.0)


class ALLMRecTrainer(CFTeacherTrainer):
    """A-LLMRec's stages: SASRec (0), alignment (1, with its own ``stage1_*`` keys; saves teacher +
    item encoder as ``ALLMRec-stage1-<time>.pth``, which ``stage1_checkpoint`` resumes from,
    skipping 0 and 1), then RecBole's ``fit`` on the stage-2 LM loss. A stage-2 ``--checkpoint``
    holds all stages."""

    def run_pending_stages(self, train_data, show_progress):
        path = self.config["stage1_checkpoint"]
        if path and not bool(self.model.stage_done[1]):
            checkpoint = load_checkpoint(path, map_location=self.device)
            state = checkpoint["state"]
            rows = state["cf_model"]["item_embedding.weight"].shape[0]
            check_same_data(
                self.config,
                checkpoint["config"],
                rows,
                self.model.cf_model.item_embedding.num_embeddings,
                path,
                key="stage1_checkpoint",
            )
            check_checkpoint_data(
                checkpoint.get("data"), data_ids(train_data._dataset), path, "stage1_checkpoint"
            )
            self.model.load_stage1_state_dict(state)
            self.logger.info(set_color("Stages 0-1 loaded from", "green") + f": {path}")
            return
        super().run_pending_stages(train_data, show_progress)
        if not bool(self.model.stage_done[1]):
            self.train_alignment(train_data._dataset, show_progress)

    def train_alignment(self, dataset, show_progress=False):
        """Stage 1 over every training user once per epoch, shuffled (seeded), one optimizer step
        per global batch of ``stage1_batch_size`` users; returns the stage-1 checkpoint's path.

        In a distributed run every rank draws the same permutation (seeded with ``seed``), so all
        ranks step through the same global batches, the same number of steps; each computes the
        loss on its share of every batch (``stage1_share``; its negatives drawn by its own
        generator, as in stage 2) and DDP over the stage-1 modules (``stage1_modules``: weights
        broadcast from rank 0 first) averages the gradients, so every rank ends with the same
        weights. Its collectives, and the all-reduce of each epoch's logged loss, wait at most
        ``distributed_timeout_minutes``. With one process the share is the whole batch, fraction
        1: exactly the one-process loop."""
        model, config = self.model, self.config
        self.logger.info(
            set_color("Stage 1 (alignment)", "green") + f": {config['stage1_epochs']} epochs "
            f"over {len(dataset.inter_feat)} training users, batch {config['stage1_batch_size']}"
        )
        model.prepare_stage1()
        loss_of = self._stage1_loss_function()
        optimizer = torch.optim.Adam(
            model.stage1_parameters(), lr=config["stage1_learning_rate"], **adam_betas(config)
        )
        generator = torch.Generator().manual_seed(config["seed"])
        for epoch in range(config["stage1_epochs"]):
            model.train()
            batches = torch.randperm(len(dataset.inter_feat), generator=generator).split(
                config["stage1_batch_size"]
            )
            progress = tqdm(batches, desc=f"stage 1 epoch {epoch}", disable=not show_progress)
            loss = self._alignment_epoch(dataset, progress, loss_of, optimizer)
            self.logger.info(f"stage 1 epoch {epoch} [alignment loss: {loss / len(batches):.4f}]")
        model.finish_stage1()
        return self._save_stage1()

    def _stage1_loss_function(self):
        """``model.stage1_loss``; in a distributed run called through DDP over the stage-1
        modules."""
        model = self.model
        if not is_distributed(self.config):
            return model.stage1_loss
        ddp = wrap_ddp(model.stage1_modules(), self.config)
        return lambda interaction: ddp(interaction, model.stage1_loss)

    def _alignment_epoch(self, dataset, batches, loss_of, optimizer):
        """One optimizer step per global batch of ``dataset``'s rows (read as its loaders read
        them, ``dataset[rows]``, without the item features: a compact split gathers the item lists
        there); returns the sum over batches of each global batch's loss (every rank's share,
        all-reduced)."""
        distributed = is_distributed(self.config)
        world, total = dist.get_world_size() if distributed else 1, 0.0
        for index in batches:
            share, fraction = stage1_share(index, self.config)
            loss = loss_of(dataset.__getitem__(share, join=False).to(self.device))
            optimizer.zero_grad()
            (loss * (fraction * world)).backward()  # one process: loss x 1.0, bit for bit
            optimizer.step()
            total += loss.item() * fraction
        if not distributed:
            return total
        summed = torch.tensor(total, dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)  # the default group: at most distributed_timeout_minutes
        return summed.item()

    def _save_stage1(self):
        """Rank 0 writes the stage-1 checkpoint; every rank gets its path once it is on disk."""
        config = self.config
        path = from_rank0(
            config, unique_checkpoint_path(config["checkpoint_dir"], "ALLMRec-stage1")
        )
        if rank() == 0:
            os.makedirs(config["checkpoint_dir"], exist_ok=True)
            state = {
                "config": config,
                "state": self.model.stage1_state_dict(),
                "data": self.data_ids,
            }
            atomic_torch_save(state, path)
            self.logger.info(
                set_color("Stage 1 saved", "blue") + f": {path} (reuse it with "
                f"stage1_checkpoint: {path})"
            )
        if is_distributed(config):
            wait_for_rank0()  # bounded by distributed_once_timeout_minutes: rank 0 writes alone
        return path
