"""Every model run through the plugin, RecBole's and ours, sees the same data under the same config
files, and the fingerprint in the log and the result proves it (README "Comparing with SASRec")."""

import pathlib
import random
import re

import pytest

from recbole_llmsrec import Config, run_recbole
from recbole_llmsrec.fingerprint import build_data, iter_evaluation_candidates, iter_evaluation_rows
from recbole_llmsrec.quick_start import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROPERTIES = ROOT / "properties"
PROTOCOLS = ("llmsrec", "allmrec", "hllm")
OFFLINE_PROFILES = {
    "LLMSRec": "llmsrec-ml-100k-offline.yaml",
    "ALLMRec": "allmrec-ml-100k-offline.yaml",
    "HLLM": "hllm-ml-100k-offline.yaml",
    "LCRec": "lcrec-ml-100k-offline.yaml",
}


def evaluated_data(model, dataset="ml-100k", files=None, **settings):
    """What ``model`` is evaluated on: fingerprint, catalogue (item tokens in id order), and each
    phase's rows and candidates as raw tokens."""
    config = Config(
        model=model,
        dataset=dataset,
        config_file_list=files,
        config_dict={"show_progress": False, **settings},
    )
    dataset, _, valid, test, fingerprint = build_data(config)
    return {
        "fingerprint": fingerprint,
        "catalogue": list(dataset.field2id_token[dataset.iid_field]),
        "rows": [list(iter_evaluation_rows(loader)) for loader in (valid, test)],
        "candidates": [list(iter_evaluation_candidates(loader) or []) for loader in (valid, test)],
    }


@pytest.mark.parametrize("model", sorted(OFFLINE_PROFILES))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_readme_profile_pair_gives_sasrec_and_the_plugin_model_the_same_data(protocol, model):
    files = [
        str(PROPERTIES / "protocol" / f"{protocol}.yaml"),
        str(PROPERTIES / OFFLINE_PROFILES[model]),
    ]
    sasrec, plugin = evaluated_data("SASRec", files=files), evaluated_data(model, files=files)
    assert plugin["catalogue"] == sasrec["catalogue"]
    assert plugin["rows"] == sasrec["rows"]
    assert plugin["candidates"] == sasrec["candidates"]
    if protocol != "hllm":  # sampled: the candidates are really compared
        assert all(len(row) == len(plugin["candidates"][1][0]) for row in plugin["candidates"][1])
    assert plugin["fingerprint"] == sasrec["fingerprint"]


def test_a_general_model_shares_the_catalogue_training_split_and_targets_with_a_sequential_one():
    """Pop's rows have no history, so its "data" differs from SASRec's; the parts a general model
    can share are equal, and the targets part follows the data."""
    files = [str(PROPERTIES / "protocol" / "hllm.yaml"), str(PROPERTIES / OFFLINE_PROFILES["HLLM"])]
    pop, sasrec = (evaluated_data(model, files=files)["fingerprint"] for model in ("Pop", "SASRec"))
    assert pop["data"] != sasrec["data"]
    for part in ("catalogue", "train", "targets"):
        assert pop[part] == sasrec[part], part
    fewer_users = evaluated_data("SASRec", files=files, user_inter_num_interval="[0,40]")
    assert fewer_users["fingerprint"]["targets"] != sasrec["targets"]


def write_atomic_inter(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (folder / f"{name}.inter").write_text(
        header + "".join(f"{u}\t{i}\t5\t{t}\n" for u, i, t in rows)
    )


def one_second_apart(seed=0):
    """Users whose interactions are one second apart near 1.6e9 s, written in shuffled order, plus
    one interaction years earlier: normalised to [0, 1] and cast to float32, those seconds tie."""
    rows = [
        (f"u{u}", f"i{(u * 5 + k * 3) % 23}", 1_600_000_000 + u * 100 + k)
        for u in range(25)
        for k in range(7)
    ]
    random.Random(seed).shuffle(rows)
    return [("u0", "i99", 1_000_000_000), *rows]


@pytest.mark.parametrize("model", sorted(OFFLINE_PROFILES))
def test_timestamps_one_second_apart_order_every_model_alike(model, tmp_path):
    write_atomic_inter(tmp_path / "data" / "seconds", "seconds", one_second_apart())
    settings = {
        "data_path": str(tmp_path / "data"),
        "MAX_ITEM_LIST_LENGTH": 10,
        "train_neg_sample_args": None,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    }
    sasrec, plugin = (
        evaluated_data("SASRec", "seconds", **settings),
        evaluated_data(model, "seconds", **settings),
    )
    assert plugin["rows"] == sasrec["rows"]
    by_time = sorted((r for r in one_second_apart() if r[0] == "u3"), key=lambda r: r[2])
    test_rows = {row[0]: row for row in sasrec["rows"][1]}
    assert test_rows["u3"] == ["u3", by_time[-1][1], *[item for _, item, _ in by_time[:-1]]]


def test_items_of_the_item_file_without_interactions_get_no_id(tmp_path):
    folder = tmp_path / "data" / "shop"
    write_atomic_inter(
        folder, "shop", [(f"u{u}", f"i{(u + k) % 6}", k) for u in range(8) for k in range(5)]
    )
    (folder / "shop.item").write_text(
        "item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\tTitle {i}\n" for i in range(10))
    )
    settings = {
        "data_path": str(tmp_path / "data"),
        "MAX_ITEM_LIST_LENGTH": 5,
        "train_neg_sample_args": None,
    }
    inter = ["user_id", "item_id", "rating", "timestamp"]
    with_text = evaluated_data(
        "SASRec", "shop", **settings, load_col={"inter": inter, "item": ["item_id", "title"]}
    )
    without = evaluated_data("SASRec", "shop", **settings, load_col={"inter": inter})
    assert with_text["catalogue"] == without["catalogue"] == ["[PAD]", *[f"i{i}" for i in range(6)]]
    assert with_text["fingerprint"] == without["fingerprint"]


