"""RecBole 1.2.1's ``create_dataset`` and ``data_preparation`` read (and, with ``save_dataset`` or
``save_dataloaders``, write) pickled caches under ``checkpoint_dir``: unpickling a file runs
whatever code it holds. The cache-writing settings are refused, an existing cache is named in a
warning and never read, and the dataset and split are built from the atomic files in every run.
Targets RecBole 1.2.1; tested in ``tests/test_safety.py``.
"""

import importlib
import os
from logging import getLogger

import recbole.data
import recbole.data.utils
from recbole.utils import ModelType

PICKLE_CACHE_KEYS = (
    "save_dataset",
    "dataset_save_path",
    "save_dataloaders",
    "dataloaders_save_path",
)


def refuse_pickle_caches(config):
    """Refuse the RecBole settings that write (and would later unpickle) dataset/dataloader
    caches."""
    for key in PICKLE_CACHE_KEYS:
        if config[key]:
            raise ValueError(
                f"{key}={config[key]!r} is not supported: RecBole stores datasets and dataloaders "
                "with "
                "pickle, and reading a pickle runs whatever code the file holds. recbole_llmsrec "
                "builds "
                f"the dataset and the split anew in every run; remove {key} from your config."
            )


def _warn_unread(path):
    if os.path.exists(path):
        getLogger().warning(
            f"{path} is ignored: RecBole's pickled dataset/dataloader caches are never "
            "read by recbole_llmsrec (unpickling a file runs its code)."
        )


def create_dataset_without_pickle(config):
    """RecBole's ``create_dataset`` without its pickle cache: the same class, built from the atomic
    files."""
    refuse_pickle_caches(config)
    dataset_module = importlib.import_module("recbole.data.dataset")
    dataset_class = getattr(dataset_module, config["model"] + "Dataset", None)
    if dataset_class is None:
        name = {
            ModelType.SEQUENTIAL: "SequentialDataset",
            ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
        }.get(config["MODEL_TYPE"], "Dataset")
        dataset_class = getattr(dataset_module, name)
    _warn_unread(
        os.path.join(config["checkpoint_dir"], f"{config['dataset']}-{dataset_class.__name__}.pth")
    )
    return dataset_class(config)


def load_split_dataloaders_never(config):
    """Stands in for RecBole's ``load_split_dataloaders``: never unpickles, so the split is made
    anew."""
    refuse_pickle_caches(config)
    _warn_unread(
        os.path.join(
            config["checkpoint_dir"], f"{config['dataset']}-for-{config['model']}-dataloader.pth"
        )
    )
    return None


def install():
    recbole.data.utils.create_dataset = recbole.data.create_dataset = create_dataset_without_pickle
    recbole.data.utils.load_split_dataloaders = load_split_dataloaders_never
