"""RecBole 1.2.1's ``RepeatableSampler`` (a sequential model's sampler, built for validation and
test even under full-sort evaluation) starts with one empty Python set per user per phase, which
nothing reads: ``sample_by_user_ids`` replaces ``used_ids`` with the batch's own targets before it
draws. At Amazon Books' 690k users that is about 150 MB per phase in every process. The initial
``used_ids`` is an empty array: the same draws, the same candidates. Targets RecBole 1.2.1; tested
in ``tests/test_recbole_fixes.py``.
"""

import numpy as np
from recbole.sampler import RepeatableSampler


def no_used_ids(self):
    """Nothing: ``sample_by_user_ids`` sets the batch's targets as the ids to avoid."""
    return np.empty(0, dtype=object)


def install():
    RepeatableSampler.get_used_ids = no_used_ids
