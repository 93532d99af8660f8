"""Fixes that let RecBole 1.2.1 run on today's numpy, torch and pandas.

Applied once, in memory, when ``recbole_llmsrec`` is imported; nothing in site-packages is edited.
Each fix is idempotent and touches only what RecBole 1.2.1 gets wrong:

1. numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``; RecBole's
   ``Config.compatibility_settings`` reads them on every ``Config(...)``. We restore the three aliases.
2. torch >= 2.6 loads checkpoints with ``weights_only=True``. RecBole's checkpoints could not be loaded
   that way: they are written with pickle protocol 4 (whose FRAME opcode the weights-only unpickler
   rejects) and they pickle the ``Config`` with two class objects inside (``yaml_loader`` and
   ``model_class``). We (a) write checkpoints with torch's default protocol, (b) pickle ``Config``
   without class objects (the model class is stored as its import path and looked up again on load,
   only if it is a RecBole recommender) and (c) register as safe globals exactly the types a RecBole
   checkpoint holds (the Config classes and RecBole's enums; the best valid score, a numpy scalar in
   RecBole, is stored as a Python float). RecBole's own
   ``torch.load(...)`` calls then load checkpoints with ``weights_only=True``: no arbitrary code runs
   when a checkpoint is read. Checkpoints written by an unpatched RecBole (protocol 4) are refused
   by torch; see ``load_checkpoint`` for the explicit opt-in.
3. ``recbole.quick_start`` imports ray 2.6.3 at module load, which needs ``pkg_resources`` and numpy 1.
   The plugin never imports it: ``recbole_llmsrec.quick_start`` is the replacement.
4. ``recbole/model/sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)``
   at import, and the package's ``__init__`` imports it with every sequential model, so every RecBole
   run trains in anomaly-detection mode (on this project's CPU it made SASRec's backward several times
   slower; it changes no number). We import the package once and turn the mode back off.
5. pandas: RecBole's ``df[col].fillna(..., inplace=True)`` only works without copy-on-write, so the
   package pins ``pandas<3`` (setup.cfg). The FutureWarning pandas 2.3 prints about it on every load,
   its ``Series.agg(len)`` deprecation, and torch's deprecation warning for ``torch.cuda.amp.GradScaler``
   in RecBole's trainer, are silenced for RecBole's modules only.
6. RecBole's ``create_dataset`` and ``load_split_dataloaders`` ``pickle.load`` any file found at
   ``{checkpoint_dir}/{dataset}-{DatasetClass}.pth`` / ``{checkpoint_dir}/{dataset}-for-{model}-dataloader.pth``
   (or ``dataset_save_path`` / ``dataloaders_save_path``), whether or not ``save_dataset`` /
   ``save_dataloaders`` is set: a file planted there runs arbitrary code. Both are replaced: the dataset
   is always built from the atomic files and the split always made anew (a file found at those paths is
   named in a warning and never read); ``save_dataset``, ``save_dataloaders`` and the two ``*_save_path``
   keys are refused with the reason, because reading back what they write would need a pickle.
7. RecBole's distributed training initialises NCCL whatever the device (no CPU run), wraps the whole
   model in ``DistributedDataParallel`` (frozen LLMs included, CUDA only), and saves from every node's
   local rank 0. Its device set-up, model wrapping and ``Trainer._train_epoch`` are replaced by
   ``recbole_llmsrec.distributed``; checkpoints are saved by global rank 0 only, gathered first under
   FSDP, and the other ranks wait until the file is complete.
"""

import importlib
import os
import uuid
import warnings
from logging import getLogger

import numpy as np
import torch

_NUMPY2_REMOVED_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}
_APPLIED = False


def _restore_numpy_aliases():
    for alias, target in _NUMPY2_REMOVED_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, getattr(np, target))


def _config_getstate(self):
    state = dict(self.__dict__)
    state.pop("yaml_loader", None)
    model_class = state.pop("model_class", None)
    state["model_class_path"] = (
        None if model_class is None else f"{model_class.__module__}:{model_class.__qualname__}"
    )
    return state


def _config_setstate(self, state):
    from recbole.model.abstract_recommender import AbstractRecommender

    state = dict(state)
    class_path = state.pop("model_class_path", None)
    self.__dict__.update(state)
    self.yaml_loader = self._build_yaml_loader()
    self.model_class = None
    if class_path:
        module_name, _, qualname = class_path.partition(":")
        try:
            candidate = getattr(importlib.import_module(module_name), qualname)
        except (ImportError, AttributeError):
            candidate = None  # the model's code is not installed here; the rest of the config still loads
        if isinstance(candidate, type) and issubclass(candidate, AbstractRecommender):
            self.model_class = candidate


def atomic_write(path, write):
    """``write(temporary_path)`` in the same folder, then an atomic rename onto ``path``: readers see the
    old file or the new one, and a crash or a full disk never leaves a half-written file behind."""
    partial = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def atomic_torch_save(obj, path):
    """``torch.save`` through ``atomic_write``."""
    atomic_write(path, lambda partial: torch.save(obj, partial))


def unique_checkpoint_path(checkpoint_dir, prefix):
    """``{checkpoint_dir}/{prefix}-{time}-{random}.pth``. RecBole's ``{model}-{time}.pth`` made two runs
    started in the same second write the same file; the random part keeps their names apart."""
    from recbole.utils import get_local_time

    return os.path.join(checkpoint_dir, f"{prefix}-{get_local_time()}-{uuid.uuid4().hex[:6]}.pth")


