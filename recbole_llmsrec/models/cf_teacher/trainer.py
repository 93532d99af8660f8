"""The trainer of the LLM-with-CF-teacher family: stage 0 (the teacher) before the model's
training."""

from recbole_llmsrec.checkpoints import load_checkpoint
from recbole_llmsrec.hooks import StagedTrainerHooks
from recbole_llmsrec.models.cf_teacher.stage0 import pretrain_teacher
from recbole_llmsrec.training.trainer import Trainer


class CFTeacherTrainer(StagedTrainerHooks, Trainer):
    """The plugin's Trainer that first pre-trains the frozen teacher (``cf_model``) with RecBole's
    own Trainer, saved under ``checkpoint_dir``, unless ``cf_checkpoint`` or a resumed checkpoint
    holds it. In a distributed run every rank trains it with the run's processes (DDP, each rank
    its shard of the teacher's data: ``pretrain_teacher``) and loads its best checkpoint, which rank
    0 wrote."""

    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn=None,
    ):
        self.run_pending_stages(train_data, show_progress)
        return super().fit(
            train_data,
            valid_data,
            verbose=verbose,
            saved=saved,
            show_progress=show_progress,
            callback_fn=callback_fn,
        )

    def run_pending_stages(self, train_data, show_progress):
        """Stage 0: the teacher, unless it is ready."""
        if not bool(self.model.cf_teacher_ready):
            path = pretrain_teacher(self.config, show_progress)  # the same path on every rank
            self.model.load_cf_teacher(
                load_checkpoint(path, map_location=self.device)["state_dict"]
            )
