"""The evaluation protocol of every model run through the plugin, RecBole's and ours, at the loaders and
the trainer, never inside a model (README "Evaluation protocol"). ``eval_mask_history``: RecBole's
sequential loader masks nothing; the target is never masked, even as a repeat (the HLLM original masked
it: every repeat a miss). ``eval_neg_exclude_history``: seeded negatives outside the user's history, the
same at every validation, process and model (RecBole excluded only the target; the originals re-drew
unseeded ones). ``PerUserSampledEvaluation``: one forward per user (RecBole: one per user and candidate)."""

import inspect
import math

import numpy as np
import torch
from recbole.data import data_preparation as recbole_data_preparation
from recbole.data.dataloader import FullSortEvalDataLoader, NegSampleEvalDataLoader
from recbole.evaluator.base_metric import TopkMetric
from recbole.evaluator.collector import DataStruct
from recbole.utils import EvaluatorType, ModelType

from recbole_llmsrec.data.dataset import interaction_matrix
from recbole_llmsrec.distributed import EVAL_ROW_KEYS, TARGET_KEY, per_process_batch
from recbole_llmsrec.layers import first_rows

PHASES = ("valid", "test")


def _binary(matrix):
    matrix = matrix.tocsr()
    matrix.data[:] = 1.0
    return matrix


def _training_items(train):
    """users x items CSR of every training interaction (targets and item lists of the rows); a training
    split this plugin trimmed (one row or window per user) kept them all in ``history_matrix``."""
    history = getattr(train, "history_matrix", None)
    return interaction_matrix(train) if history is None else history


class ProtocolHistories:
    """Per-user item sets of a leave-one-out split (users x items CSR): ``before[phase]``, the items of
    every earlier split (valid: train; test: train + valid); ``interacted``, everything in any split."""

    def __init__(self, train, valid, test):
        train_items = _training_items(train)
        valid_items = interaction_matrix(valid)
        self.before = {"valid": train_items, "test": _binary(train_items + valid_items)}
        self.interacted = _binary(train_items + valid_items + interaction_matrix(test))


class HistoryMaskedFullSortEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-sort loader plus ``history_index`` (scored ``-inf`` by RecBole's trainer): the user's
    items of earlier splits and of the row's item list, minus the target."""

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


class SeededNegativeSampler:
    """A sampler for RecBole's ``NegSampleEvalDataLoader``: one phase's negatives, distinct, outside each
    user's ``excluded`` items (users x items CSR: everything the user interacted with under
    ``eval_neg_exclude_history``, else the phase's targets, RecBole's rule), drawn by a generator seeded
    with (``seed``, phase, user, the user's row index): the same candidates for every model, validation
    and number of processes (RecBole's sampler drew from the global generator while batches were
    collated, so two models, or two validations, saw other candidates). ``weights`` per item id (0 for
    padding): uniform (``uniN``) or users per item (``popN``). Rejection sampling: O(N) per user, not
    O(catalogue), unless N nears what is left. Interface RecBole's loader calls:
    ``sample_by_user_ids(user_ids, item_ids, num)``; ``candidates(user, occurrence, num)`` is one row's draw."""

    def __init__(self, phase, excluded, weights, seed):
        self.phase, self.excluded, self.seed = phase, excluded, seed
        self.weights = np.asarray(weights, dtype=np.float64)
        self.cumulative = np.cumsum(self.weights / self.weights.sum())
        self.drawable = np.flatnonzero(self.weights > 0)

    def candidates(self, user, occurrence, num):
        """The ``num`` negatives of ``user``'s row number ``occurrence`` (0 for its first) in this phase."""
        rng = np.random.default_rng([self.seed, PHASES.index(self.phase), int(user), occurrence])
        seen = self.excluded.indices[self.excluded.indptr[user] : self.excluded.indptr[user + 1]]
        if 2 * num > len(self.drawable) - len(seen):  # dense case: choose from the complement directly
            allowed = np.setdiff1d(self.drawable, seen)
            weights = self.weights[allowed]
            return rng.choice(allowed, size=num, replace=False, p=weights / weights.sum())
        chosen = np.empty(0, dtype=np.int64)
        while len(chosen) < num:
            draw = np.searchsorted(self.cumulative, rng.random(2 * (num - len(chosen)) + 8), side="right")
            chosen = np.concatenate([chosen, draw[~np.isin(draw, seen)]])
            _, first = np.unique(chosen, return_index=True)
            chosen = chosen[np.sort(first)]
        return chosen[:num]

    def sample_by_user_ids(self, user_ids, item_ids, num):
        """``num`` negatives per row, RecBole's layout: the k-th of row i at ``k * len(user_ids) + i``."""
        columns = [self.candidates(user, occurrence, num)
                   for user, occurrence in zip(*row_occurrences(user_ids))]
        return torch.from_numpy(np.stack(columns, axis=1).reshape(-1)).long()


def is_sequential_split(split):
    """Whether ``split`` holds sequential rows (an item list per row)."""
    return getattr(split, "item_id_list_field", None) in split.inter_feat


def evaluation_row_users(loader):
    """The internal user id of each evaluation row, in the order RecBole's evaluator collects them."""
    if hasattr(loader, "uid_list") and not (
        isinstance(loader, FullSortEvalDataLoader) and is_sequential_split(loader._dataset)
    ):
        return np.asarray(loader.uid_list)
    return loader._dataset.inter_feat[loader._dataset.uid_field].numpy()


def row_occurrences(user_ids):
    """``(users, occurrence)``: each row's user and how many earlier rows of ``user_ids`` it has."""
    seen, users, occurrence = {}, np.asarray(user_ids).tolist(), []
    for user in users:
        seen[user] = seen.get(user, -1) + 1
        occurrence.append(seen[user])
    return users, occurrence


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
            "mode: full (with eval_mask_history: True to leave the history out of the ranking).")


