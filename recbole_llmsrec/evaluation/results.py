"""What an evaluation collects and the metrics computed from it, for every model run through the
plugin.

``ProtocolCollector`` (RecBole's ``Collector``) keeps each row's target for ``eval_item_groups``
and, in a distributed run, puts every rank's rows together in one-process order before any metric is
computed. ``ProtocolEvaluator`` (RecBole's ``Evaluator``) returns plain floats, every metric also
per item group, and keeps each row's value of every top-k metric (``per_row_values``: the group
run's significance tests). The trainer tells both what one evaluation covers with ``start``.
"""

import inspect
import math

import numpy as np
import torch
from recbole.evaluator import Collector, Evaluator
from recbole.evaluator.base_metric import TopkMetric
from recbole.evaluator.collector import DataStruct

from recbole_llmsrec.distribution.gathering import gather_eval_rows
from recbole_llmsrec.evaluation.loaders import evaluation_row_users

TARGET_KEY = "rec.target_item"  # each row's target, for eval_item_groups
EVAL_ROW_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label", TARGET_KEY)


def reachable_topk(scores, positive_u, positive_i, k):
    """RecBole's ``rec.topk`` rows (whether each of the top ``k`` items is a target, then the
    number of targets), except that an item scored -inf is never retrieved: a generative model
    scores only the items it generated, and RecBole's ``torch.topk`` would otherwise fill the list
    with arbitrary -inf ties, counting a target among them as a hit. For every other model this
    changes nothing: -inf marks only items that are never a row's target (padding, the history
    ``eval_mask_history`` masks)."""
    top_scores, top_items = torch.topk(scores, k, dim=-1)
    targets = torch.zeros_like(scores, dtype=torch.int)
    targets[positive_u, positive_i] = 1
    hits = torch.gather(targets, 1, top_items) * (top_scores > -torch.inf).int()
    return torch.cat((hits, targets.sum(dim=1, keepdim=True)), dim=1)


class ProtocolCollector(Collector):
    """RecBole's collector, plus each row's target (``eval_item_groups``) and the rows of every
    rank."""

    def __init__(self, config):
        super().__init__(config)
        self.item_groups = bool(config["eval_item_groups"])
        self.total_rows = None

    def start(self, total_rows, distributed):
        """One evaluation begins: ``total_rows`` rows over all ranks (gathered when
        ``distributed``)."""
        self.total_rows = total_rows if distributed else None

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        topk = self.register.need("rec.topk")
        if topk:  # ours instead of RecBole's, which counts a target among -inf ties as a hit
            self.data_struct.update_tensor(
                "rec.topk", reachable_topk(scores_tensor, positive_u, positive_i, max(self.topk))
            )
        setattr(self.register, "rec.topk", False)
        try:
            super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        finally:
            setattr(self.register, "rec.topk", topk)
        if not self.item_groups:
            return
        if len(positive_u) != len(scores_tensor) or len(positive_u.unique()) != len(scores_tensor):
            raise ValueError(
                "eval_item_groups needs one target per evaluation row: a leave-one-out split "
                "(eval_args.split: {LS: valid_and_test})."
            )
        self.data_struct.update_tensor(TARGET_KEY, positive_i[positive_u.argsort()].cpu())

    def get_data_struct(self):
        """RecBole's struct, with three repairs: entries that are not tensors (RecBole's own counts,
        e.g. ``data.count_items``) are passed through instead of moved with ``.cpu()``; the targets
        are cleared like RecBole's per-row keys; distributed rows are gathered."""
        data = self.data_struct._data_dict
        counts = {
            key: data.pop(key) for key in list(data) if not isinstance(data[key], torch.Tensor)
        }
        struct = super().get_data_struct()
        data.update(counts)
        struct._data_dict.update(counts)
        data.pop(TARGET_KEY, None)
        if self.total_rows is not None:
            struct = gather_eval_rows(struct, self.total_rows, EVAL_ROW_KEYS)
        return struct


def per_row_metric_values(evaluator, struct):
    """``{"<metric>@<k>": float64 array, one value per evaluation row}`` for RecBole's top-k metrics
    (Hit, Recall, NDCG, MRR, Precision, MAP): the values RecBole averages into its result."""
    values = {}
    for name, metric in evaluator.metric_class.items():
        if not isinstance(metric, TopkMetric):
            continue
        pos_index, pos_len = metric.used_info(struct)
        takes_length = "pos_len" in inspect.signature(metric.metric_info).parameters
        rows = (
            metric.metric_info(pos_index, pos_len)
            if takes_length
            else metric.metric_info(pos_index)
        )
        values.update(
            {f"{name}@{k}": np.asarray(rows[:, k - 1], dtype=np.float64) for k in metric.topk}
        )
    return values


class ProtocolEvaluator(Evaluator):
    """RecBole's evaluator with results as plain floats (RecBole's are numpy scalars) and
    ``eval_item_groups`` [t1, ..., tn]: every metric also over the rows whose target has [0, t1),
    ..., [tn, inf) training users (A-LLMRec's paper splits by popularity), keyed ``<metric>
    items[a,b)`` beside ``rows items[a,b)``. ``per_row_values``: the last evaluation's values per
    row."""

    def __init__(self, config):
        super().__init__(config)
        self.item_groups = sorted(config["eval_item_groups"] or [])
        self.item_counts = None
        self.per_row_values = {}

    def start(self, item_counts):
        """One evaluation begins: each item's number of training users (``eval_item_groups``)."""
        self.item_counts = item_counts

    def evaluate(self, dataobject):
        self.per_row_values = per_row_metric_values(self, dataobject)
        result = super().evaluate(dataobject)
        if TARGET_KEY in dataobject:
            result.update(self._per_group(dataobject))
        return {
            key: value if isinstance(value, int) else float(value) for key, value in result.items()
        }

    def _per_group(self, struct):
        counts = torch.as_tensor(self.item_counts)[struct[TARGET_KEY]]
        bounds, result = [0, *self.item_groups, math.inf], {}
        for low, high in zip(bounds, bounds[1:]):
            rows, name = (counts >= low) & (counts < high), f"items[{low},{high})"
            result[f"rows {name}"] = int(rows.sum())
            if rows.any():
                group = DataStruct()
                for key, value in struct._data_dict.items():
                    group.set(key, value[rows] if key in EVAL_ROW_KEYS else value)
                result.update({f"{k} {name}": v for k, v in super().evaluate(group).items()})
        return result


def per_user_values(evaluator, eval_data):
    """The last evaluation's per-row values of every top-k metric (RecBole computes them before
    averaging), with each row's raw user token: ``{"users": [...], "hit@10": array, ...}``."""
    split = eval_data._dataset
    tokens = np.asarray(split.field2id_token[split.uid_field], dtype=object)
    users = tokens[evaluation_row_users(eval_data)]
    return {"users": users.tolist(), **evaluator.per_row_values}
