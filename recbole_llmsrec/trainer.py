"""Trainers of this plugin's models. ``get_trainer`` looks here for ``<Model>Trainer`` first."""

from recbole.trainer import Trainer

from recbole_llmsrec.cf_teacher import pretrain_teacher
from recbole_llmsrec.compat import load_checkpoint


class CFTeacherTrainer(Trainer):
    """RecBole's Trainer that first makes sure the model's frozen SASRec teacher is trained.

    With no ``cf_checkpoint`` (and no resumed checkpoint holding the teacher), SASRec is pre-trained
    through RecBole's own Trainer, saved under ``checkpoint_dir`` like any RecBole run, and loaded into
    ``model.cf_model`` before the model's own training starts.
    """

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
            callback_fn=None):
        if not bool(self.model.cf_teacher_ready):
            path = pretrain_teacher(self.config, show_progress=show_progress)
            self.model.load_cf_teacher(load_checkpoint(path, map_location=self.device)["state_dict"])
        return super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                           show_progress=show_progress, callback_fn=callback_fn)


LLMSRecTrainer = CFTeacherTrainer