def training_matrix(train, sequential):
    """users x items CSR (values 1) of every training interaction of the split ``train``."""
    return _training_items(train) if sequential else _binary(train.inter_matrix(form="csr"))


def item_train_counts(train, sequential):
    """Each item's number of users with it in their training interactions (``eval_item_groups``)."""
    return np.asarray(training_matrix(train, sequential).sum(axis=0)).ravel()


def shuffle_histories(loader, config):
    """``eval_shuffle_history``: a row's list fields permuted alike, seeded with (``seed``, user, length):
    the same order in every mode, process and model. After any masking (it reads items, not order)."""
    collate, uid, length_field = loader.collate_fn, config["USER_ID_FIELD"], config["ITEM_LIST_LENGTH_FIELD"]
    lists = [f for f in loader._dataset.inter_feat.columns if f.endswith(config["LIST_SUFFIX"])]

    def shuffled(index):
        interaction, *rest = collate(index)
        order = torch.arange(interaction[lists[0]].shape[1]).repeat(len(interaction), 1)
        for row, (user, n) in enumerate(zip(interaction[uid].tolist(), interaction[length_field].tolist())):
            order[row, :n] = torch.from_numpy(np.random.default_rng([config["seed"], user, n]).permutation(n))
        for field in lists:
            interaction[field] = interaction[field][torch.arange(len(interaction)).unsqueeze(1), order]
        return (interaction, *rest)

    loader.collate_fn = shuffled


def data_preparation(config, dataset):
    """RecBole's ``data_preparation`` with the evaluation protocol on the valid and test loaders (only
    ``eval_item_groups`` for general models: RecBole already masks and samples history-aware for them)."""
    with per_process_batch(config):
        train_data, valid_data, test_data = recbole_data_preparation(config, dataset)
    sequential = config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    counts = item_train_counts(train_data._dataset, sequential) if config["eval_item_groups"] else None
    valid_data.item_train_counts = test_data.item_train_counts = counts
    if not sequential:
        return train_data, valid_data, test_data

    mask, exclude = bool(config["eval_mask_history"]), bool(config["eval_neg_exclude_history"])
    histories = ProtocolHistories(*[loader._dataset for loader in (train_data, valid_data, test_data)])
    loaders = {"valid": valid_data, "test": test_data}
    for phase, loader in loaders.items():
        if isinstance(loader, FullSortEvalDataLoader):
            if mask:
                loaders[phase] = HistoryMaskedFullSortEvalDataLoader(
                    config, loader._dataset, loader._sampler, histories.before[phase])
        elif _sample_size(config, phase) is not None:
            loaders[phase] = seeded_sampled_loader(config, phase, loader._dataset, histories, exclude)
    for loader in loaders.values():
        loader.item_train_counts = counts
        if config["eval_shuffle_history"]:
            shuffle_histories(loader, config)
    return train_data, loaders["valid"], loaders["test"]


