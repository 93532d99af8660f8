"""The per-user item sets of a split the protocol reads (users x items CSR matrices, values 1)."""

import numpy as np

from recbole_llmsrec.data.sequences import binary, cumulative_interactions, training_interactions


class ProtocolHistories:
    """Per-user item sets of a leave-one-out split (users x items CSR): ``before[phase]``, the items
    of every earlier split (valid: train; test: train + valid); ``interacted``, everything in any
    split."""

    def __init__(self, train, valid, test):
        train_items, before_test, everything = cumulative_interactions(train, valid, test)
        self.before = {"valid": train_items, "test": before_test}
        self.interacted = everything


def training_matrix(train, sequential):
    """users x items CSR (values 1) of every training interaction of the split ``train``."""
    return training_interactions(train) if sequential else binary(train.inter_matrix(form="csr"))


def item_train_counts(train, sequential):
    """Each item's number of users with it in their training interactions (``eval_item_groups``)."""
    return np.asarray(training_matrix(train, sequential).sum(axis=0)).ravel()
