"""RecBole 1.2.1 gives every row of a loaded ``.item`` (``.user``) file an id, also to items no kept
interaction references (after ``user_inter_num_interval``, say): a model that loads item text then
ranked items nobody interacted with, and its negatives came from another id space, so two models
under the same config files saw other catalogues. Such rows are dropped before ids are given, and
the log says how many; interactions whose item has no ``.item`` row (RecBole drops them under
``filter_inter_by_user_or_item``) are counted in a warning instead of vanishing silently. Targets
RecBole 1.2.1; tested in ``tests/test_same_data.py``.
"""

from logging import getLogger

from recbole.data.dataset import Dataset


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
    """RecBole's filtering, then the feature rows no interaction references are dropped."""
    recbole_data_filtering(self)
    _drop_unreferenced_rows(self, "item_feat", self.iid_field, "items")
    _drop_unreferenced_rows(self, "user_feat", self.uid_field, "users")


def filter_inter_by_user_or_item(self, recbole_filter):
    """RecBole's ``filter_inter_by_user_or_item``, with the interactions it drops counted."""
    before = len(self.inter_feat)
    recbole_filter(self)
    dropped = before - len(self.inter_feat)
    if dropped:
        getLogger().warning(
            f"{self.dataset_name}: {dropped} of {before} interactions dropped because their user "
            "or "
            "item has no row in the .user/.item file (filter_inter_by_user_or_item: True; set it "
            "to "
            "False to keep them)"
        )


def _wrapped(fixed, original):
    return lambda self, *args: fixed(self, *args, original)


def install():
    """Wrap RecBole's ``Dataset`` steps (every dataset class inherits them)."""
    Dataset._data_filtering = _wrapped(data_filtering, Dataset._data_filtering)
    Dataset._filter_inter_by_user_or_item = _wrapped(
        filter_inter_by_user_or_item, Dataset._filter_inter_by_user_or_item
    )
