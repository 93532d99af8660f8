"""The compact sequential layer (``data.sequences``) gives every model the rows, splits, batches and
fingerprint RecBole's materialised ``SequentialDataset`` gives (issue 21, item 1): compared here
with the same dataset class whose augmentation is RecBole's own, for SASRec, BERT4Rec and each
plugin model, under the three protocols."""

import pathlib

import numpy as np
import pytest
import torch
from recbole.data.dataset import Dataset
from recbole.utils import init_seed

from recbole_llmsrec import Config
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.data.sequences import (
    TARGET_ROW,
    interaction_matrix,
    item_lists,
    leave_one_out_parts,
    materialised,
)
from recbole_llmsrec.evaluation.histories import training_matrix
from recbole_llmsrec.evaluation.loaders import data_preparation
from recbole_llmsrec.fingerprint import data_fingerprint

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROPERTIES = ROOT / "properties"
PROFILES = {
    "SASRec": "sasrec-ml-100k-offline.yaml",
    "BERT4Rec": "sasrec-ml-100k-offline.yaml",
    "LLMSRec": "llmsrec-ml-100k-offline.yaml",
    "ALLMRec": "allmrec-ml-100k-offline.yaml",
    "HLLM": "hllm-ml-100k-offline.yaml",
}
SMALL = {"user_inter_num_interval": "[0,40]", "show_progress": False, "eval_batch_size": 512}


def built(config, dataset_class):
    init_seed(config["seed"], config["reproducibility"])
    dataset = dataset_class(config)
    loaders = data_preparation(config, dataset)
    return dataset, loaders


def both_paths(model, protocol, **settings):
    files = [str(PROPERTIES / "protocol" / f"{protocol}.yaml"), str(PROPERTIES / PROFILES[model])]
    config = Config(
        model=model, dataset="ml-100k", config_file_list=files, config_dict={**SMALL, **settings}
    )
    compact_class = type(create_dataset(config))
    return config, built(config, compact_class), built(config, materialised(compact_class))


def assert_same_interaction(a, b):
    assert sorted(a.interaction) == sorted(b.interaction)
    for field in a.interaction:
        assert torch.equal(a[field], b[field]), field


def assert_same_batches(loader_a, loader_b, seed):
    init_seed(seed, True)
    batches_a = list(loader_a)
    init_seed(seed, True)
    batches_b = list(loader_b)
    assert len(batches_a) == len(batches_b) > 0
    for batch_a, batch_b in zip(batches_a, batches_b):
        parts_a, parts_b = (
            (batch_a, batch_b) if isinstance(batch_a, tuple) else ([batch_a], [batch_b])
        )
        assert_same_interaction(parts_a[0], parts_b[0])
        for part_a, part_b in zip(parts_a[1:], parts_b[1:]):
            if isinstance(part_a, tuple):  # history_index: (rows, items)
                assert all(torch.equal(x, y) for x, y in zip(part_a, part_b))
            else:
                assert (part_a is None and part_b is None) or torch.equal(part_a, part_b)


def assert_same_matrix(a, b):
    assert a.shape == b.shape and (a != b).nnz == 0


CASES = [(model, protocol) for model in PROFILES for protocol in ("llmsrec", "allmrec", "hllm")]


@pytest.mark.parametrize(("model", "protocol"), CASES)
def test_compact_rows_batches_and_fingerprint_equal_recboles_materialised_rows(model, protocol):
    config, (dataset, compact), (reference_dataset, reference) = both_paths(model, protocol)
    assert TARGET_ROW in dataset.inter_feat and dataset.item_id_list_field not in dataset.inter_feat
    assert_same_interaction(dataset[:], reference_dataset[:])
    for split_loader, reference_loader in zip(compact, reference):
        split, reference_split = split_loader._dataset, reference_loader._dataset
        assert_same_interaction(split[:], reference_split[:])
        for lists in (True, False):
            assert_same_matrix(
                interaction_matrix(split, lists), interaction_matrix(reference_split, lists)
            )
        index = torch.arange(len(split)).flip(0)
        assert torch.equal(item_lists(split, index), item_lists(reference_split, index))
        assert_same_batches(split_loader, reference_loader, config["seed"])
    assert_same_matrix(
        compact[0]._dataset.inter_matrix(form="csr"), reference[0]._dataset.inter_matrix(form="csr")
    )
    fingerprints = [
        data_fingerprint(config, *loaders, training_matrix(loaders[0]._dataset, True))
        for loaders in (compact, reference)
    ]
    assert fingerprints[0] == fingerprints[1]


