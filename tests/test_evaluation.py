"""The evaluation protocol at the evaluation layer: history masking, history-excluding negatives,
per-user sampled scoring, checked on RecBole's models."""

import evaluation_setup
import numpy as np
import pytest
import torch
from evaluation_setup import all_items_by_user, evaluate, prepare, split_mode
from recbole.trainer import Trainer as RecBoleTrainer

from recbole_llmsrec import get_trainer

# a pytest fixture: SASRec trained for 2 epochs, and a function that rebuilds the split
trained_sasrec = evaluation_setup.trained_sasrec


def test_masked_full_sort_never_ranks_a_history_item_and_recall_does_not_drop(trained_sasrec):
    model, build = trained_sasrec
    results, history_in_top10 = {}, {}
    for mask in (False, True):
        config, dataset, _, _, _, test_data = build(
            eval_mask_history=mask, topk=[10], metrics=["Recall"]
        )
        seen = all_items_by_user(dataset)
        trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
        results[mask] = trainer.evaluate(test_data, load_best_model=False)["recall@10"]
        found = 0
        with torch.no_grad():
            for batch in test_data:
                interaction, scores, _, _ = trainer._full_sort_batch_eval(batch)
                top = scores.topk(10, dim=1).indices.tolist()
                for user, target, items in zip(
                    interaction["user_id"].tolist(), interaction["item_id"].tolist(), top
                ):
                    found += len(set(items) & (seen[user] - {target}))
        history_in_top10[mask] = found
    assert history_in_top10[False] > 0  # RecBole's sequential full sort leaves the history in
    assert history_in_top10[True] == 0
    assert results[True] >= results[False]


def test_masked_history_is_the_whole_history_and_the_validation_item_at_test_time(trained_sasrec):
    _, build = trained_sasrec
    config, dataset, _, _, valid_data, test_data = build(
        eval_mask_history=True, MAX_ITEM_LIST_LENGTH=3
    )
    seen = all_items_by_user(dataset)
    targets = {
        phase: dict(
            zip(
                loader._dataset.inter_feat["user_id"].tolist(),
                loader._dataset.inter_feat["item_id"].tolist(),
            )
        )
        for phase, loader in (("valid", valid_data), ("test", test_data))
    }
    for phase, loader in (("valid", valid_data), ("test", test_data)):
        interaction, (rows, items), _, _ = loader.collate_fn(np.arange(20))
        for row, user in enumerate(interaction["user_id"].tolist()):
            masked = set(items[rows == row].tolist())
            later = {targets["test"][user]} | (
                {targets["valid"][user]} if phase == "valid" else set()
            )
            assert masked == seen[user] - later  # ml-100k has no repeats: all earlier items
            assert len(masked) > 3  # more than the 3 items the sequence shows
            assert (targets["valid"][user] in masked) == (phase == "test")


def test_history_excluding_negatives_are_distinct_seeded_and_outside_the_history(
    small_sasrec_config,
):
    settings = dict(small_sasrec_config, eval_args=split_mode("uni99"))
    *_, default_test = prepare("SASRec", settings)
    config, dataset, _, _, valid_data, test_data = prepare(
        "SASRec", dict(settings, eval_neg_exclude_history=True)
    )
    seen = all_items_by_user(dataset)

    def negatives(loader):
        by_user = {}
        for interaction, *_ in loader:
            for user, item, label in zip(
                interaction["user_id"].tolist(),
                interaction["item_id"].tolist(),
                interaction["label"].tolist(),
            ):
                if label == 0:
                    by_user.setdefault(user, []).append(item)
        return by_user

    default = negatives(default_test)  # RecBole's sampler: the history is fair game
    assert any(set(items) & seen[user] for user, items in default.items())
    for loader in (valid_data, test_data):
        drawn = negatives(loader)
        assert len(drawn) == len(loader._dataset)
        for user, items in drawn.items():
            assert len(items) == 99 and len(set(items)) == 99
            assert not set(items) & seen[user]
    np.random.seed(123)  # the global RNG plays no part: the same candidates again
    assert negatives(test_data) == negatives(test_data)
    assert negatives(valid_data) != negatives(test_data)


@pytest.mark.parametrize("exclude", [False, True])
def test_more_negatives_than_a_user_can_have_is_refused(small_sasrec_config, exclude):
    with pytest.raises(ValueError, match=r"uni5000.*5000 negatives per user.*mode: full"):
        prepare(
            "SASRec",
            dict(
                small_sasrec_config,
                eval_args=split_mode("uni5000"),
                eval_neg_exclude_history=exclude,
            ),
        )


@pytest.mark.parametrize("model_name", ["SASRec", "GRU4Rec"])
def test_per_user_sampled_scores_equal_recbole_per_row_metrics(
    small_sasrec_config, model_name, monkeypatch
):
    config, _, model, train_data, _, test_data = prepare(
        model_name, dict(small_sasrec_config, eval_args=split_mode("uni100"), embedding_size=16)
    )
    plugin = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    plugin.fit(train_data, saved=False)
    per_row = evaluate(RecBoleTrainer(config, model), config, test_data)

    calls = []
    monkeypatch.setattr(model, "predict", lambda interaction: calls.append("predict"))
    full_sort = model.full_sort_predict
    monkeypatch.setattr(
        model,
        "full_sort_predict",
        lambda interaction: calls.append(len(interaction)) or full_sort(interaction),
    )
    per_user = evaluate(plugin, config, test_data)
    assert per_user == per_row
    assert "predict" not in calls and sum(calls) == len(test_data._dataset)  # one row per user


@pytest.mark.parametrize(
    "model_name, split", [("SASRec", {"RS": [0.8, 0.1, 0.1]}), ("CORE", {"LS": "valid_and_test"})]
)
def test_per_user_path_keeps_recbole_metrics_where_it_cannot_apply(
    small_sasrec_config, model_name, split
):
    # RS split: a sequential user has several test rows, each its own prefix; RecBole's CORE.predict
    # skips the normalisation its full_sort_predict applies. Both keep RecBole's per-row scoring.
    config, _, model, _, _, test_data = prepare(
        model_name,
        dict(
            small_sasrec_config,
            embedding_size=16,
            eval_args={"split": split, "order": "TO", "mode": "uni100"},
        ),
    )
    plugin = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    assert evaluate(plugin, config, test_data) == evaluate(
        RecBoleTrainer(config, model), config, test_data
    )


def test_labeled_value_evaluation_of_a_context_model_keeps_recbole_path(tmp_path):
    # RecBole's labeled mode (AUC/LogLoss, context-aware models) hands the trainer no row index
    from recbole_llmsrec import run_recbole

    result = run_recbole(
        "FM",
        "ml-100k",
        config_dict={
            "use_gpu": False,
            "epochs": 1,
            "show_progress": False,
            "checkpoint_dir": str(tmp_path),
            "threshold": {"rating": 4},
            "user_inter_num_interval": "[0,40]",
            "metrics": ["AUC"],
            "valid_metric": "AUC",
            "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "labeled"},
        },
    )
    assert 0 < result["test_result"]["auc"] < 1