def _save_checkpoint(self, epoch, verbose=True, **kwargs):
    """RecBole's ``Trainer._save_checkpoint`` with torch's default pickle protocol (weights-only
    loadable), written atomically, by global rank 0 only (item 7)."""
    from recbole.utils import set_color

    from recbole_llmsrec import distributed

    state_dict, optimizer_state = distributed.full_training_state(self.model, self.optimizer)
    saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
    if distributed.rank() == 0:
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": state_dict,
            "other_parameter": self.model.other_parameter(),
            "optimizer": optimizer_state,
        }
        atomic_torch_save(state, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")
    if distributed.is_distributed(self.config):
        torch.distributed.barrier()  # no rank reads the best model before it is on disk


def _trainer_init_without_ddp(self, config, model):
    """RecBole's ``AbstractTrainer.__init__`` without its DDP wrapping (``distributed.train_epoch``
    wraps the trainable part when training starts)."""
    self.config, self.model = config, model


def checkpoint_safe_globals():
    """The non-tensor types a RecBole checkpoint holds, for ``torch.serialization.add_safe_globals``."""
    from recbole.config import Config as RecBoleConfig
    from recbole.utils import enum_type

    from recbole_llmsrec.config import Config as PluginConfig

    return [
        RecBoleConfig,
        PluginConfig,
        enum_type.ModelType,
        enum_type.InputType,
        enum_type.EvaluatorType,
        enum_type.FeatureType,
        enum_type.FeatureSource,
    ]


def load_checkpoint(path, map_location="cpu", allow_unsafe=False):
    """Load a RecBole checkpoint with ``weights_only=True``.

    A checkpoint written by RecBole without this plugin (pickle protocol 4) cannot be read that way;
    torch's error is re-raised with the fix, unless ``allow_unsafe`` (the user's explicit statement that
    the file is trusted) asks for a full unpickle.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file not found: {path}") from None
    except Exception as err:  # torch raises UnpicklingError/RuntimeError variants here
        if allow_unsafe:
            return torch.load(path, map_location=map_location, weights_only=False)
        raise ValueError(
            f"checkpoint {path} cannot be loaded safely (weights_only=True): {str(err).splitlines()[0]}. "
            "It was probably written by RecBole without recbole_llmsrec. Re-run the training with the "
            "plugin installed, or, if you trust the file, pass allow_unsafe=True."
        ) from err


PICKLE_CACHE_KEYS = ("save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path")


def refuse_pickle_caches(config):
    """Refuse the RecBole settings that write (and would later unpickle) dataset/dataloader caches."""
    for key in PICKLE_CACHE_KEYS:
        if config[key]:
            raise ValueError(
                f"{key}={config[key]!r} is not supported: RecBole stores datasets and dataloaders with "
                "pickle, and reading a pickle runs whatever code the file holds. recbole_llmsrec builds "
                f"the dataset and the split anew in every run; remove {key} from your config.")


def _warn_unread(path):
    if os.path.exists(path):
        getLogger().warning(f"{path} is ignored: RecBole's pickled dataset/dataloader caches are never "
                            "read by recbole_llmsrec (unpickling a file runs its code).")


def create_dataset_without_pickle(config):
    """RecBole's ``create_dataset`` without its pickle cache: the dataset class it would pick, built
    from the atomic files."""
    from recbole.data.utils import ModelType

    refuse_pickle_caches(config)
    dataset_module = importlib.import_module("recbole.data.dataset")
    dataset_class = getattr(dataset_module, config["model"] + "Dataset", None)
    if dataset_class is None:
        name = {ModelType.SEQUENTIAL: "SequentialDataset",
                ModelType.KNOWLEDGE: "KnowledgeBasedDataset"}.get(config["MODEL_TYPE"], "Dataset")
        dataset_class = getattr(dataset_module, name)
    _warn_unread(os.path.join(config["checkpoint_dir"], f"{config['dataset']}-{dataset_class.__name__}.pth"))
    return dataset_class(config)


def load_split_dataloaders_never(config):
    """Stands in for RecBole's ``load_split_dataloaders``: never unpickles, so the split is made anew."""
    refuse_pickle_caches(config)
    _warn_unread(os.path.join(config["checkpoint_dir"],
                              f"{config['dataset']}-for-{config['model']}-dataloader.pth"))
    return None


def apply():
    """Apply every fix once; called from ``recbole_llmsrec/__init__.py``."""
    global _APPLIED
    if _APPLIED:
        return
    _restore_numpy_aliases()

    import recbole.data
    import recbole.data.utils
    from recbole.config import Config as RecBoleConfig
    from recbole.trainer import Trainer
    from recbole.trainer.trainer import AbstractTrainer

    from recbole_llmsrec import distributed

    importlib.import_module("recbole.model.sequential_recommender")  # runs sine.py's global switch once
    torch.autograd.set_detect_anomaly(False)
    RecBoleConfig.__getstate__ = _config_getstate
    RecBoleConfig.__setstate__ = _config_setstate
    Trainer._save_checkpoint = _save_checkpoint
    Trainer._train_epoch = distributed.train_epoch
    AbstractTrainer.__init__ = _trainer_init_without_ddp
    recbole.data.utils.create_dataset = recbole.data.create_dataset = create_dataset_without_pickle
    recbole.data.utils.load_split_dataloaders = load_split_dataloaders_never
    torch.serialization.add_safe_globals(checkpoint_safe_globals())

    warnings.filterwarnings(
        "ignore", message="A value is trying to be set on a copy", category=FutureWarning,
        module=r"recbole\.",
    )
    warnings.filterwarnings(
        "ignore", message=r"`torch\.cuda\.amp\.", category=FutureWarning, module=r"recbole\.",
    )
    warnings.filterwarnings(
        "ignore", message=r"using <built-in function len> in Series\.agg", category=FutureWarning,
        module=r"recbole\.",
    )
    _APPLIED = True