def test_the_log_says_what_ran_and_the_result_names_protocol_and_data(small_sasrec_config, caplog):
    protocol = str(PROPERTIES / "protocol" / "allmrec.yaml")
    overrides = [f"--{k}={v}" for k, v in dict(small_sasrec_config, epochs=1).items()]
    with caplog.at_level("INFO"):
        main(["-m", "SASRec", "-d", "ml-100k", f"--config_files={protocol}", *overrides])
    messages = [record.getMessage() for record in caplog.records]
    messages = messages[next(i for i, m in enumerate(messages) if m.startswith("command: ")) :]
    assert messages[0].startswith("command: ") and "-m SASRec -d ml-100k" in messages[0]
    assert messages[1] == f"config files (later ones win): {protocol}"
    assert messages[2].startswith(
        "protocol: split LS valid_and_test, order TO; valid uni19 (target + 19 "
    )
    fingerprint = re.search(r"data fingerprint: ([0-9a-f]{12}) \(catalogue", caplog.text).group(1)
    result = next(m for m in messages if "test result" in m)
    assert f"protocol uni19, negatives outside the history; data {fingerprint}" in result


def test_a_later_file_overriding_an_earlier_one_is_logged_and_a_file_without_effect_warned(
    tmp_path, caplog
):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("MAX_ITEM_LIST_LENGTH: 7\n")
    second.write_text("MAX_ITEM_LIST_LENGTH: 9\nepochs: 1\n")
    config = Config(
        model="SASRec",
        dataset="ml-100k",
        config_file_list=[str(first), str(second)],
        config_dict={"train_neg_sample_args": None},
    )
    assert config["MAX_ITEM_LIST_LENGTH"] == 9
    assert config.file_notes == [
        ("info", f"config: MAX_ITEM_LIST_LENGTH=9 from {second} overrides 7 from {first}"),
        (
            "warning",
            f"config file {first} has no effect: every key it sets is overridden by a later file",
        ),
    ]


def test_evaluating_a_checkpoint_on_the_same_rows_in_another_order_is_refused(
    small_sasrec_config, tmp_path
):
    rows = [(f"u{u}", f"i{(u * 7 + k) % 40}", k) for u in range(30) for k in range(8)]
    write_atomic_inter(tmp_path / "a" / "shop", "shop", rows)
    write_atomic_inter(tmp_path / "b" / "shop", "shop", rows[::-1])  # same interactions, reversed
    settings = dict(
        small_sasrec_config,
        epochs=1,
        user_inter_num_interval=None,
        load_col={"inter": ["user_id", "item_id", "rating", "timestamp"]},
    )
    trained = run_recbole(
        "SASRec", "shop", config_dict=dict(settings, data_path=str(tmp_path / "a"))
    )
    again = run_recbole(
        "SASRec",
        "shop",
        config_dict=dict(settings, data_path=str(tmp_path / "a")),
        evaluate=trained["saved_model_file"],
    )
    assert again["test_result"] == trained["test_result"]
    with pytest.raises(
        ValueError,
        match=r"--evaluate=.*other data than this run: the same 40 items "
        r"numbered in another order",
    ):
        run_recbole(
            "SASRec",
            "shop",
            config_dict=dict(settings, data_path=str(tmp_path / "b")),
            evaluate=trained["saved_model_file"],
        )
