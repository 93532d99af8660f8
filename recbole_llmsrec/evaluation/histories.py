"""The per-user item sets of a split the protocol reads (users x items CSR matrices, values 1)."""

import numpy as np

from recbole_llmsrec.data.dataset import interaction_matrix
from recbole_llmsrec.hooks import split_attribute


def binary(matrix):
    matrix = matrix.tocsr()
    matrix.data[:] = 1.0
    return matrix


def training_interactions(train):
    """users x items CSR of every training interaction (targets and item lists of the rows); a
    training split this plugin trimmed (one row or window per user) kept them all in
    ``history_matrix``."""
    history = split_attribute(train, "history_matrix")
    return interaction_matrix(train) if history is None else history


class ProtocolHistories:
    """Per-user item sets of a leave-one-out split (users x items CSR): ``before[phase]``, the items
    of every earlier split (valid: train; test: train + valid); ``interacted``, everything in any
    split."""

    def __init__(self, train, valid, test):
        train_items = training_interactions(train)
        valid_items = interaction_matrix(valid)
        self.before = {"valid": train_items, "test": binary(train_items + valid_items)}
        self.interacted = binary(train_items + valid_items + interaction_matrix(test))


def training_matrix(train, sequential):
    """users x items CSR (values 1) of every training interaction of the split ``train``."""
    return training_interactions(train) if sequential else binary(train.inter_matrix(form="csr"))


def item_train_counts(train, sequential):
    """Each item's number of users with it in their training interactions (``eval_item_groups``)."""
    return np.asarray(training_matrix(train, sequential).sum(axis=0)).ravel()
