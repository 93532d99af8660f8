"""Group runs a reviewer accepts: same data checked before training, seeds, mean ± std, paired
p-values."""

import re

import numpy as np
import pytest
import yaml

from recbole_llmsrec.checkpoints import load_checkpoint
from recbole_llmsrec.group import (
    group_main,
    paired_p_values,
    parse_model_list,
    run_recbole_group,
)

SAMPLED = {
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni49"},
    "eval_neg_exclude_history": True,
    "metrics": ["Hit", "NDCG"],
    "topk": [10],
    "valid_metric": "Hit@10",
}


@pytest.fixture
def run_yaml(small_sasrec_config, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(dict(small_sasrec_config, epochs=1, **SAMPLED)))
    return str(path)


def test_two_seeds_give_mean_std_and_a_p_value_against_the_baseline(run_yaml, tmp_path, capsys):
    group_main(
        [
            "--model_list=SASRec, GRU4Rec",
            "-d",
            "ml-100k",
            f"--config_files={run_yaml}",
            "--seeds=1,2",
            f"--test_latex={tmp_path / 'test.tex'}",
            f"--valid_latex={tmp_path / 'valid.tex'}",
            f"--plot={tmp_path / 'table.png'}",
        ]
    )
    printed = capsys.readouterr().out
    assert (
        "mean ± std over 2 seed(s); p: paired t-test over test users, two-sided against SASRec"
        in printed
    )
    sasrec = re.search(r"\| SASRec \| \**([0-9.]+) ± ([0-9.]+)\**", printed)
    gru = re.search(r"\| GRU4Rec \| \**[0-9.]+ ± ([0-9.]+) \(p=([0-9.e-]+)\)", printed)
    assert sasrec and gru, printed
    assert float(sasrec.group(2)) > 0 and float(gru.group(1)) > 0  # two seeds differ
    assert 0 <= float(gru.group(2)) <= 1
    tex = (tmp_path / "test.tex").read_text()
    assert r"$\pm$" in tex and "$p$=" in tex and "paired t-test over test users" in tex
    assert (tmp_path / "table.png").read_bytes()[:4] == b"\x89PNG"


def test_a_model_on_other_data_is_refused_before_anything_trains(run_yaml, tmp_path, monkeypatch):
    other = tmp_path / "shorter.yaml"
    other.write_text("MAX_ITEM_LIST_LENGTH: 5\n")
    monkeypatch.setattr("recbole_llmsrec.group.run_recbole", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(
        ValueError,
        match=r"GRU4Rec would be evaluated on other data than SASRec .*"
        r"first difference in valid rows, row 0",
    ):
        group_main(
            [
                "--model_list=SASRec,GRU4Rec",
                "-d",
                "ml-100k",
                f"--config_files={run_yaml}",
                f"--model_config=GRU4Rec:{other}",
                "--traceback",
            ]
        )


def test_labelled_runs_of_one_model_each_get_their_own_files(run_yaml, tmp_path):
    """``NAME@LABEL``: one model under several configs in one table (P5's indexing schemes)."""
    longer = tmp_path / "longer.yaml"
    longer.write_text("epochs: 2\n")
    table, runs = run_recbole_group(
        "SASRec@short,SASRec@long",
        "ml-100k",
        [run_yaml],
        model_config={"SASRec@long": [str(longer)]},
        valid_latex=str(tmp_path / "valid.tex"),
        test_latex=str(tmp_path / "test.tex"),
    )
    assert "| SASRec@short |" in table and "| SASRec@long |" in table
    epochs = {
        label: load_checkpoint(result[0]["saved_model_file"])["config"]["epochs"]
        for label, result in runs.items()
    }
    assert epochs == {"SASRec@short": 1, "SASRec@long": 2}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("SASRec,SASRec", "more than once"),
        ("LCRec@a,LCRec@a", "more than once"),
        ("SASRec,SASRec@", "empty name or label"),
        ("NoSuchModel@a", "neither a recbole-llmsrec model"),
        ("SASRec,,GRU4Rec", "empty name"),
        ("SASRec,NoSuchModel", "neither a recbole-llmsrec model"),
    ],
)
def test_the_model_list_is_checked_before_training(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_model_list(text)
    assert parse_model_list(" SASRec , GRU4Rec ") == ["SASRec", "GRU4Rec"]
    assert parse_model_list("LCRec@rqvae,LCRec@random") == ["LCRec@rqvae", "LCRec@random"]


def per_user(users, **values):
    return {
        "test_per_user": {
            "users": users,
            **{k: np.asarray(v, dtype=float) for k, v in values.items()},
        }
    }


def test_the_paired_test_pairs_rows_by_user_and_averages_the_seeds():
    from scipy.stats import ttest_rel

    # another row order
    base = [
        per_user(["a", "b", "c", "d"], **{"hit@10": [1, 0, 1, 0]}),
        per_user(["b", "a", "d", "c"], **{"hit@10": [1, 1, 0, 0]}),
    ]
    model = [
        per_user(["a", "b", "c", "d"], **{"hit@10": [1, 1, 1, 1]}),
        per_user(["a", "b", "c", "d"], **{"hit@10": [1, 1, 1, 0]}),
    ]
    expected = ttest_rel([1, 1, 1, 0.5], [1, 0.5, 0.5, 0]).pvalue
    assert paired_p_values(base, model)["hit@10"] == pytest.approx(expected)
    assert paired_p_values(base, base)["hit@10"] == 1.0
    with pytest.raises(ValueError, match="test users differ"):
        paired_p_values(base, [per_user(["a", "b", "c", "e"], **{"hit@10": [1, 1, 1, 1]})])
