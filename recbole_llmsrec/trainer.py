"""Trainers of this plugin's models. ``get_trainer`` looks here for ``<Model>Trainer`` first."""

import os

import torch
from recbole.trainer import Trainer
from recbole.utils import get_local_time, set_color
from tqdm import tqdm

from recbole_llmsrec.cf_teacher import check_same_data, pretrain_teacher
from recbole_llmsrec.compat import load_checkpoint


class CFTeacherTrainer(Trainer):
    """RecBole's Trainer that first makes sure the model's frozen SASRec teacher is trained.

    With no ``cf_checkpoint`` (and no resumed checkpoint holding the teacher), SASRec is pre-trained
    through RecBole's own Trainer, saved under ``checkpoint_dir`` like any RecBole run, and loaded into
    ``model.cf_model`` before the model's own training starts.
    """

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        self.run_pending_stages(train_data, show_progress)
        return super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                           show_progress=show_progress, callback_fn=callback_fn)

    def run_pending_stages(self, train_data, show_progress):
        """The stages before the model's own training that are not done yet (here: the teacher)."""
        if not bool(self.model.cf_teacher_ready):
            path = pretrain_teacher(self.config, show_progress=show_progress)
            self.model.load_cf_teacher(load_checkpoint(path, map_location=self.device)["state_dict"])


LLMSRecTrainer = CFTeacherTrainer


class ALLMRecTrainer(CFTeacherTrainer):
    """A-LLMRec's stages in order: SASRec (stage 0), alignment (stage 1), then RecBole's own ``fit`` on
    the stage-2 LM loss. Stage 1 has its own ``stage1_epochs``, ``stage1_learning_rate`` and
    ``stage1_batch_size`` and saves ``ALLMRec-stage1-<time>.pth`` (teacher + item encoder) under
    ``checkpoint_dir``; ``stage1_checkpoint`` resumes from it, skipping stages 0 and 1. A RecBole
    ``--checkpoint`` of stage 2 holds both earlier stages too."""

    def run_pending_stages(self, train_data, show_progress):
        path = self.config["stage1_checkpoint"]
        if path and not bool(self.model.stage_done[1]):
            checkpoint = load_checkpoint(path, map_location=self.device)
            state = checkpoint["state"]
            check_same_data(self.config, train_data._dataset, checkpoint["config"],
                            state["cf_model"]["item_embedding.weight"].shape[0], path,
                            key="stage1_checkpoint")
            self.model.load_stage1_state_dict(state)
            self.logger.info(set_color("Stages 0-1 loaded from", "green") + f": {path}")
            return
        super().run_pending_stages(train_data, show_progress)
        if not bool(self.model.stage_done[1]):
            self.train_alignment(train_data._dataset, show_progress)

    def train_alignment(self, dataset, show_progress=False):
        """Stage 1 over every training user once per epoch, shuffled (seeded), one step per batch."""
        model, config = self.model, self.config
        model.prepare_stage1()
        optimizer = torch.optim.Adam(model.stage1_parameters(), lr=config["stage1_learning_rate"])
        rows = dataset.inter_feat
        generator = torch.Generator().manual_seed(config["seed"])
        for epoch in range(config["stage1_epochs"]):
            model.train()
            batches = torch.randperm(len(rows), generator=generator).split(config["stage1_batch_size"])
            total = 0.0
            for index in tqdm(batches, desc=f"stage 1 epoch {epoch}", disable=not show_progress):
                loss = model.stage1_loss(rows[index].to(self.device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            self.logger.info(f"stage 1 epoch {epoch} [alignment loss: {total / len(batches):.4f}]")
        model.finish_stage1()
        path = os.path.join(config["checkpoint_dir"], f"ALLMRec-stage1-{get_local_time()}.pth")
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        torch.save({"config": config, "state": model.stage1_state_dict()}, path)
        self.logger.info(set_color("Stage 1 saved", "blue") + f": {path} (reuse it with "
                         f"stage1_checkpoint: {path})")
        return path


class HLLMTrainer(Trainer):
    """RecBole's Trainer with HLLM's schedule (spec 4): linear warm-up over ``warmup_ratio`` of all
    steps, then cosine decay to 0, stepped after every optimizer step (through an optimizer hook, so
    RecBole's training loop runs unchanged). A resumed run continues the schedule where it stopped."""

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        from transformers import get_cosine_schedule_with_warmup

        total = self.epochs * len(train_data)
        scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, int(self.config["warmup_ratio"] * total), total)
        for _ in range(self.start_epoch * len(train_data)):
            scheduler.step()
        self.scheduler = scheduler
        hook = self.optimizer.register_step_post_hook(lambda *_: scheduler.step())
        try:
            return super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                               show_progress=show_progress, callback_fn=callback_fn)
        finally:
            hook.remove()
