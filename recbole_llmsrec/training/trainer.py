"""The plugin's ``Trainer``: RecBole's ``Trainer`` with the plugin's evaluation protocol, schedules,
distribution and checkpoints, one class for every model run through the plugin (README "Training").

With one process and the schedule keys unset it trains exactly as RecBole's. A plugin model's
trainer derives from it; a RecBole trainer class ``T`` (``KGATTrainer``, say) is used as ``T``
placed before this class in one subclass (``extend_trainer``), so that ``T``'s own steps run and its
calls to ``super()`` reach the plugin's loop, evaluation and saving.
"""

import functools
import math

import torch.distributed as dist
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import get_trainer as recbole_get_trainer
from recbole.utils import set_color

from recbole_llmsrec import registry
from recbole_llmsrec.checkpoints import data_ids, load_checkpoint, unique_checkpoint_path
from recbole_llmsrec.distribution.process_group import (
    from_rank0,
    is_distributed,
    rank,
    wait_for_rank0,
)
from recbole_llmsrec.distribution.training import (
    TRAINERS_WITH_OWN_LOOP,
    accumulation_steps,
    train_epoch,
)
from recbole_llmsrec.distribution.wrapping import (
    full_training_state,
    load_full_optimizer_state,
    load_full_state,
    shard_fsdp,
)
from recbole_llmsrec.evaluation import scoring
from recbole_llmsrec.evaluation.results import ProtocolCollector, ProtocolEvaluator, per_user_values
from recbole_llmsrec.hooks import split_attribute
from recbole_llmsrec.recbole_fixes.checkpoint_loading import checkpoint_state
from recbole_llmsrec.safe_write import atomic_torch_save
from recbole_llmsrec.training.schedule import EpochInParts, epoch_parts


def adam_betas(config):
    """``adam_betas`` as keyword arguments for torch's Adam/AdamW (none: torch's defaults)."""
    betas = config["adam_betas"]
    return {"betas": tuple(float(b) for b in betas)} if betas else {}


