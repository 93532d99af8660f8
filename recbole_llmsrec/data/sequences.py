"""RecBole's ``SequentialDataset`` in O(interactions) memory: each user's interactions are stored
once, contiguously and in time order, and a row's history window (``item_id_list``,
``timestamp_list``, every ``<field>_list``) is gathered when its batch is collated.

RecBole 1.2.1's ``data_augmentation`` writes, for every interaction after a user's first, a padded
copy of the previous ``MAX_ITEM_LIST_LENGTH`` values of every interaction field: memory and time
grow with interactions x L (Amazon Books at L = 50: about 14 GiB per process). Here the rows are the
same, in the same order, with the same targets, lengths and lists; a row only keeps, in the hidden
column ``TARGET_ROW``, where its target sits in the store (``sequences``: the interactions sorted by
user, then time, as RecBole sorts them), its list being the ``item_length`` entries before it.
Splits (``copy``) share the store. Every reader of a row's list goes through ``Dataset[index]``
(RecBole's loaders do) or ``item_lists`` / ``covered_interactions`` below.

Two kinds of sequential split remain materialised, and every function here reads both: RecBole's
pre-split ``benchmark_filename`` files (their lists are data) and the datasets of RecBole models
with their own ``<Model>Dataset`` class (``GRU4RecKG``, ``KSR``, ``DIEN``) or that read lists from
``inter_feat`` themselves (``data.dataset.READ_LISTS_FROM_INTER_FEAT``).
"""

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.dataset import Dataset, SequentialDataset
from recbole.data.interaction import Interaction

from recbole_llmsrec.hooks import split_attribute

#: the hidden column of a compact row: its target's index in the store (never collated)
TARGET_ROW = "_target_row"
#: RecBole's ``LS`` modes: how many rows a user leaves out, and which part feeds train/valid/test
LEAVE_ONE_OUT = {
    "valid_and_test": (2, (0, 1, 2)),
    "valid_only": (1, (0, 1, None)),
    "test_only": (1, (0, None, 1)),
}


def is_compact(split):
    """Whether ``split``'s rows keep their lists in a store (``CompactSequentialDataset``)."""
    return getattr(split, "sequences", None) is not None and TARGET_ROW in split.inter_feat


def is_sequential(split):
    """Whether ``split`` holds sequential rows (an item list per row), compact or materialised."""
    return is_compact(split) or getattr(split, "item_id_list_field", None) in split.inter_feat


def list_fields(split):
    """``{list field: source field}`` of a sequential split's rows (``item_id_list``: ``item_id``,
    ...)."""
    suffix = split.config["LIST_SUFFIX"]
    if is_compact(split):
        return {getattr(split, f"{field}_list_field"): field for field in split.list_sources}
    return {f: f[: -len(suffix)] for f in split.inter_feat.columns if f.endswith(suffix)}


def rows_at(interaction, index):
    """The rows ``index`` (a tensor) of ``interaction``, indexed as tensors: ``Interaction[index]``
    turns the index into a Python list first, one int object per row."""
    return Interaction({field: values[index] for field, values in interaction.interaction.items()})


def window_positions(ends, lengths, max_length):
    """``(positions, valid)``, both ``[rows, max_length]``: the store index of each list entry (0
    for padding) and whether it is one. A row's list is the ``length`` entries before its target,
    oldest first, left-aligned and zero-padded, as RecBole's augmentation writes it."""
    offsets = torch.arange(max_length)
    valid = offsets < lengths.unsqueeze(1)
    positions = (ends - lengths).unsqueeze(1) + offsets
    return torch.where(valid, positions, 0), valid


def gather_lists(split, rows):
    """``rows`` (an ``Interaction`` of compact rows) with their list fields gathered from the store
    and the hidden ``TARGET_ROW`` column dropped: RecBole's row, value for value."""
    ends = rows[TARGET_ROW]
    rows.drop(TARGET_ROW)
    positions, valid = window_positions(
        ends, rows[split.item_list_length_field], split.max_item_list_len
    )
    for list_field, field in list_fields(split).items():
        values = split.sequences[field][positions]
        values[~valid] = 0
        rows[list_field] = values
    return rows


def item_lists(split, index):
    """The padded ``item_id_list`` (``[len(index), L]``) of ``split``'s rows ``index`` (a tensor of
    row numbers), compact or materialised, without collating the other fields."""
    if not is_compact(split):
        return split.inter_feat[split.item_id_list_field][index]
    ends, lengths = (
        split.inter_feat[TARGET_ROW][index],
        split.inter_feat[split.item_list_length_field],
    )
    positions, valid = window_positions(ends, lengths[index], split.max_item_list_len)
    return torch.where(valid, split.sequences[split.iid_field][positions], 0)


