"""RecBole's split with the evaluation protocol on the valid and test loaders
(``data_preparation``)."""

import numpy as np
import torch
from recbole.data import data_preparation as recbole_data_preparation
from recbole.data.dataloader import FullSortEvalDataLoader, NegSampleEvalDataLoader
from recbole.utils import ModelType

from recbole_llmsrec.data.sequences import binary, interaction_matrix, is_sequential, list_fields
from recbole_llmsrec.distribution.training import per_process_batch
from recbole_llmsrec.evaluation.histories import ProtocolHistories, item_train_counts
from recbole_llmsrec.evaluation.sampler import SeededNegativeSampler


class HistoryMaskedFullSortEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-sort loader plus ``history_index`` (scored ``-inf`` by RecBole's trainer): the
    user's items of earlier splits and of the row's item list, minus the target."""

    def __init__(self, config, dataset, sampler, before, shuffle=False):
        self.before = before
        self.item_list_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def collate_fn(self, index):
        interaction, _, positive_u, positive_i = super().collate_fn(index)
        earlier = self.before[interaction[self.uid_field].numpy()].tocoo()
        item_lists = interaction[self.item_list_field]
        list_rows, list_cols = torch.nonzero(item_lists, as_tuple=True)
        rows = torch.cat([torch.from_numpy(earlier.row).long(), list_rows])
        items = torch.cat([torch.from_numpy(earlier.col).long(), item_lists[list_rows, list_cols]])
        keep = items != interaction[self.iid_field][rows]
        return interaction, (rows[keep], items[keep]), positive_u, positive_i


def evaluation_row_users(loader):
    """The internal user id of each evaluation row, in the order RecBole's evaluator collects
    them."""
    if hasattr(loader, "uid_list") and not (
        isinstance(loader, FullSortEvalDataLoader) and is_sequential(loader._dataset)
    ):
        return np.asarray(loader.uid_list)
    return loader._dataset.inter_feat[loader._dataset.uid_field].numpy()


def _negative_weights(config, phase, histories, item_num):
    weights = np.ones(item_num)
    if config[f"{phase}_neg_sample_args"]["distribution"] == "popularity":
        weights = np.asarray(histories.interacted.sum(axis=0)).ravel()
    weights[0] = 0.0
    return weights


def _sample_size(config, phase):
    args = config[f"{phase}_neg_sample_args"]
    if args["distribution"] == "none" or args["sample_num"] == "none":
        return None
    return int(args["sample_num"])


def _check_sample_size(config, phase, split, available, reason):
    num = _sample_size(config, phase)
    if num is not None and num > available:
        mode = config["eval_args"]["mode"][phase]
        raise ValueError(
            f"eval_args.mode {mode!r} ({phase}) asks for {num} negatives per user, but dataset "
            f"{config['dataset']} has only {available} {reason}. Use fewer negatives, or "
            "mode: full (with eval_mask_history: True to leave the history out of the ranking)."
        )


def shuffle_histories(loader, config):
    """``eval_shuffle_history``: a row's list fields permuted alike, seeded with (``seed``, user,
    length): the same order in every mode, process and model. After any masking (it reads items, not
    order)."""
    collate, uid, length_field = (
        loader.collate_fn,
        config["USER_ID_FIELD"],
        config["ITEM_LIST_LENGTH_FIELD"],
    )
    lists = list(list_fields(loader._dataset))

    def shuffled(index):
        interaction, *rest = collate(index)
        order = torch.arange(interaction[lists[0]].shape[1]).repeat(len(interaction), 1)
        for row, (user, n) in enumerate(
            zip(interaction[uid].tolist(), interaction[length_field].tolist())
        ):
            order[row, :n] = torch.from_numpy(
                np.random.default_rng([config["seed"], user, n]).permutation(n)
            )
        for field in lists:
            interaction[field] = interaction[field][
                torch.arange(len(interaction)).unsqueeze(1), order
            ]
        return (interaction, *rest)

    loader.collate_fn = shuffled


def data_preparation(config, dataset):
    """RecBole's ``data_preparation`` with the evaluation protocol on the valid and test loaders
    (only ``eval_item_groups`` for general models: RecBole already masks and samples history-aware
    for them)."""
    with per_process_batch(config):
        train_data, valid_data, test_data = recbole_data_preparation(config, dataset)
    sequential = config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    counts = (
        item_train_counts(train_data._dataset, sequential) if config["eval_item_groups"] else None
    )
    valid_data.item_train_counts = test_data.item_train_counts = counts
    if not sequential:
        return train_data, valid_data, test_data

    mask, exclude = bool(config["eval_mask_history"]), bool(config["eval_neg_exclude_history"])
    histories = ProtocolHistories(
        *[loader._dataset for loader in (train_data, valid_data, test_data)]
    )
    loaders = {"valid": valid_data, "test": test_data}
    for phase, loader in loaders.items():
        if isinstance(loader, FullSortEvalDataLoader):
            if mask:
                loaders[phase] = HistoryMaskedFullSortEvalDataLoader(
                    config, loader._dataset, loader._sampler, histories.before[phase]
                )
        elif _sample_size(config, phase) is not None:
            loaders[phase] = seeded_sampled_loader(
                config, phase, loader._dataset, histories, exclude
            )
    for loader in loaders.values():
        loader.item_train_counts = counts
        if config["eval_shuffle_history"]:
            shuffle_histories(loader, config)
    return train_data, loaders["valid"], loaders["test"]


def seeded_sampled_loader(config, phase, split, histories, exclude_history):
    """RecBole's ``NegSampleEvalDataLoader`` over ``split`` with a ``SeededNegativeSampler``
    excluding the user's whole history (``exclude_history``) or the phase's targets (RecBole's
    rule)."""
    excluded = (
        histories.interacted if exclude_history else binary(interaction_matrix(split, lists=False))
    )
    weights = _negative_weights(config, phase, histories, split.item_num)
    sampler = SeededNegativeSampler(phase, excluded, weights, config["seed"])
    users = split.inter_feat[split.uid_field].numpy()
    most_excluded = int(np.diff(excluded.indptr)[users].max(initial=0))
    reason = (
        "items outside the history of its most active user (eval_neg_exclude_history: True)"
        if exclude_history
        else "items besides the target"
    )
    _check_sample_size(config, phase, split, len(sampler.drawable) - most_excluded, reason)
    return NegSampleEvalDataLoader(config, split, sampler, shuffle=False)
