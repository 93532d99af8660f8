"""Security and data safety of settings and names: nonsense settings are refused with the key and
the allowed range, no config string is evaluated, a missing local model directory gets a useful
message."""

import pytest
import safety_setup
from safety_setup import model_settings

from recbole_llmsrec import Config, run_recbole

# a pytest fixture: the tiny Llama and OPT, built once per module
tiny_llms = safety_setup.tiny_llms


@pytest.mark.parametrize(
    "model, key, value",
    [
        ("HLLM", "num_negatives", 0),
        ("LLMSRec", "history_max_items", 0),
        ("ALLMRec", "history_max_items", 0),
        ("LLMSRec", "train_negatives", 0),
        ("SASRec", "MAX_ITEM_LIST_LENGTH", 0),
        ("HLLM", "MAX_ITEM_LIST_LENGTH", 0),
    ],
)
def test_nonsense_settings_are_refused_with_the_key_and_range(
    model, key, value, tmp_path, tiny_llms, minilm_path
):
    settings = {
        "use_gpu": False,
        "checkpoint_dir": str(tmp_path),
        "train_neg_sample_args": None,
        "user_inter_num_interval": "[0,20]",
        "MAX_ITEM_LIST_LENGTH": 10,
        "cf_checkpoint": None,
        **model_settings(model, tiny_llms, minilm_path),
        key: value,
    }
    with pytest.raises(
        ValueError, match=rf"{key}={value} is not allowed: it must be an integer >= 1"
    ):
        run_recbole(model, "ml-100k", config_dict=settings)


@pytest.mark.parametrize("model, key", [("LLMSRec", "llm_path"), ("HLLM", "user_llm_path")])
def test_an_encoder_where_a_causal_lm_is_needed_is_refused(
    model, key, tmp_path, tiny_llms, minilm_path
):
    from recbole_llmsrec.llm.loading import LLMLoadError

    settings = {
        "use_gpu": False,
        "checkpoint_dir": str(tmp_path),
        "train_neg_sample_args": None,
        "user_inter_num_interval": "[0,20]",
        "MAX_ITEM_LIST_LENGTH": 10,
        "prefix_kv_cache": False,
        **model_settings(model, tiny_llms, minilm_path),
        key: minilm_path,
    }
    with pytest.raises(LLMLoadError, match=rf"{key}=.*not a causal \(decoder-only\)"):
        run_recbole(model, "ml-100k", config_dict=settings)


def test_special_token_strings_are_removed_from_titles_however_nested(
    monkeypatch, tmp_path, tiny_llms, minilm_path
):
    import recbole_llmsrec.models.allmrec.model as allmrec
    import recbole_llmsrec.models.llmsrec.model as llmsrec
    from recbole_llmsrec.data.dataset import create_dataset
    from recbole_llmsrec.data.item_text import without_special_tokens

    assert without_special_tokens(
        ["[History[User[ItemOut]Out]Emb]Up"], ["[HistoryEmb]", "[UserOut]", "[ItemOut]"]
    ) == ["Up"]
    nasty = ["[History[UserOut]Emb] Heat", "[UserRep] Up", "[Candidate[HistoryEmb]Emb]"]
    for module, model, tokens in (
        (
            llmsrec,
            "LLMSRec",
            (llmsrec.HISTORY_TOKEN, llmsrec.USER_OUT_TOKEN, llmsrec.ITEM_OUT_TOKEN),
        ),
        (allmrec, "ALLMRec", (allmrec.USER_TOKEN, allmrec.HISTORY_TOKEN, allmrec.CANDIDATE_TOKEN)),
    ):
        monkeypatch.setattr(module, "build_item_titles", lambda dataset, config: nasty * 700)
        config = Config(
            model=model,
            dataset="ml-100k",
            config_dict={
                "checkpoint_dir": str(tmp_path),
                "user_inter_num_interval": "[0,20]",
                **model_settings(model, tiny_llms, minilm_path),
            },
        )
        train_data = create_dataset(config).build()[0]
        titles = getattr(module, model)(config, train_data).titles[:3]
        assert not any(token in title for token in tokens for title in titles), (model, titles)
        assert "Heat" in titles[0] and "Up" in titles[1]


def test_an_atomic_row_with_more_fields_than_its_header_is_refused(tmp_path):
    folder = tmp_path / "tabbed"
    folder.mkdir()
    (folder / "tabbed.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{u * 10 + i}\n" for u in range(1, 6) for i in range(1, 6))
    )
    (folder / "tabbed.item").write_text(
        "item_id:token\ttitle:token_seq\n1\tHeat\n2\tUp\tand away\n"
    )
    config = Config(
        model="SASRec",
        dataset="tabbed",
        config_dict={  # the .item file is read
            "data_path": str(tmp_path),
            "train_neg_sample_args": None,
            "checkpoint_dir": str(tmp_path),
            "load_col": {
                "inter": ["user_id", "item_id", "timestamp"],
                "item": ["item_id", "title"],
            },
        },
    )
    from recbole_llmsrec.data.dataset import create_dataset

    with pytest.raises(ValueError, match=r"tabbed\.item, line 3: 3 fields where the header has 2"):
        create_dataset(config)


def test_a_missing_local_model_directory_says_so_and_how_to_build_the_tiny_one():
    from recbole_llmsrec.llm.loading import LLMLoadError, load_llm

    with pytest.raises(LLMLoadError) as error:
        load_llm("./saved/no-such-llama", key="llm_path")
    message = str(error.value)
    assert (
        "does not exist" in message
        and "python -m recbole_llmsrec.tools.tiny_llm ./saved/no-such-llama" in message
    )
    assert "hf download" not in message


def test_no_config_string_reaches_eval(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w')"
    monkeypatch.setattr("sys.argv", ["run_recbole.py", f"--epochs={code}"])
    config = Config(
        model="SASRec",
        dataset="ml-100k",
        config_dict={"train_neg_sample_args": None, "stopping_step": code},
    )
    assert not marker.exists()
    assert config["epochs"] == code and config["stopping_step"] == code  # kept as text
    assert Config(
        model="SASRec",
        dataset="ml-100k",
        config_dict={"train_neg_sample_args": "None", "topk": "[5, 10]", "learning_rate": "1e-3"},
    )["topk"] == [5, 10]


def test_kd_dagfm_teacher_must_name_one_of_its_teacher_networks(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(
        ValueError, match=r"teacher=.* is not allowed: KD_DAGFM's teacher is one of"
    ):
        Config(
            model="KD_DAGFM",
            dataset="ml-100k",
            config_dict={"teacher": f"(open({str(marker)!r}, 'w'), CrossNet)[1]"},
        )
    crafted = tmp_path / "crafted.yaml"
    crafted.write_text(f"teacher: \"(open({str(marker)!r}, 'w'), CIN)[1]\"\n")
    with pytest.raises(ValueError, match=r"teacher=.* is not allowed"):
        Config(model="KD_DAGFM", dataset="ml-100k", config_file_list=[str(crafted)])
    assert not marker.exists()
    assert Config(model="KD_DAGFM", dataset="ml-100k", config_dict={"teacher": "CrossNet"})


@pytest.mark.parametrize("name", ["../../elsewhere/x", "a/b", "..", "x\\y"])
def test_a_dataset_name_with_a_path_in_it_is_refused(name):
    with pytest.raises(ValueError, match=r"dataset .* must be a plain name"):
        Config(model="SASRec", dataset=name)