class Trainer(RecBoleTrainer):
    """RecBole's ``Trainer`` for any model, with:

    - evaluation: the protocol's scoring (``evaluation.scoring``), rows of every rank, plain-float
      results, ``eval_item_groups`` and per-row values (``evaluation.results``);
    - schedule (LLM-SRec's, spec ``llmsrec.md`` §6, for any model): ``validations_per_epoch`` k cuts
      each epoch in k parts, so RecBole's epoch counter, ``eval_step`` and ``stopping_step`` count
      validations (the original validated ~11 times per epoch); ``lr_decay_per_validation`` gamma:
      LR ``learning_rate * gamma ** i`` after validation i; ``adam_betas`` (RecBole's optimizer has
      none);
    - distribution: the training loop of ``distribution.training``, FSDP sharding, rank 0's
      checkpoint name, best-model loading from a memory-mapped file;
    - checkpoints: ``{model}-{time}-{random}.pth`` (two runs started in the same second wrote one
      file), written atomically by rank 0, loaded without running code, carrying ``data_ids`` (the
      ids of the data trained on: set by ``run_recbole`` with the fingerprint, else taken from the
      training split).
    """

    data_ids = None
    ddp_model = None  # the DDP wrapper of a distributed DDP run (made at its first training step)

    def __init__(self, config, model):
        super().__init__(config, model)
        self.eval_collector = ProtocolCollector(config)
        self.evaluator = ProtocolEvaluator(config)
        name = unique_checkpoint_path(self.checkpoint_dir, config["model"])
        self.saved_model_file = from_rank0(config, name)  # every rank names rank 0's file
        processes = dist.get_world_size() if is_distributed(config) else 1
        batch = [config["train_batch_size"], accumulation_steps(config), processes]
        self.logger.info(
            "global batch = train_batch_size x gradient_accumulation_steps x processes = "
            f"{' x '.join(map(str, batch))} = {math.prod(batch)}"
        )
        if is_distributed(config):
            self._prepare_distributed()

    def _prepare_distributed(self):
        if any(c.__name__ in TRAINERS_WITH_OWN_LOOP for c in type(self).__mro__):
            raise ValueError(
                f"{type(self).__name__} trains with its own loop, which recbole_llmsrec does not "
                "distribute: run it in one process."
            )
        if self.config["distributed_strategy"] == "fsdp":
            shard_fsdp(self.model, self.config)
            self.optimizer = self._build_optimizer()  # over the sharded parameters

    # ----- training ---------------------------------------------------------------------------
    _train_epoch = train_epoch

    def _build_optimizer(self, **kwargs):
        optimizer = super()._build_optimizer(**kwargs)
        for group in optimizer.param_groups:
            group.update(adam_betas(self.config))
        return optimizer

    def _decay_learning_rate(self, validations):
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = (
                group["initial_lr"] * self.config["lr_decay_per_validation"] ** validations
            )

    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn=None,
    ):
        if self.data_ids is None:
            self.data_ids = data_ids(train_data._dataset)
        parts = epoch_parts(self.config, train_data)
        if parts > 1:
            train_data = EpochInParts(train_data, parts, start_part=self.start_epoch)
            self.epochs = self.config["epochs"] * parts
            self.eval_step = min(self.config["eval_step"], self.epochs)
            self.logger.info(
                f"Validating {parts} times per epoch: each RecBole epoch below is 1/{parts} of an "
                "epoch."
            )
        if self.config["lr_decay_per_validation"] not in (None, 1, 1.0) and self.eval_step > 0:
            callback_fn = self._decaying(callback_fn)
        return super().fit(
            train_data,
            valid_data,
            verbose=verbose,
            saved=saved,
            show_progress=show_progress,
            callback_fn=callback_fn,
        )

    def _decaying(self, then):
        """The validation callback that decays the learning rate, then calls ``then``."""
        self._decay_learning_rate(self.start_epoch // self.eval_step)

        def callback_fn(epoch_idx, valid_score):
            self._decay_learning_rate((epoch_idx + 1) // self.eval_step)
            if then:
                then(epoch_idx, valid_score)

        return callback_fn

    # ----- checkpoints ------------------------------------------------------------------------
    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's ``_save_checkpoint`` with torch's default pickle protocol (weights-only
        loadable), written atomically, by global rank 0 only, with the ids of its data."""
        state_dict, optimizer_state = full_training_state(self.model, self.optimizer)
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        if rank() == 0:
            state = checkpoint_state(self, epoch, state_dict, optimizer_state)
            state["data"] = self.data_ids
            atomic_torch_save(state, saved_model_file)
            if verbose:
                self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")
        if is_distributed(self.config):
            wait_for_rank0()  # no rank reads the best model before it is on disk

    def resume_checkpoint(self, resume_file):
        """RecBole's resume, loading without running code, sharded or not."""
        self.saved_model_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file)
        self.start_epoch, self.cur_step = checkpoint["epoch"] + 1, checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                "Architecture configuration given in config file is different from that of "
                "checkpoint. This may yield an exception while state_dict is being loaded."
            )
        load_full_state(self.model, checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        load_full_optimizer_state(self.model, self.optimizer, checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    # ----- evaluation -------------------------------------------------------------------------
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file)  # CPU, memory-mapped: not a copy per GPU
            load_full_state(self.model, checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        self.eval_collector.start(eval_data.sample_size, is_distributed(self.config))
        self.evaluator.start(split_attribute(eval_data, "item_train_counts"))
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def _map_reduce(self, result, num_sample):
        return result  # computed from every rank's rows already: RecBole's averaging would skew it

    def _neg_sample_batch_eval(self, batched_data):
        return scoring.sampled_scores(self, batched_data, super()._neg_sample_batch_eval)

    def _full_sort_batch_eval(self, batched_data):
        return scoring.staged_full_sort(self, batched_data, super()._full_sort_batch_eval)

    def per_user_values(self, eval_data):
        """The last evaluation's per-row values of every top-k metric, with each row's user
        token."""
        return per_user_values(self.evaluator, eval_data)


@functools.cache
def extend_trainer(trainer_class):
    """``trainer_class`` with the plugin's ``Trainer`` behind it (RecBole's trainers that do not
    derive from its ``Trainer``, e.g. the decision-tree ones, are returned unchanged)."""
    if not issubclass(trainer_class, RecBoleTrainer) or issubclass(trainer_class, Trainer):
        return trainer_class
    if trainer_class is RecBoleTrainer:
        return Trainer
    return type(
        trainer_class.__name__,
        (trainer_class, Trainer),
        {"__module__": trainer_class.__module__, "__doc__": trainer_class.__doc__},
    )


def get_trainer(model_type, model_name):
    """The trainer of ``model_name``: its registry entry's, the plugin's ``Trainer`` for a plugin
    model without one, else RecBole's choice through ``extend_trainer``."""
    own = registry.trainer_class(model_name)
    if own is not None:
        return own
    if registry.entry_of(model_name) is not None:
        return Trainer
    return extend_trainer(recbole_get_trainer(model_type, model_name))
