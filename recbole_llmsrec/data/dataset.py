"""The plugin's sequential dataset and ``create_dataset``, which builds each model's dataset class
(its registry entry's, else RecBole's choice) from the checked atomic files.

RecBole's ``SequentialDataset`` makes one training sample per prefix; as in their papers, the LLM
models' ``UserSequenceDataset`` keeps each user's longest prefix in the TRAINING split only
(validation and test are RecBole's, so metrics compare with any RecBole model), which carries
``history_matrix`` (users x items, CSR, every training interaction) for negatives.
"""

import importlib

import numpy as np
import torch
from recbole.utils import ModelType

from recbole_llmsrec import registry
from recbole_llmsrec.data.atomic_files import check_atomic_files
from recbole_llmsrec.data.sequences import CompactSequentialDataset, interaction_matrix, rows_at
from recbole_llmsrec.data.shared import shared_dataset
from recbole_llmsrec.distribution.process_group import is_distributed
from recbole_llmsrec.hooks import SequenceDatasetHooks, split_attribute
from recbole_llmsrec.recbole_fixes.pickle_caches import (
    create_dataset_without_pickle,
    refuse_pickle_caches,
)
from recbole_llmsrec.settings import require_at_least


def sample_unseen_items(history, users, num, n_items, generator, max_rounds=1000):
    """``[len(users), num]`` distinct item ids per user, uniform over items the user has no training
    interaction with (``history``: users x items CSR). Seeded through ``generator``."""
    users = users.cpu().numpy().copy()

    def draw(count):
        return torch.randint(1, n_items, (count,), generator=generator)

    items = draw(len(users) * num).view(len(users), num)
    later = torch.ones(num, num, dtype=torch.bool).triu(1)
    for _ in range(max_rounds):
        seen = np.asarray(history[np.repeat(users, num), items.flatten().numpy().copy()]).reshape(
            items.shape
        )
        clash = torch.from_numpy(seen > 0)
        clash |= ((items.unsqueeze(2) == items.unsqueeze(1)) & later).any(1)
        if not clash.any():
            return items
        items[clash] = draw(int(clash.sum()))
    raise ValueError(
        f"cannot draw {num} distinct items outside a user's history: the catalogue is "
        "too small for that many negatives."
    )


def training_history(dataset):
    """The ``history_matrix`` of a training split built by this plugin's ``create_dataset``."""
    history = split_attribute(dataset, "history_matrix")
    if history is None:
        raise ValueError(
            f"{dataset.config['model']} needs its own training split: build the dataset "
            "with recbole_llmsrec.data.dataset.create_dataset (or run_recbole), not "
            "recbole.data.create_dataset."
        )
    return history


class UserSequenceDataset(SequenceDatasetHooks, CompactSequentialDataset):
    """A ``SequentialDataset`` whose training split holds one sample per user (its last prefix), or,
    with the hook ``window_stride`` set, every ``window_stride``-th prefix counted from the last
    one."""

    def split_rows(self):
        datasets = super().split_rows()
        train = datasets[0]
        train.history_matrix = interaction_matrix(train)
        users = train.inter_feat[train.uid_field].numpy()
        # a user's rows are contiguous and in time order: rank each by its distance from the user's
        # last
        change = np.r_[True, users[1:] != users[:-1]]
        if change.sum() != len(np.unique(users)):
            raise ValueError("the training split does not hold each user's rows together")
        group = np.cumsum(change) - 1
        position = np.arange(len(users)) - np.flatnonzero(change)[group]
        from_last = np.bincount(group)[group] - 1 - position
        stride = self.window_stride()
        keep = from_last == 0 if stride is None else from_last % stride == 0
        train.inter_feat = rows_at(train.inter_feat, torch.from_numpy(np.flatnonzero(keep)))
        return datasets


#: RecBole models that read a row's lists from ``dataset.inter_feat`` themselves, so they keep
#: RecBole's materialised ``SequentialDataset`` (FEARec: ``calculate_loss`` reads the lists of rows
#: sharing its batch's targets)
READ_LISTS_FROM_INTER_FEAT = {"FEARec"}


def plugin_dataset_class(config):
    """The class ``create_dataset`` builds for ``config``'s model: its registry entry's, else
    ``CompactSequentialDataset`` where RecBole would build its plain ``SequentialDataset`` (a
    sequential model without a ``<Model>Dataset`` class of its own, and not one of
    ``READ_LISTS_FROM_INTER_FEAT``), else None (RecBole's choice)."""
    registered = registry.dataset_class(config["model"])
    if registered is not None:
        return registered
    recbole_datasets = importlib.import_module("recbole.data.dataset")
    own_class = hasattr(recbole_datasets, config["model"] + "Dataset")
    reads_lists = config["model"] in READ_LISTS_FROM_INTER_FEAT
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and not (own_class or reads_lists):
        return CompactSequentialDataset
    return None


def create_dataset(config):
    """This plugin's ``<Model>Dataset``, else the compact ``SequentialDataset`` for a sequential
    model (``data.sequences``), else RecBole's choice; always from the (checked) atomic files, never
    from a pickled cache (``recbole_fixes.pickle_caches``)."""
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        require_at_least(config, "MAX_ITEM_LIST_LENGTH", 1)
    check_atomic_files(config)
    dataset_class = plugin_dataset_class(config)
    if dataset_class is None:
        return create_dataset_without_pickle(config)
    refuse_pickle_caches(config)
    if is_distributed(config) and issubclass(dataset_class, CompactSequentialDataset):
        return shared_dataset(config, dataset_class)  # one copy per machine (data.shared)
    return dataset_class(config)
