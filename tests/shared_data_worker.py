"""Builds a model's data as a run does and reports what this process saw (run under torchrun by
``tests/test_shared_data.py``, or alone for the one-process reference).

``python shared_data_worker.py OUT MODEL...`` writes ``OUT/rank{r}.json``, for each model: the data
fingerprint, the rows of the validation split, the training matrix's nonzeros, how many times this
process ran the sequential augmentation, and whether the store's item column lies in a mapped
``shared-data-`` file.
"""

import json
import os
import sys

from recbole_llmsrec import Config
from recbole_llmsrec.data.sequences import CompactSequentialDataset
from recbole_llmsrec.fingerprint import build_data, iter_evaluation_rows

augmentations = []
original_augmentation = CompactSequentialDataset.data_augmentation


def counted_augmentation(self):
    augmentations.append(1)
    original_augmentation(self)


def in_shared_mapping(tensor):
    """Whether ``tensor``'s memory is part of a mapped file of a ``shared-data-`` folder."""
    address = tensor.data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "shared-data-" in line:
                start, end = (int(part, 16) for part in line.split()[0].split("-"))
                if start <= address < end:
                    return True
    return False


def report(out, model):
    augmentations.clear()
    settings = {
        "use_gpu": False,
        "seed": 2020,
        "state": "error",
        "show_progress": False,
        "checkpoint_dir": os.path.join(out, "saved"),
        "user_inter_num_interval": "[0,40]",
        "MAX_ITEM_LIST_LENGTH": 10,
        "train_neg_sample_args": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
    }
    config = Config(model=model, dataset="ml-100k", config_dict=settings)
    _, train, valid, _, fingerprint = build_data(config)
    history = getattr(train._dataset, "history_matrix", None)
    return {
        "fingerprint": fingerprint,
        "valid_rows": [[str(token) for token in row] for row in iter_evaluation_rows(valid)],
        "train_rows": len(train._dataset),
        "history_nonzeros": None if history is None else int(history.nnz),
        "augmentations": len(augmentations),
        "mapped": in_shared_mapping(train._dataset.sequences["item_id"]),
        "sampler": type(train.sampler).__name__,
        "batch_items": valid._dataset[:]["item_id_list"].sum().item(),
    }


def main(out, *models):
    CompactSequentialDataset.data_augmentation = counted_augmentation
    reports = {model: report(out, model) for model in models}
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as file:
        json.dump(reports, file)


if __name__ == "__main__":
    main(*sys.argv[1:])
