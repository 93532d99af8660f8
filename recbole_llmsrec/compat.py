"""Fixes for RecBole 1.2.1 on today's numpy, torch and pandas, applied in memory once on import (README
"RecBole 1.2.1 on today's stack" says why): 1 numpy 2 aliases; 2 weights-only checkpoints (``Config``
pickles its model class as an import path: reading one never runs code); 3 no ``recbole.quick_start`` (ray);
4 ``sine.py``'s global anomaly mode off; 5 pandas<3, RecBole-only warning filters; 6 no unpickled caches;
7 distributed set-up, rank-0 saving, ensure_dir's exist_ok; 8 ``get_data_struct`` moves only tensors."""

import errno
import importlib
import os
import re
import shutil
import socket
import uuid
import warnings
from logging import getLogger

import numpy as np
import torch

from recbole_llmsrec.process import process_exists

_NUMPY2_REMOVED_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}
_APPLIED = False


def _restore_numpy_aliases():
    for alias, target in _NUMPY2_REMOVED_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, getattr(np, target))


def _config_getstate(self):
    state = dict(self.__dict__)
    if not self.final_config_dict.get("single_spec", True):  # saved by a distributed run: loadable anywhere
        state["final_config_dict"] = {**self.final_config_dict, "single_spec": True, "world_size": 1}
    state.pop("yaml_loader", None)
    model_class = state.pop("model_class", None)
    state["model_class_name"] = None if model_class is None else model_class.__name__
    return state


def _config_setstate(self, state):
    """A pickled ``Config`` restored with its model class looked up BY NAME in the plugin's models and
    RecBole's model table (``utils.get_model``), never imported from a module the file names: torch's
    weights-only unpickler calls this on an allow-listed class, so a module path stored in a crafted
    checkpoint would otherwise be imported (code run). Checkpoints of older versions stored
    ``module:qualname``; only the class name is read from them."""
    state = dict(state)
    name = state.pop("model_class_name", None) or str(state.pop("model_class_path", "") or "")
    state.pop("model_class_path", None)
    self.__dict__.update(state)
    self.yaml_loader = self._build_yaml_loader()
    self.model_class = registered_model_class(name.rpartition(":")[2]) if name else None


def registered_model_class(name):
    """The plugin's or RecBole's recommender class called ``name``, or None (unknown, not installed)."""
    from recbole.model.abstract_recommender import AbstractRecommender

    from recbole_llmsrec.utils import get_model

    if not str(name).isidentifier():
        return None
    try:
        found = get_model(name)
    except (ValueError, ImportError):
        return None  # the model's code is not installed here; the rest of the config still loads
    return found if isinstance(found, type) and issubclass(found, AbstractRecommender) else None


PARTIAL_SUFFIX = ".tmp"


def _partial_name(path):
    """``{path}.{host}.{pid}.{random}.tmp``: the host and process that write it, so that a later run can
    tell a partial file of a killed process (removed) from one being written (left alone)."""
    return f"{path}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"


def atomic_write(path, write):
    """``write(temporary_path)`` in the same folder, then an atomic rename: never a half-written ``path``.
    A full disk is said as such (torch's writer only says ``basic_ios::clear: iostream error``)."""
    partial = _partial_name(path)
    try:
        write(partial)
        os.replace(partial, path)
    except (OSError, RuntimeError) as error:
        folder = os.path.dirname(os.path.abspath(path))
        free = _free_bytes(folder)
        if getattr(error, "errno", None) != errno.ENOSPC and (free is None or free >= 2**20):
            raise
        raise OSError(errno.ENOSPC, f"No space left on device while writing {path} "
                      f"({free} bytes free in {folder}); nothing was replaced. Free some space or "
                      "point checkpoint_dir elsewhere.") from error
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _free_bytes(folder):
    try:
        return shutil.disk_usage(folder).free
    except OSError:  # the folder itself is gone: the original error says more
        return None


def remove_orphaned_partials(folder):
    """Remove the partial files (``_partial_name``) that processes of this host killed mid-write left in
    ``folder`` (``kill -9`` skips ``atomic_write``'s clean-up); returns how many. A partial file of a
    process still running, or of another host, is left alone."""
    pattern = re.compile(rf".+\.{re.escape(socket.gethostname())}\.(\d+)\.[0-9a-f]{{8}}"
                         rf"{re.escape(PARTIAL_SUFFIX)}")
    removed = 0
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = pattern.fullmatch(name)
        if match and not process_exists(int(match.group(1))):
            os.remove(os.path.join(folder, name))
            removed += 1
    return removed


