"""A-LLMRec's stages as one trainer: the CF teacher (0), the alignment (1), then RecBole's ``fit``
(2)."""

import os

import torch
from recbole.utils import set_color
from tqdm import tqdm

from recbole_llmsrec.checkpoints import (
    check_checkpoint_data,
    data_ids,
    load_checkpoint,
    unique_checkpoint_path,
)
from recbole_llmsrec.distribution.process_group import run_once
from recbole_llmsrec.models.cf_teacher.stage0 import check_same_data
from recbole_llmsrec.models.cf_teacher.trainer import CFTeacherTrainer
from recbole_llmsrec.safe_write import atomic_torch_save
from recbole_llmsrec.training.trainer import adam_betas


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
            path = run_once(
                self.config, lambda: self.train_alignment(train_data._dataset, show_progress)
            )
            if not bool(self.model.stage_done[1]):  # a rank that waited for rank 0's stage 1
                self.model.load_stage1_state_dict(
                    load_checkpoint(path, map_location=self.device)["state"]
                )

    def train_alignment(self, dataset, show_progress=False):
        """Stage 1 over every training user once per epoch, shuffled (seeded), one step per
        batch."""
        model, config = self.model, self.config
        self.logger.info(
            set_color("Stage 1 (alignment)", "green") + f": {config['stage1_epochs']} epochs "
            f"over {len(dataset.inter_feat)} training users, batch {config['stage1_batch_size']}"
        )
        model.prepare_stage1()
        optimizer = torch.optim.Adam(
            model.stage1_parameters(), lr=config["stage1_learning_rate"], **adam_betas(config)
        )
        rows = dataset.inter_feat
        generator = torch.Generator().manual_seed(config["seed"])
        for epoch in range(config["stage1_epochs"]):
            model.train()
            batches = torch.randperm(len(rows), generator=generator).split(
                config["stage1_batch_size"]
            )
            total = 0.0
            for index in tqdm(batches, desc=f"stage 1 epoch {epoch}", disable=not show_progress):
                loss = model.stage1_loss(rows[index].to(self.device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            self.logger.info(f"stage 1 epoch {epoch} [alignment loss: {total / len(batches):.4f}]")
        model.finish_stage1()
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        path = unique_checkpoint_path(config["checkpoint_dir"], "ALLMRec-stage1")
        atomic_torch_save(
            {"config": config, "state": model.stage1_state_dict(), "data": self.data_ids}, path
        )
        self.logger.info(
            set_color("Stage 1 saved", "blue") + f": {path} (reuse it with "
            f"stage1_checkpoint: {path})"
        )
        return path