def test_negative_sampled_training_and_shuffled_histories_equal_the_materialised_batches():
    """RecBole's own training negatives (BPR) and ``eval_shuffle_history`` read the gathered
    lists."""
    config, (_, compact), (_, reference) = both_paths(
        "SASRec",
        "llmsrec",
        loss_type="BPR",
        train_neg_sample_args={"distribution": "uniform", "sample_num": 1},
        eval_shuffle_history=True,
        user_inter_num_interval="[0,25]",
    )
    for loader, reference_loader in zip(compact, reference):
        assert_same_batches(loader, reference_loader, config["seed"])


def test_list_windows_hold_the_users_previous_items_in_time_order_capped_at_the_length():
    _, (dataset, _), _ = both_paths("SASRec", "hllm", MAX_ITEM_LIST_LENGTH=5)
    rows, store = dataset[:], dataset.sequences
    users, times = store["user_id"].numpy(), store["timestamp"].numpy()
    lengths, ends = rows["item_length"].numpy(), dataset.inter_feat[TARGET_ROW].numpy()
    assert lengths.max() == 5 and lengths.min() == 1
    for user, items, length, end in zip(
        rows["user_id"].numpy(), rows["item_id_list"].numpy(), lengths, ends
    ):
        window = slice(end - length, end)
        assert (users[window] == user).all() and np.diff(times[end - length : end + 1]).min() >= 0
        assert (items[:length] == store["item_id"].numpy()[window]).all() and not items[
            length:
        ].any()
        assert length == 5 or end - length == 0 or users[end - length - 1] != user


def test_vectorised_leave_one_out_gives_recboles_parts_in_recboles_order():
    rng = np.random.default_rng(0)
    for _ in range(200):
        keys = rng.integers(0, rng.integers(1, 30), rng.integers(0, 80))
        for left_out in (1, 2):
            grouped = Dataset._grouped_index(None, keys)
            expected = Dataset._split_index_by_leave_one_out(None, grouped, left_out)
            order, part = leave_one_out_parts(keys, left_out)
            assert [order[part == k].tolist() for k in range(left_out + 1)] == expected


def test_one_row_and_unused_list_fields_read_as_recboles_materialised_rows():
    _, (dataset, _), (reference, _) = both_paths(
        "SASRec", "hllm", unused_col={"inter": ["rating_list"]}
    )
    row, expected = dataset[3], reference[3]
    assert "rating_list" not in row and "rating_list" not in dataset.field2type
    assert sorted(row.interaction) == sorted(expected.interaction)
    assert all(torch.equal(row[field], expected[field]) for field in row.interaction)


def test_fearec_which_reads_lists_from_its_dataset_keeps_recboles_dataset_and_trains():
    """FEARec's loss reads ``dataset.inter_feat[item_id_list]`` (rows sharing a target)."""
    from recbole.model.sequential_recommender import FEARec

    config = Config(
        model="FEARec",
        dataset="ml-100k",
        config_dict={**SMALL, "train_neg_sample_args": None, "MAX_ITEM_LIST_LENGTH": 10},
    )
    dataset = create_dataset(config)
    train = data_preparation(config, dataset)[0]
    assert TARGET_ROW not in dataset.inter_feat
    loss = FEARec(config, train._dataset).calculate_loss(next(iter(train)))
    assert torch.isfinite(loss)