def seeded_sampled_loader(config, phase, split, histories, exclude_history):
    """RecBole's ``NegSampleEvalDataLoader`` over ``split`` with a ``SeededNegativeSampler`` excluding the
    user's whole history (``exclude_history``) or the phase's targets (RecBole's rule)."""
    excluded = histories.interacted if exclude_history else _binary(interaction_matrix(split, lists=False))
    weights = _negative_weights(config, phase, histories, split.item_num)
    sampler = SeededNegativeSampler(phase, excluded, weights, config["seed"])
    users = split.inter_feat[split.uid_field].numpy()
    most_excluded = int(np.diff(excluded.indptr)[users].max(initial=0))
    reason = ("items outside the history of its most active user (eval_neg_exclude_history: True)"
              if exclude_history else "items besides the target")
    _check_sample_size(config, phase, split, len(sampler.drawable) - most_excluded, reason)
    return NegSampleEvalDataLoader(config, split, sampler, shuffle=False)


# RecBole 1.2.1 models whose predict scores unlike full_sort_predict (CORE's skips the item L2 normalisation)
RECBOLE_MODELS_SCORING_FULL_SORT_DIFFERENTLY = ("CORE",)


def scores_candidates_from_full_sort(model):
    return (getattr(model, "sampled_scores_from_full_sort", True)
            and type(model).__name__ not in RECBOLE_MODELS_SCORING_FULL_SORT_DIFFERENTLY)


class PerUserSampledEvaluation:
    """Trainer mixin: sampled evaluation reads the candidates' scores from one ``full_sort_predict`` row per
    user, not RecBole's ``predict`` per (user, candidate), except where scores would change: a model whose
    ``full_sort_predict`` is missing or scores unlike ``predict`` (``sampled_scores_from_full_sort = False``:
    ALLMRec ranks a user's candidates together; CORE), a sequential user with several rows (ratio split)."""

    def _neg_sample_batch_eval(self, batched_data):
        interaction, row_idx, positive_u, positive_i = batched_data
        if (self.config["eval_type"] != EvaluatorType.RANKING  # labeled mode: no row index at all
                or not scores_candidates_from_full_sort(self.model)):
            return super()._neg_sample_batch_eval(batched_data)
        first_row = first_rows(row_idx)  # RecBole's row_idx: each row's user, 0 .. users - 1
        if self.config["MODEL_TYPE"] == ModelType.SEQUENTIAL and len(positive_u) > len(first_row):
            return super()._neg_sample_batch_eval(batched_data)  # several prefixes per user
        try:
            user_scores = self.model.full_sort_predict(interaction[first_row].to(self.device))
        except NotImplementedError:
            self.model.sampled_scores_from_full_sort = False
            return super()._neg_sample_batch_eval(batched_data)
        user_scores = user_scores.view(len(first_row), -1)
        rows, items = row_idx.to(self.device), interaction[self.config["ITEM_ID_FIELD"]].to(self.device)
        scores = torch.full_like(user_scores, -np.inf)
        scores[rows, items] = user_scores[rows, items]
        return interaction, scores, positive_u, positive_i


def per_row_metric_values(evaluator, struct):
    """``{"<metric>@<k>": float64 array, one value per evaluation row}`` for RecBole's top-k metrics (Hit,
    Recall, NDCG, MRR, Precision, MAP): the values RecBole averages into its result."""
    values = {}
    for name, metric in evaluator.metric_class.items():
        if not isinstance(metric, TopkMetric):
            continue
        pos_index, pos_len = metric.used_info(struct)
        takes_length = "pos_len" in inspect.signature(metric.metric_info).parameters
        rows = metric.metric_info(pos_index, pos_len) if takes_length else metric.metric_info(pos_index)
        values.update({f"{name}@{k}": np.asarray(rows[:, k - 1], dtype=np.float64) for k in metric.topk})
    return values