def covered_interactions(split, lists=True):
    """``(users, items)`` of every row's target and (``lists``) the items of its list, each
    interaction once per user even when several rows' lists hold it (numpy arrays)."""
    inter = split.inter_feat
    if not is_compact(split):
        return _materialised_interactions(split, lists)
    ends = inter[TARGET_ROW].numpy()
    starts = ends - inter[split.item_list_length_field].numpy() if lists else ends
    # a store row is covered when some row's window [start, end] holds it: +1 at each window's
    # start, -1 after its end, and a positive running sum marks the covered rows (O(store) memory)
    size = len(split.sequences) + 1
    depth = np.bincount(starts, minlength=size) - np.bincount(ends + 1, minlength=size)
    covered = np.flatnonzero(np.cumsum(depth[:-1]) > 0)
    return (
        split.sequences[split.uid_field].numpy()[covered],
        split.sequences[split.iid_field].numpy()[covered],
    )


def _materialised_interactions(split, lists):
    inter = split.inter_feat
    users, targets = inter[split.uid_field].numpy(), inter[split.iid_field].numpy()
    if not lists:
        return users, targets
    item_lists = inter[split.item_id_list_field].numpy()
    seen_rows, seen_cols = np.nonzero(item_lists)
    return (
        np.concatenate([users, users[seen_rows]]),
        np.concatenate([targets, item_lists[seen_rows, seen_cols]]),
    )


def leave_one_out_parts(keys, left_out):
    """``(order, part)``: RecBole's ``leave_one_out`` over the group keys ``keys`` without a Python
    list per group. ``order`` lists the rows grouped by key, the groups in order of their first
    row, each group's rows in row order (RecBole's ``_grouped_index``); ``part[i]`` is where
    ``order[i]`` goes: a group of n rows leaves out its last ``min(left_out, n - 1)`` rows, the
    j-th from its end to part ``left_out - j``, and keeps the others in part 0."""
    _, first_row, group = np.unique(keys, return_index=True, return_inverse=True)
    group_rank = np.empty_like(first_row)
    group_rank[np.argsort(first_row, kind="stable")] = np.arange(len(first_row))
    ranks = group_rank[group]
    order = np.argsort(ranks, kind="stable")
    counts = np.bincount(ranks)
    ranked = ranks[order]
    from_end = (np.cumsum(counts) - 1)[ranked] - np.arange(len(order))
    kept = np.minimum(left_out, counts - 1)[ranked]
    return order, np.where(from_end < kept, left_out - from_end, 0)


