"""torch >= 2.6 loads checkpoints with ``weights_only=True``, and RecBole 1.2.1's cannot be read
that way: ``Trainer._save_checkpoint`` pickles with protocol 4, and its ``Config`` holds class
objects (the model class), so ``evaluate(load_best_model=True)`` and resuming fail. Fixed:
checkpoints are written with torch's default protocol; ``Config`` pickles its model class by NAME
and, when read, looks the name up in the plugin's and RecBole's model tables
(``registry.registered_model_class``), never importing a module a file names (a crafted checkpoint
could otherwise run code); ``Config`` and RecBole's enums are allowed to the weights-only unpickler.
Targets RecBole 1.2.1 with torch >= 2.6; tested in ``tests/test_pipeline.py`` and
``tests/test_safety.py``.
"""

import torch
from recbole.config import Config
from recbole.trainer import Trainer
from recbole.utils import enum_type, set_color

from recbole_llmsrec.registry import registered_model_class

SAFE_CLASSES = (
    Config,
    enum_type.ModelType,
    enum_type.InputType,
    enum_type.EvaluatorType,
    enum_type.FeatureType,
    enum_type.FeatureSource,
)


def config_getstate(self):
    """The state a checkpoint stores: the model class by name; a distributed run's config made a
    one-process one (loadable anywhere)."""
    state = dict(self.__dict__)
    if not self.final_config_dict.get("single_spec", True):
        state["final_config_dict"] = {
            **self.final_config_dict,
            "single_spec": True,
            "world_size": 1,
        }
    state.pop("yaml_loader", None)
    model_class = state.pop("model_class", None)
    state["model_class_name"] = None if model_class is None else model_class.__name__
    return state


def config_setstate(self, state):
    """The config restored with its model class looked up BY NAME (checkpoints of older versions
    stored ``module:qualname``; only the class name is read from them)."""
    state = dict(state)
    name = state.pop("model_class_name", None) or str(state.pop("model_class_path", "") or "")
    state.pop("model_class_path", None)
    self.__dict__.update(state)
    self.yaml_loader = self._build_yaml_loader()
    name = name.rpartition(":")[2]
    self.model_class = registered_model_class(name) if name else None


def checkpoint_state(trainer, epoch, state_dict, optimizer_state):
    """What RecBole's checkpoint holds (the plugin's ``Trainer`` adds the data's ids), the best
    score as a float: a numpy scalar is not a weight."""
    return {
        "config": trainer.config,
        "epoch": epoch,
        "cur_step": trainer.cur_step,
        "best_valid_score": float(trainer.best_valid_score),
        "state_dict": state_dict,
        "other_parameter": trainer.model.other_parameter(),
        "optimizer": optimizer_state,
    }


def save_checkpoint(self, epoch, verbose=True, **kwargs):
    """RecBole's ``Trainer._save_checkpoint`` with torch's default pickle protocol."""
    if not self.config["single_spec"] and self.config["local_rank"] != 0:
        return
    saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
    state = checkpoint_state(self, epoch, self.model.state_dict(), self.optimizer.state_dict())
    torch.save(state, saved_model_file)
    if verbose:
        self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")


def install():
    Config.__getstate__ = config_getstate
    Config.__setstate__ = config_setstate
    Trainer._save_checkpoint = save_checkpoint
    torch.serialization.add_safe_globals(list(SAFE_CLASSES))
