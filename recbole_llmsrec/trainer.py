"""Trainers of this plugin's models (``get_trainer`` looks here first). Every trainer handed out, RecBole's
too, gets ``extend_trainer``'s mixins and, with the schedule keys unset, trains exactly as RecBole's."""

import functools
import math
import os
import warnings

import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import set_color
from tqdm import tqdm

from recbole_llmsrec.cf_teacher import check_same_data, pretrain_teacher
from recbole_llmsrec.checkpoint_data import check_checkpoint_data, data_ids
from recbole_llmsrec.compat import atomic_torch_save, load_checkpoint, unique_checkpoint_path
from recbole_llmsrec.distributed import DistributedTrainer, accumulation_steps, run_once
from recbole_llmsrec.evaluation import (EvaluationResults, PerUserSampledEvaluation,
                                        StagedFullSortEvaluation)


def adam_betas(config):
    """``adam_betas`` as keyword arguments for torch's Adam/AdamW (none: torch's defaults)."""
    betas = config["adam_betas"]
    return {"betas": tuple(float(b) for b in betas)} if betas else {}


def epoch_parts(config, loader):
    """How many parts an epoch of ``loader`` is cut into: ``validations_per_epoch``, at most one per batch."""
    return max(1, min(config["validations_per_epoch"] or 1, len(loader)))


