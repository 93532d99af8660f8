"""Small building blocks the models share."""

import torch
from torch import nn

from recbole_llmsrec.distribution.gathering import sharded_rows
from recbole_llmsrec.hooks import ItemMatrixHooks


def projection_mlp(in_size, hidden_size, out_size, activation):
    """Linear -> LayerNorm -> activation -> Linear, Xavier-normal: LLM-SRec's item_emb_proj,
    pred_user, pred_item, pred_user_CF2 and A-LLMRec's log_emb_proj, item_emb_proj."""
    mlp = nn.Sequential(
        nn.Linear(in_size, hidden_size),
        nn.LayerNorm(hidden_size),
        activation,
        nn.Linear(hidden_size, out_size),
    )
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
    return mlp


class ItemMatrixPerEvaluation(ItemMatrixHooks):
    """Mixin: ``item_matrix()`` builds every item's representation with the hook
    ``compute_item_matrix(items)`` (row 0 = padding, zeros; items sharded across ranks) once until
    the model trains or loads weights."""

    _item_matrix = None
    item_matrix_computations = 0

    @torch.no_grad()
    def item_matrix(self):
        if self._item_matrix is None:
            items = torch.arange(1, self.n_items, device=self.item_embedding_device())
            matrix = sharded_rows(self.compute_item_matrix, items, self.config)
            self._item_matrix = torch.cat([torch.zeros_like(matrix[:1]), matrix])
            self.item_matrix_computations += 1
        return self._item_matrix

    def train(self, mode=True):
        super().train(mode)
        if mode:
            self._item_matrix = None
        return self

    def load_state_dict(self, state_dict, strict=True, assign=False):
        self._item_matrix = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def in_length_order(compute, rows, lengths, batch_size):
    """``compute(rows[chunk])`` over chunks of ``batch_size`` rows taken in order of ``lengths``
    (texts of similar length batched together pad little), concatenated back in the order of
    ``rows``."""
    order = torch.argsort(lengths, stable=True)
    return torch.cat([compute(rows[chunk]) for chunk in order.split(batch_size)])[
        torch.argsort(order)
    ]


def rows_by_user(interaction, *fields):
    """``(first_row, group)`` of a sampled-evaluation batch (a row per user and candidate): each
    user's first row and each row's user, a user being the distinct values of ``fields`` (``None``
    skipped; give the user id: two users may have identical sequences)."""
    key = torch.cat([interaction[f].long().view(len(interaction), -1) for f in fields if f], dim=1)
    _, group = torch.unique(key, dim=0, return_inverse=True)
    return first_rows(group), group


def first_rows(group):
    """The index of each group's first row, given each row's group index (0 .. G-1, all present)."""
    first = torch.full((int(group.max()) + 1,), len(group), dtype=torch.long, device=group.device)
    return first.scatter_reduce_(
        0, group, torch.arange(len(group), device=group.device), reduce="amin"
    )
