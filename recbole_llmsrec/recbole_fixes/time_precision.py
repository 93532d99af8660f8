"""RecBole 1.2.1 decides time order on a float32 copy of the (normalised) time field: near 1.6e9 s
float32 values are 128 s apart (normalised to [0, 1] over years, about 35 s), so interactions
seconds apart tied and fell back to the order of earlier steps, and a model keeping float64 times
ordered them otherwise (other targets, other histories). The time field is kept in float64 for every
model (exact for seconds and milliseconds; ``<time>_list`` follows), unless it is one of
``numerical_features``, the float fields context-aware models read as features, which stay float32.
Targets RecBole 1.2.1; tested in ``tests/test_same_data.py``.
"""

import numpy as np
import torch
from recbole.data.dataset import Dataset
from recbole.utils import FeatureType


def dataframe_to_interaction(self, data, recbole_convert):
    """RecBole's DataFrame -> Interaction conversion, the time field in float64."""
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
    original = Dataset._dataframe_to_interaction
    Dataset._dataframe_to_interaction = lambda self, data: dataframe_to_interaction(
        self, data, original
    )
