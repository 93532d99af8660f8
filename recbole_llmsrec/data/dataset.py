"""Datasets of this plugin's models, found by ``create_dataset`` as ``<Model>Dataset`` (RecBole-GNN's way).

RecBole's ``SequentialDataset`` turns each user's history into one sample per prefix ("data
augmentation"), so a user with L training interactions is L training samples. The LLM recommenders
here are trained like their papers instead: ``UserSequenceDataset`` keeps, in the TRAINING split only,
each user's longest prefix (the whole training sequence, truncated to ``MAX_ITEM_LIST_LENGTH``, with its
last item as the target). Validation and test samples are RecBole's, unchanged (leave-one-out on the
same ordering), so the metrics compare with any RecBole model.
"""

import importlib

import numpy as np
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data.dataset import SequentialDataset


class UserSequenceDataset(SequentialDataset):
    """A ``SequentialDataset`` whose training split holds one sample per user (its last prefix)."""

    def build(self):
        datasets = super().build()
        train = datasets[0]
        users = train.inter_feat[train.uid_field].numpy()
        # rows of one user appear in time order, so a user's last row is its longest prefix
        _, first_in_reversed = np.unique(users[::-1], return_index=True)
        last_rows = np.sort(len(users) - 1 - first_in_reversed)
        train.inter_feat = train.inter_feat[last_rows]
        return datasets


class LLMSRecDataset(UserSequenceDataset):
    """LLM-SRec trains one example per user per epoch: target = last training item (spec section 6)."""


def create_dataset(config):
    """``<Model>Dataset`` of this plugin if there is one, else RecBole's ``create_dataset``."""
    module = importlib.import_module(__name__)
    dataset_class = getattr(module, f"{config['model']}Dataset", None)
    if dataset_class is None:
        return recbole_create_dataset(config)
    return dataset_class(config)
