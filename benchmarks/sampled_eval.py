"""Sampled evaluation time: RecBole's per-row path vs the plugin's per-user path (issue:
evaluation).

    python benchmarks/sampled_eval.py [--model SASRec] [--repeats 3]

Trains the model (RecBole's defaults) for one epoch on ml-100k as shipped with RecBole, then
evaluates its test split in ``uni100`` and ``uni99`` (RecBole's negatives, and negatives outside the
history) with RecBole's own ``Trainer`` (``predict`` on one row per user and candidate) and with the
trainer the plugin gives every model (``full_sort_predict`` once per user, candidates read from its
row). The same negatives are drawn for both (the sampler is re-seeded before each run), and the
table says whether the metrics are equal. Times are the best of ``--repeats`` runs, data loading
included.
"""

import argparse
import os
import sys
import tempfile
import time

from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import init_seed

from recbole_llmsrec import Config, get_model, get_trainer
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.evaluation.loaders import data_preparation

MODES = (("uni100", False), ("uni99", False), ("uni99", True))  # (mode, negatives outside history)


def timed_evaluation(trainer, config, test_data, repeats):
    """``(best seconds, last result)`` of ``repeats`` evaluations, each with the seed reset."""
    best, result = float("inf"), None
    for _ in range(repeats):
        # RecBole's sampler draws from np.random
        init_seed(config["seed"], config["reproducibility"])
        start = time.perf_counter()
        result = trainer.evaluate(test_data, load_best_model=False)
        best = min(best, time.perf_counter() - start)
    return best, result


def build(model_name, workdir, **settings):
    """``(config, (train, valid, test loaders))`` of ``model_name`` on ml-100k, with ``settings``
    over this benchmark's defaults."""
    config = Config(
        model=model_name,
        dataset="ml-100k",
        config_dict={
            "use_gpu": False,
            "seed": 2020,
            "reproducibility": True,
            "show_progress": False,
            "checkpoint_dir": workdir,
            "epochs": 1,
            "train_batch_size": 2048,
            "eval_batch_size": 4096,
            "train_neg_sample_args": None,
            **settings,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    return config, data_preparation(config, create_dataset(config))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config would read our flags as config keys
    return args


def plugin_trainer(config, model_name, model):
    return get_trainer(config["MODEL_TYPE"], model_name)(config, model)


def train_model(model_name, workdir):
    """The model trained for one epoch with RecBole's defaults."""
    config, (train_data, _, _) = build(model_name, workdir)
    model = get_model(model_name)(config, train_data._dataset)
    plugin_trainer(config, model_name, model).fit(train_data, saved=False)
    return model


def compare(model_name, model, workdir, mode, exclude, repeats):
    """One table row: per-row (RecBole) and per-user (plugin) evaluation of one sampled mode."""
    config, (_, _, test_data) = build(
        model_name,
        workdir,
        eval_neg_exclude_history=exclude,
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": mode},
    )
    plugin = plugin_trainer(config, model_name, model)
    per_user, per_user_result = timed_evaluation(plugin, config, test_data, repeats)
    per_row, per_row_result = timed_evaluation(
        RecBoleTrainer(config, model), config, test_data, repeats
    )
    return (
        mode + (" outside history" if exclude else ""),
        len(test_data._dataset),
        per_row,
        per_user,
        per_row / per_user,
        per_row_result == per_user_result,
    )


def full_sort_time(model_name, model, workdir, repeats):
    """Best seconds of the plugin's full sort evaluation of the test split, for reference."""
    config, (_, _, test_data) = build(model_name, workdir)
    return timed_evaluation(plugin_trainer(config, model_name, model), config, test_data, repeats)[
        0
    ]


def print_table(args, rows, full_sort):
    print(
        f"\n{args.model} on ml-100k, test split, {os.cpu_count()} CPU cores, best of "
        f"{args.repeats}; "
        f"full sort for reference: {full_sort:.2f} s\n"
    )
    print(
        "| negatives | users | per-row (RecBole) s | per-user (plugin) s | speed-up | metrics "
        "equal |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, users, row_time, user_time, speedup, equal in rows:
        print(f"| {name} | {users} | {row_time:.2f} | {user_time:.2f} | {speedup:.1f}x | {equal} |")


def main():
    args = parse_args()
    workdir = tempfile.mkdtemp()
    os.chdir(workdir)
    model = train_model(args.model, workdir)
    rows = [
        compare(args.model, model, workdir, mode, exclude, args.repeats) for mode, exclude in MODES
    ]
    print_table(args, rows, full_sort_time(args.model, model, workdir, args.repeats))


if __name__ == "__main__":
    main()