def user_item_matrix(users, items, shape):
    """users x items CSR, values 1, each (user, item) once; built in place from the arrays (no COO
    copy: at Amazon Books' scale the COO route held three copies of 9 million pairs)."""
    if len(users) and (users[1:] < users[:-1]).any():
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
    index_type = np.int32 if len(items) < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(shape[0] + 1, dtype=index_type)
    np.cumsum(np.bincount(users, minlength=shape[0]), out=indptr[1:])
    data = np.ones(len(items), dtype=np.float32)
    matrix = sp.csr_matrix((data, items.astype(index_type), indptr), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def interaction_matrix(split, lists=True):
    """users x items CSR (values 1) of a sequential split: every row's target and (``lists``) the
    items of its list."""
    users, items = covered_interactions(split, lists)
    return user_item_matrix(users, items, (split.user_num, split.item_num))


def binary(matrix):
    """``matrix`` as CSR with every stored value 1."""
    matrix = matrix.tocsr()
    matrix.data[:] = 1.0
    return matrix


def training_interactions(train):
    """users x items CSR of every training interaction (targets and item lists of the rows); a
    training split this plugin trimmed (one row or window per user) kept them all in
    ``history_matrix``."""
    history = split_attribute(train, "history_matrix")
    return interaction_matrix(train) if history is None else history


def cumulative_interactions(train, valid, test):
    """``(train, train + valid, train + valid + test)``: users x items CSR (values 1) of every
    interaction (targets and lists) of the splits so far; computed once and kept on ``train``
    (``hooks.SplitAttributes``), so that the machine's other processes map them (``data.shared``)
    instead of each computing its own."""
    cached = split_attribute(train, "cumulative_interactions")
    if cached is None:
        train_items = training_interactions(train)
        before_test = binary(train_items + interaction_matrix(valid))
        train.cumulative_interactions = (
            train_items,
            before_test,
            binary(before_test + interaction_matrix(test)),
        )
    return train.cumulative_interactions


class CompactSequentialDataset(SequentialDataset):
    """RecBole's ``SequentialDataset`` whose rows gather their lists when collated (module
    docstring). Same rows, splits, orders and batches as RecBole's; memory O(interactions)."""

    sequences = None  # the store (an Interaction); None until ``data_augmentation`` ran
    prebuilt_splits = None  # the splits another process of this machine built (``data.shared``)

    def build(self):
        """RecBole's splits (``split_rows``), or those this machine's first process built and
        shared (``data.shared``)."""
        if self.prebuilt_splits is not None:
            return self.prebuilt_splits
        return self.split_rows()

    def split_rows(self):
        """RecBole's ``build``: ordering, grouping and splitting of the rows."""
        return super().build()

    def data_augmentation(self):
        """RecBole's augmentation without the lists: one row per interaction after the user's
        first, its target that interaction, ``item_length`` the number of earlier ones, at most
        ``MAX_ITEM_LIST_LENGTH``, and ``TARGET_ROW`` where the target sits in the store."""
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        self.sort(by=[self.uid_field, self.time_field], ascending=True)
        self.list_sources = [field for field in self.inter_feat if field != self.uid_field]
        self.sequences = self.inter_feat
        users = self.sequences[self.uid_field].numpy()
        first = np.r_[True, users[1:] != users[:-1]]
        user_start = np.maximum.accumulate(np.where(first, np.arange(len(users)), 0))
        targets = np.flatnonzero(~first)
        index = torch.from_numpy(targets)
        rows = rows_at(self.sequences, index)
        rows[self.item_list_length_field] = torch.from_numpy(
            np.minimum(targets - user_start[targets], self.max_item_list_len)
        )
        rows[TARGET_ROW] = index
        self.inter_feat = rows

    def leave_one_out(self, group_by, leave_one_mode):
        """RecBole's ``leave_one_out``, the same rows in the same order in each part, in O(rows)
        memory and time (``leave_one_out_parts``); other arguments get RecBole's own errors."""
        if group_by is None or leave_one_mode not in LEAVE_ONE_OUT:
            return super().leave_one_out(group_by, leave_one_mode)
        left_out, parts = LEAVE_ONE_OUT[leave_one_mode]
        order, part = leave_one_out_parts(self.inter_feat[group_by].numpy(), left_out)
        self._drop_unused_col()
        splits = []
        for kept in parts:
            index = torch.from_numpy(order[part == kept] if kept is not None else order[:0])
            splits.append(self.copy(rows_at(self.inter_feat, index)))
        return splits

    def __getitem__(self, index, join=True):
        if not is_compact(self):
            return super().__getitem__(index, join)
        one_row = isinstance(index, (int, np.integer))
        rows = gather_lists(self, self.inter_feat[[index] if one_row else index])
        rows = self.join(rows) if join else rows
        return rows[0] if one_row else rows  # one row: RecBole's shapes, without the row axis

    def _drop_unused_col(self):
        """RecBole's, where ``unused_col`` may also name a list field (``rating_list``) of compact
        rows: it is no longer gathered and leaves the field tables, as RecBole's dropped column
        does."""
        if not is_compact(self):
            return super()._drop_unused_col()
        source_of = {getattr(self, f"{field}_list_field"): field for field in self.list_sources}
        for feat_name, unused_fields in (self.config["unused_col"] or {}).items():
            feat = getattr(self, feat_name + "_feat")
            for field in unused_fields:
                if feat_name == "inter" and field in source_of:
                    self.list_sources.remove(source_of[field])
                    self._forget_field(field)
                elif field in feat:
                    self._del_col(feat, field)
                else:
                    self.logger.warning(
                        f"Field [{field}] is not in [{feat_name}_feat], which can not be set in "
                        "`unused_col`."
                    )

    def _forget_field(self, field):
        for table in (
            self.field2id_token,
            self.field2token_id,
            self.field2seqlen,
            self.field2source,
            self.field2type,
        ):
            table.pop(field, None)

    def inter_matrix(self, form="coo", value_field=None):
        """RecBole's: every row's target, plus the first item of the rows whose list holds one item
        (each user's first interaction)."""
        if not is_compact(self):
            return super().inter_matrix(form, value_field)
        first_rows = self.inter_feat[self.item_list_length_field] == 1
        firsts = self.inter_feat[TARGET_ROW][first_rows] - 1
        columns = {}
        for field, values in self.inter_feat.interaction.items():
            if field in (TARGET_ROW, self.item_list_length_field):
                continue
            earlier = (
                values[first_rows] if field == self.uid_field else self.sequences[field][firsts]
            )
            columns[field] = torch.cat([values, earlier])
        return self._create_sparse_matrix(
            Interaction(columns), self.uid_field, self.iid_field, form, value_field
        )


def materialised(dataset_class):
    """``dataset_class`` with RecBole 1.2.1's own layout: every row's lists written out by RecBole's
    augmentation (O(interactions x L)). The reference the compact layer is tested and measured
    against (``tests/test_sequences.py``, ``benchmarks/data_scale.py``); no run uses it."""
    overrides = {
        "data_augmentation": SequentialDataset.data_augmentation,
        "__getitem__": Dataset.__getitem__,
        "inter_matrix": SequentialDataset.inter_matrix,
        "leave_one_out": Dataset.leave_one_out,
    }
    return type(f"Materialised{dataset_class.__name__}", (dataset_class,), overrides)
