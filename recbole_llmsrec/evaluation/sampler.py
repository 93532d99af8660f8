"""Seeded negative sampling for RecBole's ``NegSampleEvalDataLoader``: the same candidates for every
model, validation and number of processes."""

import numpy as np
import torch

PHASES = ("valid", "test")


class SeededNegativeSampler:
    """A sampler for RecBole's ``NegSampleEvalDataLoader``: one phase's negatives, distinct, outside
    each user's ``excluded`` items (users x items CSR: everything the user interacted with under
    ``eval_neg_exclude_history``, else the phase's targets, RecBole's rule), drawn by a generator
    seeded with (``seed``, phase, user, the user's row index): the same candidates for every model,
    validation and number of processes (RecBole's sampler drew from the global generator while
    batches were collated, so two models, or two validations, saw other candidates). ``weights`` per
    item id (0 for padding): uniform (``uniN``) or users per item (``popN``). Rejection sampling:
    O(N) per user, not O(catalogue), unless N nears what is left. Interface RecBole's loader calls:
    ``sample_by_user_ids(user_ids, item_ids, num)``; ``candidates(user, occurrence, num)`` is one
    row's draw."""

    def __init__(self, phase, excluded, weights, seed):
        self.phase, self.excluded, self.seed = phase, excluded, seed
        self.weights = np.asarray(weights, dtype=np.float64)
        self.cumulative = np.cumsum(self.weights / self.weights.sum())
        self.drawable = np.flatnonzero(self.weights > 0)

    def candidates(self, user, occurrence, num):
        """The ``num`` negatives of ``user``'s row number ``occurrence`` (0 for its first) in this
        phase."""
        rng = np.random.default_rng([self.seed, PHASES.index(self.phase), int(user), occurrence])
        seen = self.excluded.indices[self.excluded.indptr[user] : self.excluded.indptr[user + 1]]
        if 2 * num > len(self.drawable) - len(
            seen
        ):  # dense case: choose from the complement directly
            allowed = np.setdiff1d(self.drawable, seen)
            weights = self.weights[allowed]
            return rng.choice(allowed, size=num, replace=False, p=weights / weights.sum())
        chosen = np.empty(0, dtype=np.int64)
        while len(chosen) < num:
            draw = np.searchsorted(
                self.cumulative, rng.random(2 * (num - len(chosen)) + 8), side="right"
            )
            chosen = np.concatenate([chosen, draw[~np.isin(draw, seen)]])
            _, first = np.unique(chosen, return_index=True)
            chosen = chosen[np.sort(first)]
        return chosen[:num]

    def sample_by_user_ids(self, user_ids, item_ids, num):
        """``num`` negatives per row, RecBole's layout: the k-th of row i at ``k * len(user_ids) +
        i``."""
        columns = [
            self.candidates(user, occurrence, num)
            for user, occurrence in zip(*row_occurrences(user_ids))
        ]
        return torch.from_numpy(np.stack(columns, axis=1).reshape(-1)).long()


def row_occurrences(user_ids):
    """``(users, occurrence)``: each row's user and how many earlier rows of ``user_ids`` it has."""
    seen, users, occurrence = {}, np.asarray(user_ids).tolist(), []
    for user in users:
        seen[user] = seen.get(user, -1) + 1
        occurrence.append(seen[user])
    return users, occurrence