def batches_before(part_index, batches, parts):
    """Batches trained before part ``part_index`` (RecBole's epoch counter when an epoch of ``batches``
    batches is cut into ``parts`` parts): whole epochs, then the earlier parts of the current one."""
    epochs, part = divmod(part_index, parts)
    return epochs * batches + sum(batches // parts + (p < batches % parts) for p in range(part))


def optimizer_steps_before(part_index, batches, parts, accumulation):
    """Optimizer steps taken before part ``part_index`` when each part's batches are grouped by
    ``gradient_accumulation_steps`` (a part's last group may be shorter)."""
    epochs, part = divmod(part_index, parts)
    per_part = [math.ceil((batches_before(p + 1, batches, parts) - batches_before(p, batches, parts))
                          / accumulation) for p in range(parts)]
    return epochs * sum(per_part) + sum(per_part[:part])


class EpochInParts:
    """A training loader as ``parts`` consecutive parts per (shuffled) pass: each iteration yields the next
    part, so RecBole's loop validates ``parts`` times per real epoch and still sees every sample once."""

    def __init__(self, loader, parts, start_part=0):
        self.loader, self.parts = loader, parts
        self._part, self._iterator = start_part % parts, None

    def _size(self, part):
        return batches_before(part + 1, len(self.loader), self.parts) - batches_before(
            part, len(self.loader), self.parts)

    def __len__(self):
        return self._size(self._part)

    def __iter__(self):
        if self._iterator is None or self._part == 0:
            self._iterator = iter(self.loader)
            for _ in range(batches_before(self._part, len(self.loader), self.parts)):  # resumed
                next(self._iterator)
        for _ in range(self._size(self._part)):
            yield next(self._iterator)
        self._part = (self._part + 1) % self.parts

    def __getattr__(self, name):
        if name == "loader":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


class ValidationSchedule:
    """Trainer mixin for LLM-SRec's schedule (spec ``llmsrec.md`` 6), any model: ``validations_per_epoch`` k
    cuts each epoch in k parts, so RecBole's epoch counter, ``eval_step`` and ``stopping_step`` count
    validations (the original validated ~11 times per epoch); ``lr_decay_per_validation`` gamma: LR
    ``learning_rate * gamma ** i`` after validation i; ``adam_betas`` (RecBole's optimizer has none)."""

    def _build_optimizer(self, **kwargs):
        optimizer = super()._build_optimizer(**kwargs)
        betas = adam_betas(self.config)
        if betas:
            if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
                raise ValueError(f"adam_betas is set but learner={self.config['learner']!r} is not "
                                 "adam or adamw.")
            for group in optimizer.param_groups:
                group.update(betas)
        return optimizer

    def _decay_learning_rate(self, validations):
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * self.config["lr_decay_per_validation"] ** validations

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        if (self.config["validations_per_epoch"] or 1) < 1:
            raise ValueError(f"validations_per_epoch must be >= 1, got "
                             f"{self.config['validations_per_epoch']}.")
        parts = epoch_parts(self.config, train_data)
        if parts > 1:
            train_data = EpochInParts(train_data, parts, start_part=self.start_epoch)
            self.epochs = self.config["epochs"] * parts
            self.eval_step = min(self.config["eval_step"], self.epochs)
            self.logger.info(f"Validating {parts} times per epoch: each RecBole epoch below is "
                             f"1/{parts} of an epoch.")
        if self.config["lr_decay_per_validation"] not in (None, 1, 1.0) and self.eval_step > 0:
            self._decay_learning_rate(self.start_epoch // self.eval_step)
            then = callback_fn

            def callback_fn(epoch_idx, valid_score):
                self._decay_learning_rate((epoch_idx + 1) // self.eval_step)
                if then:
                    then(epoch_idx, valid_score)
        return super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                           show_progress=show_progress, callback_fn=callback_fn)


class CollisionFreeCheckpointName:
    """Trainer mixin: checkpoint ``{model}-{time}-{random}.pth`` (see ``compat.unique_checkpoint_path``)."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.saved_model_file = unique_checkpoint_path(self.checkpoint_dir, config["model"])


class CheckpointDataIds:
    """Trainer mixin: the checkpoints it writes carry the ids of the data it trains on (``data_ids``,
    set by ``run_recbole`` with the fingerprint, else taken from the training split here)."""

    data_ids = None

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        if self.data_ids is None:
            self.data_ids = data_ids(train_data._dataset)
        return super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                           show_progress=show_progress, callback_fn=callback_fn)


@functools.cache
def extend_trainer(trainer_class):
    """``trainer_class`` with the plugin's evaluation, schedule and distributed mixins (RecBole's trainers
    that do not derive from its ``Trainer``, e.g. the decision-tree ones, are returned unchanged)."""
    if not issubclass(trainer_class, RecBoleTrainer) or issubclass(trainer_class, ValidationSchedule):
        return trainer_class
    # DistributedTrainer first: its __init__ shares rank 0's checkpoint name, chosen by the next one
    mixins = (DistributedTrainer, CollisionFreeCheckpointName, CheckpointDataIds, PerUserSampledEvaluation,
              StagedFullSortEvaluation, EvaluationResults, ValidationSchedule)
    return type(trainer_class.__name__, (*mixins, trainer_class),
                {"__module__": trainer_class.__module__, "__doc__": trainer_class.__doc__})


Trainer = extend_trainer(RecBoleTrainer)


class CFTeacherTrainer(Trainer):
    """RecBole's Trainer that first pre-trains the frozen teacher (``cf_model``) with RecBole's own Trainer,
    saved under ``checkpoint_dir``, unless ``cf_checkpoint`` or a resumed checkpoint holds it."""

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        self.run_pending_stages(train_data, show_progress)
        return super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                           show_progress=show_progress, callback_fn=callback_fn)

    def run_pending_stages(self, train_data, show_progress):
        """The stages before the model's own training that are not done yet (here: the teacher)."""
        if not bool(self.model.cf_teacher_ready):  # rank 0 trains it, the other ranks load it
            path = run_once(self.config, lambda: pretrain_teacher(self.config, show_progress=show_progress))
            self.model.load_cf_teacher(load_checkpoint(path, map_location=self.device)["state_dict"])


LLMSRecTrainer = CFTeacherTrainer


class ALLMRecTrainer(CFTeacherTrainer):
    """A-LLMRec's stages: SASRec (0), alignment (1, with its own ``stage1_*`` keys; saves teacher + item
    encoder as ``ALLMRec-stage1-<time>.pth``, which ``stage1_checkpoint`` resumes from, skipping 0 and 1),
    then RecBole's ``fit`` on the stage-2 LM loss. A stage-2 ``--checkpoint`` holds all stages."""

    def run_pending_stages(self, train_data, show_progress):
        path = self.config["stage1_checkpoint"]
        if path and not bool(self.model.stage_done[1]):
            checkpoint = load_checkpoint(path, map_location=self.device)
            state = checkpoint["state"]
            rows = state["cf_model"]["item_embedding.weight"].shape[0]
            check_same_data(self.config, checkpoint["config"], rows,
                            self.model.cf_model.item_embedding.num_embeddings, path, key="stage1_checkpoint")
            check_checkpoint_data(checkpoint.get("data"), data_ids(train_data._dataset), path,
                                  "stage1_checkpoint")
            self.model.load_stage1_state_dict(state)
            self.logger.info(set_color("Stages 0-1 loaded from", "green") + f": {path}")
            return
        super().run_pending_stages(train_data, show_progress)
        if not bool(self.model.stage_done[1]):
            path = run_once(self.config, lambda: self.train_alignment(train_data._dataset, show_progress))
            if not bool(self.model.stage_done[1]):  # a rank that waited for rank 0's stage 1
                self.model.load_stage1_state_dict(load_checkpoint(path, map_location=self.device)["state"])

    def train_alignment(self, dataset, show_progress=False):
        """Stage 1 over every training user once per epoch, shuffled (seeded), one step per batch."""
        model, config = self.model, self.config
        self.logger.info(set_color("Stage 1 (alignment)", "green") + f": {config['stage1_epochs']} epochs "
                         f"over {len(dataset.inter_feat)} training users, batch {config['stage1_batch_size']}")
        model.prepare_stage1()
        optimizer = torch.optim.Adam(model.stage1_parameters(), lr=config["stage1_learning_rate"],
                                     **adam_betas(config))
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
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        path = unique_checkpoint_path(config["checkpoint_dir"], "ALLMRec-stage1")
        atomic_torch_save({"config": config, "state": model.stage1_state_dict(),
                           "data": getattr(self, "data_ids", None)}, path)
        self.logger.info(set_color("Stage 1 saved", "blue") + f": {path} (reuse it with "
                         f"stage1_checkpoint: {path})")
        return path


class HLLMTrainer(Trainer):
    """RecBole's Trainer with HLLM's schedule (spec 4): linear warm-up over ``warmup_ratio`` of all steps,
    then cosine decay to 0, stepped by an optimizer hook (RecBole's loop runs unchanged) after each
    optimizer step (one accumulation group); a resumed run continues the schedule."""

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        from transformers import get_cosine_schedule_with_warmup

        parts, accumulation = epoch_parts(self.config, train_data), accumulation_steps(self.config)
        total = optimizer_steps_before(self.epochs * parts, len(train_data), parts, accumulation)
        scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, int(self.config["warmup_ratio"] * total), total)
        # RecBole's start_epoch counts parts of epochs when validations_per_epoch cuts them
        with warnings.catch_warnings():  # fast-forwarding a resumed schedule steps it before the optimizer
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            for _ in range(optimizer_steps_before(self.start_epoch, len(train_data), parts, accumulation)):
                scheduler.step()
        self.scheduler = scheduler
        hook = self.optimizer.register_step_post_hook(lambda *_: scheduler.step())
        try:
            return super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                               show_progress=show_progress, callback_fn=callback_fn)
        finally:
            hook.remove()