class StagedFullSortEvaluation:
    """Trainer mixin: a model whose full sort works in stages (retrieve, then rerank a few: ALLMRec) must
    not spend its stages on items the protocol scores ``-inf`` afterwards. Such a model declares
    ``full_sort_predict_excluding(interaction, excluded)`` (``excluded``: [B, n_items] bool, exactly the
    items ``eval_mask_history`` masks, the target never; all False without masking), and it is called
    instead of ``full_sort_predict``; the mask is applied to its scores as to every model's."""

    def _full_sort_batch_eval(self, batched_data):
        rank_excluding = getattr(self.model, "full_sort_predict_excluding", None)
        if rank_excluding is None:
            return super()._full_sort_batch_eval(batched_data)
        interaction, history_index, positive_u, positive_i = batched_data
        excluded = torch.zeros(len(interaction), self.tot_item_num, dtype=torch.bool)
        if history_index is not None:
            excluded[history_index] = True
        scores = rank_excluding(interaction.to(self.device), excluded).view(-1, self.tot_item_num)
        scores[:, 0] = -np.inf
        scores[excluded.to(scores.device)] = -np.inf
        return interaction, scores, positive_u, positive_i


class EvaluationResults:
    """Trainer mixin: results as plain floats (RecBole's are numpy scalars) and ``eval_item_groups``
    [t1, ..., tn]: every metric also over the rows whose target has [0, t1), ..., [tn, inf) training users
    (A-LLMRec's paper splits by popularity), keyed ``<metric> items[a,b)`` beside ``rows items[a,b)``."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.item_groups, evaluate = sorted(config["eval_item_groups"] or []), self.evaluator.evaluate
        self.per_row_values = {}

        def evaluate_and_keep_rows(struct):
            self.per_row_values = per_row_metric_values(self.evaluator, struct)
            return {key: value if isinstance(value, int) else float(value)
                    for key, value in self._grouped(struct, evaluate).items()}

        self.evaluator.evaluate = evaluate_and_keep_rows
        if not self.item_groups:
            return
        collector, collect, struct_of = self.eval_collector, self.eval_collector.eval_batch_collect, \
            self.eval_collector.get_data_struct

        def collect_with_targets(scores, interaction, positive_u, positive_i):
            collect(scores, interaction, positive_u, positive_i)
            if len(positive_u) != len(scores) or len(positive_u.unique()) != len(scores):
                raise ValueError("eval_item_groups needs one target per evaluation row: a leave-one-out "
                                 "split (eval_args.split: {LS: valid_and_test}).")
            collector.data_struct.update_tensor(TARGET_KEY, positive_i[positive_u.argsort()].cpu())

        def struct_without_targets():  # RecBole's get_data_struct clears only its own per-row keys
            struct = struct_of()
            collector.data_struct._data_dict.pop(TARGET_KEY, None)
            return struct

        collector.eval_batch_collect, collector.get_data_struct = collect_with_targets, struct_without_targets

    def per_user_values(self, eval_data):
        """The last evaluation's per-row values of every top-k metric (RecBole computes them before
        averaging), with each row's raw user token: ``{"users": [...], "hit@10": array, ...}``."""
        split = eval_data._dataset
        users = np.asarray(split.field2id_token[split.uid_field], dtype=object)[evaluation_row_users(eval_data)]
        return {"users": users.tolist(), **self.per_row_values}

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        self._item_counts = getattr(eval_data, "item_train_counts", None)
        return super().evaluate(eval_data, load_best_model, model_file, show_progress)

    def _grouped(self, struct, evaluate):
        result = evaluate(struct)
        if TARGET_KEY not in struct:
            return result
        counts = torch.as_tensor(self._item_counts)[struct[TARGET_KEY]]
        bounds = [0, *self.item_groups, math.inf]
        for low, high in zip(bounds, bounds[1:]):
            rows, name = (counts >= low) & (counts < high), f"items[{low},{high})"
            result[f"rows {name}"] = int(rows.sum())
            if rows.any():
                group = DataStruct()
                for key, value in struct._data_dict.items():
                    group.set(key, value[rows] if key in EVAL_ROW_KEYS else value)
                result.update({f"{key} {name}": value for key, value in evaluate(group).items()})
        return result