def atomic_torch_save(obj, path):
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
        state = {"config": self.config, "epoch": epoch, "cur_step": self.cur_step,
                 "best_valid_score": float(self.best_valid_score), "state_dict": state_dict,
                 "other_parameter": self.model.other_parameter(), "optimizer": optimizer_state,
                 "data": getattr(self, "data_ids", None)}  # the ids it was trained on (checkpoint_data)
        atomic_torch_save(state, saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")
    if distributed.is_distributed(self.config):
        distributed.wait_for_rank0()  # no rank reads the best model before it is on disk


def _get_data_struct_with_counts(self, recbole_get_data_struct):
    data = self.data_struct._data_dict
    counts = {key: data.pop(key) for key in list(data) if not isinstance(data[key], torch.Tensor)}
    struct = recbole_get_data_struct(self)
    data.update(counts)
    struct._data_dict.update(counts)
    return struct


def _trainer_init_without_ddp(self, config, model):
    """RecBole's ``AbstractTrainer.__init__`` minus DDP (``distributed.train_epoch`` wraps what trains)."""
    self.config, self.model = config, model


def checkpoint_safe_globals():
    """The non-tensor types a RecBole checkpoint holds, for ``torch.serialization.add_safe_globals``."""
    from recbole.config import Config as RecBoleConfig
    from recbole.utils import enum_type

    from recbole_llmsrec.config import Config as PluginConfig

    return [RecBoleConfig, PluginConfig, enum_type.ModelType, enum_type.InputType, enum_type.EvaluatorType,
            enum_type.FeatureType, enum_type.FeatureSource]


def load_checkpoint(path, map_location="cpu", allow_unsafe=False):
    """A RecBole checkpoint loaded with ``weights_only=True``; one RecBole wrote without the plugin (pickle
    protocol 4) fails with the fix in the error, or with ``allow_unsafe`` (a trusted file) fully unpickles."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file not found: {path}") from None
    except Exception as err:  # torch raises UnpicklingError/RuntimeError variants here
        if allow_unsafe:
            return torch.load(path, map_location=map_location, weights_only=False)
        raise ValueError(
            f"checkpoint {path} cannot be loaded safely (weights_only=True): {str(err).splitlines()[0]}. "
            "It was probably written by RecBole without recbole_llmsrec. Re-run the training with the "
            "plugin installed, or, if you trust the file, pass allow_unsafe=True.") from err


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
    """RecBole's ``create_dataset`` without its pickle cache: the same class, built from the atomic files."""
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
    from recbole.evaluator.collector import Collector
    from recbole.trainer.trainer import AbstractTrainer

    from recbole_llmsrec import distributed
    from recbole_llmsrec.data import same_data

    same_data.install()  # every model sees the same catalogue and time order (README "Comparing with SASRec")
    importlib.import_module("recbole.model.sequential_recommender")  # runs sine.py's global switch once
    torch.autograd.set_detect_anomaly(False)
    RecBoleConfig.__getstate__ = _config_getstate
    RecBoleConfig.__setstate__ = _config_setstate
    Trainer._save_checkpoint = _save_checkpoint
    Trainer._train_epoch = distributed.train_epoch
    AbstractTrainer.__init__ = _trainer_init_without_ddp
    for module in ("recbole.utils.utils", "recbole.utils", "recbole.utils.logger", "recbole.data.utils",
                   "recbole.trainer.trainer", "recbole.data.dataset.dataset"):
        importlib.import_module(module).ensure_dir = lambda path: os.makedirs(path, exist_ok=True)
    recbole_get_data_struct = Collector.get_data_struct
    Collector.get_data_struct = lambda self: _get_data_struct_with_counts(self, recbole_get_data_struct)
    recbole.data.utils.create_dataset = recbole.data.create_dataset = create_dataset_without_pickle
    recbole.data.utils.load_split_dataloaders = load_split_dataloaders_never
    torch.serialization.add_safe_globals(checkpoint_safe_globals())

    for message in ("A value is trying to be set on a copy", r"`torch\.cuda\.amp\.",
                    r"using <built-in function len> in Series\.agg"):
        warnings.filterwarnings("ignore", message=message, category=FutureWarning, module=r"recbole\.")
    _APPLIED = True
