"""RecBole 1.2.1's ``AbstractDataLoader`` hands torch's ``DataLoader`` (and, distributed, its
``DistributedSampler``) ``list(range(n))`` as the dataset of row numbers: one Python int object per
row, about 36 bytes each, so a SASRec training split of Amazon Books (8 million rows) costs 0.3 GiB
per loader before a batch is drawn. A ``range`` is the same sequence of row numbers (same length,
same items, the same batches and shuffles) in 48 bytes: ``list`` as that module sees it returns a
``range`` unchanged, and behaves as the builtin for everything else. And each epoch torch's
``DistributedSampler`` makes a Python list of every row's index, the other ranks' too, before it
keeps its own share: on RecBole's loaders it is ``ShardOnlySampler``, the same indices in the same
order from a tensor, keeping only the rank's share. Targets RecBole 1.2.1; tested in
``tests/test_recbole_fixes.py``.
"""

import builtins
import math

import recbole.data.dataloader.abstract_dataloader as recbole_loader_module
import torch
from torch.utils.data.distributed import DistributedSampler

INDICES_PER_LIST = 65536  # a sampler's indices become Python ints this many at a time


def list_keeping_ranges(iterable=()):
    """``builtins.list``, except that a ``range`` is returned as it is."""
    if isinstance(iterable, range):
        return iterable
    return builtins.list(iterable)


class ShardOnlySampler(DistributedSampler):
    """torch's ``DistributedSampler`` (its state and arguments), each epoch's indices computed as a
    tensor: the same permutation, padding and share as torch's; only this rank's share is kept,
    and it is listed as Python ints ``INDICES_PER_LIST`` at a time."""

    def __iter__(self):
        rows = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(rows, generator=generator)
        else:
            order = torch.arange(rows)
        if self.drop_last:
            order = order[: self.total_size]
        elif self.total_size > rows:  # torch repeats the order from its start to fill the shares
            repeats = math.ceil((self.total_size - rows) / rows)
            order = torch.cat([order, order.repeat(repeats)[: self.total_size - rows]])
        share = order[self.rank : self.total_size : self.num_replicas].clone()  # frees the rest
        return (index for part in share.split(INDICES_PER_LIST) for index in part.tolist())


def _init_with_shard_only_sampler(recbole_init):
    def init(self, *args, **kwargs):
        recbole_init(self, *args, **kwargs)
        if type(self.sampler) is DistributedSampler:
            self.sampler.__class__ = ShardOnlySampler  # same object, same state: only __iter__

    return init


def install():
    recbole_loader_module.list = list_keeping_ranges
    loader = recbole_loader_module.AbstractDataLoader
    loader.__init__ = _init_with_shard_only_sampler(loader.__init__)
