"""RecBole 1.2.1's dataset steps that made two models see other data under the same config files, fixed
for every dataset class (installed by ``compat.apply``, so RecBole's models and the plugin's share them).

1. A loaded ``.item`` (``.user``) file gave every one of its rows an id, also to items no kept interaction
   references (after ``user_inter_num_interval``, say): a model that loads item text then ranked items
   nobody interacted with, and its negatives came from another id space. Such rows are now dropped before
   ids are given, and the log says how many; interactions whose item has no ``.item`` row (RecBole drops
   them under ``filter_inter_by_user_or_item``) are counted in a warning instead of vanishing silently.
2. Time order was decided on a float32 copy of the (normalised) time field: near 1.6e9 s float32 values
   are 128 s apart (normalised to [0, 1] over years, about 35 s), so interactions seconds apart tied and
   fell back to the order of earlier steps, and a model keeping float64 times ordered them otherwise
   (other targets, other histories). The time field is now kept in float64 for every model (exact for
   seconds and milliseconds; ``<time>_list`` follows), unless it is one of ``numerical_features``, the
   float fields context-aware models read as features, which stay float32.
"""

from logging import getLogger

import numpy as np
import torch
from recbole.utils import FeatureType


def _drop_unreferenced_rows(dataset, feat_name, field, noun):
    feat = getattr(dataset, feat_name, None)
    if feat is None or field is None or field not in feat or field not in dataset.inter_feat:
        return
    referenced = feat[field].isin(dataset.inter_feat[field].unique())
    dropped = int((~referenced).sum())
    if dropped:
        feat.drop(feat.index[~referenced], inplace=True)
        feat.reset_index(drop=True, inplace=True)
        getLogger().info(
            f"{dataset.dataset_name}.{feat_name.split('_')[0]}: {dropped} {noun} without any kept "
            "interaction left out (they get no id: every model ranks the same catalogue)"
        )


def data_filtering(self, recbole_data_filtering):
    """RecBole's filtering, then the feature rows no interaction references are dropped (fix 1)."""
    recbole_data_filtering(self)
    _drop_unreferenced_rows(self, "item_feat", self.iid_field, "items")
    _drop_unreferenced_rows(self, "user_feat", self.uid_field, "users")


def filter_inter_by_user_or_item(self, recbole_filter):
    """RecBole's ``filter_inter_by_user_or_item``, with the interactions it drops counted (fix 1)."""
    before = len(self.inter_feat)
    recbole_filter(self)
    dropped = before - len(self.inter_feat)
    if dropped:
        getLogger().warning(
            f"{self.dataset_name}: {dropped} of {before} interactions dropped because their user or "
            "item has no row in the .user/.item file (filter_inter_by_user_or_item: True; set it to "
            "False to keep them)"
        )


def dataframe_to_interaction(self, data, recbole_convert):
    """RecBole's DataFrame -> Interaction conversion, the time field in float64 (fix 2)."""
    interaction = recbole_convert(self, data)
    field = self.time_field
    if (
        field in data
        and self.field2type.get(field) == FeatureType.FLOAT
        and field not in (self.config["numerical_features"] or [])
    ):
        interaction[field] = torch.from_numpy(data[field].to_numpy(dtype=np.float64, copy=True))
    return interaction


def install():
    """Wrap RecBole's ``Dataset`` steps (every dataset class inherits them)."""
    from recbole.data.dataset import Dataset

    steps = {
        "_data_filtering": data_filtering,
        "_filter_inter_by_user_or_item": filter_inter_by_user_or_item,
        "_dataframe_to_interaction": dataframe_to_interaction,
    }
    for name, fixed in steps.items():
        original = getattr(Dataset, name)
        setattr(Dataset, name, lambda self, *args, _o=original, _f=fixed: _f(self, *args, _o))
