"""Security and data safety: no code runs from files planted in checkpoint_dir, nonsense settings
are refused with the key and the allowed range, a missing local model directory gets a useful
message."""

import os
import pickle

import pytest
from recbole.data import create_dataset as recbole_api_create_dataset
from recbole.data import data_preparation as recbole_api_data_preparation

from recbole_llmsrec import Config, run_recbole
from recbole_llmsrec.tools.tiny_llm import build_tiny_llm

TEACHER = {
    "hidden_size": 16,
    "inner_size": 16,
    "n_layers": 1,
    "n_heads": 1,
    "epochs": 1,
    "train_batch_size": 512,
}


class _Planted:
    """Unpickling this creates the marker file: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_recbole_caches(checkpoint_dir, model, marker):
    """A malicious pickle under every name RecBole's create_dataset / load_split_dataloaders
    read."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    names = [f"ml-100k-{cls}.pth" for cls in ("Dataset", "SequentialDataset", f"{model}Dataset")]
    names += [f"ml-100k-for-{name}-dataloader.pth" for name in {model, "SASRec"}]
    for name in names:
        with open(os.path.join(checkpoint_dir, name), "wb") as f:
            pickle.dump(_Planted(str(marker)), f)
    return names


@pytest.fixture(scope="module")
def tiny_llms(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    return {
        "llama": build_tiny_llm(str(root / "tiny-llama"), hidden_size=32),
        "opt": build_tiny_llm(str(root / "tiny-opt"), hidden_size=32, architecture="opt"),
    }


def model_settings(model, tiny_llms, minilm_path):
    return {
        "SASRec": {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1},
        "LLMSRec": {
            "llm_path": tiny_llms["llama"],
            "llm_dtype": "float32",
            "cf_config": TEACHER,
            "llm_gradient_checkpointing": False,
            "validations_per_epoch": 1,
            "projection_hidden_size": 32,
            "representation_size": 16,
        },
        "ALLMRec": {
            "llm_path": tiny_llms["opt"],
            "llm_dtype": "float32",
            "cf_config": TEACHER,
            "text_encoder_path": minilm_path,
            "text_encoder_max_length": 16,
            "stage1_epochs": 1,
            "train_batch_size": 16,
            "num_candidates": 5,
        },
        "HLLM": {
            "item_llm_path": tiny_llms["llama"],
            "user_llm_path": tiny_llms["llama"],
            "max_text_length": 16,
            "num_negatives": 16,
            "train_batch_size": 32,
            "item_llm_gradient_checkpointing": False,
            "user_llm_gradient_checkpointing": False,
        },
    }[model]


@pytest.mark.parametrize("model", ["SASRec", "LLMSRec", "ALLMRec", "HLLM"])
def test_pickles_planted_in_checkpoint_dir_never_run(
    model, tmp_path, tiny_llms, minilm_path, caplog
):
    checkpoint_dir, marker = tmp_path / "saved", tmp_path / "PWNED"
    names = plant_recbole_caches(checkpoint_dir, model, marker)
    settings = {
        "use_gpu": False,
        "seed": 2020,
        "show_progress": False,
        "epochs": 1,
        "checkpoint_dir": str(checkpoint_dir),
        "train_neg_sample_args": None,
        "user_inter_num_interval": "[0,20]",
        "MAX_ITEM_LIST_LENGTH": 10,
        **model_settings(model, tiny_llms, minilm_path),
    }
    with caplog.at_level("WARNING"):
        result = run_recbole(model, "ml-100k", config_dict=settings)
    assert not marker.exists()
    assert result["test_result"]  # the run itself went through
    assert "is ignored" in caplog.text and any(name in caplog.text for name in names)


def test_recbole_api_after_importing_the_plugin_never_unpickles(tmp_path, small_sasrec_config):
    checkpoint_dir, marker = tmp_path / "saved", tmp_path / "PWNED"
    plant_recbole_caches(checkpoint_dir, "SASRec", marker)
    config = Config(
        model="SASRec",
        dataset="ml-100k",
        config_dict=dict(small_sasrec_config, checkpoint_dir=str(checkpoint_dir)),
    )
    recbole_api_data_preparation(config, recbole_api_create_dataset(config))
    assert not marker.exists()


@pytest.mark.parametrize(
    "key, value",
    [
        ("save_dataset", True),
        ("save_dataloaders", True),
        ("dataset_save_path", "saved/x.pth"),
        ("dataloaders_save_path", "saved/y.pth"),
    ],
)
def test_pickle_cache_settings_are_refused(key, value, small_sasrec_config):
    with pytest.raises(ValueError, match=rf"{key}=.*pickle.*remove {key}"):
        run_recbole("SASRec", "ml-100k", config_dict=dict(small_sasrec_config, **{key: value}))


def test_runs_started_in_the_same_second_get_different_checkpoints(
    small_sasrec_config, monkeypatch
):
    import recbole.trainer.trainer
    import recbole.utils

    from recbole_llmsrec import get_model, get_trainer
    from recbole_llmsrec.data.dataset import create_dataset
    from recbole_llmsrec.evaluation.loaders import data_preparation

    for module in (recbole.trainer.trainer, recbole.utils):
        monkeypatch.setattr(module, "get_local_time", lambda: "Nov-23-2026_10-00-00")
    config = Config(model="SASRec", dataset="ml-100k", config_dict=small_sasrec_config)

    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("SASRec")(config, train_data._dataset)
    first, second = (get_trainer(config["MODEL_TYPE"], "SASRec")(config, model) for _ in range(2))
    assert first.saved_model_file != second.saved_model_file
    assert os.path.basename(first.saved_model_file).startswith("SASRec-Nov-23-2026_10-00-00")


def test_a_checkpoint_write_that_fails_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    import torch

    from recbole_llmsrec.safe_write import atomic_torch_save

    path = tmp_path / "model.pth"
    atomic_torch_save({"w": torch.ones(3)}, str(path))
    before = path.read_bytes()
    real_save = torch.save

    def crash_halfway(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        with open(target, "r+b") as f:
            f.truncate(10)  # a half-written file, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"w": torch.zeros(3)}, str(path))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pth"]  # no temporary file left behind


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


def crafted_checkpoint(path, config, **state_changes):
    """A checkpoint whose pickled Config carries ``state_changes`` (what a crafted file could
    hold)."""
    import torch
    from recbole.config import Config as RecBoleConfig

    state = {**config.__getstate__(), **state_changes}
    honest = RecBoleConfig.__getstate__
    RecBoleConfig.__getstate__ = lambda self: state
    try:
        torch.save({"config": config, "state_dict": {}}, path)
    finally:
        RecBoleConfig.__getstate__ = honest


@pytest.mark.parametrize("field", ["model_class_path", "model_class_name"])
def test_a_checkpoints_config_never_imports_the_module_it_names(field, tmp_path, monkeypatch):
    from recbole_llmsrec.checkpoints import load_checkpoint

    marker = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass X: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = Config(model="SASRec", dataset="ml-100k", config_dict={"train_neg_sample_args": None})
    # an older version's format, and today's
    crafted = (
        {"model_class_path": "evilmod:X", "model_class_name": None}
        if field.endswith("path")
        else {"model_class_name": "evilmod"}
    )
    crafted_checkpoint(tmp_path / "evil.pth", config, **crafted)
    loaded = load_checkpoint(str(tmp_path / "evil.pth"))["config"]
    assert not marker.exists() and loaded.model_class is None
    crafted_checkpoint(tmp_path / "fine.pth", config)  # an honest one still names its class
    assert load_checkpoint(str(tmp_path / "fine.pth"))["config"].model_class.__name__ == "SASRec"


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


@pytest.mark.parametrize("path_kind", ["evaluate", "checkpoint"])
def test_a_crafted_checkpoint_imports_nothing_through_the_command_line_paths(
    path_kind, tmp_path, monkeypatch, small_sasrec_config
):
    marker = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass X: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = dict(small_sasrec_config, epochs=1)
    config = Config(model="SASRec", dataset="ml-100k", config_dict=settings)
    crafted_checkpoint(
        tmp_path / "evil.pth", config, model_class_path="evilmod:X", model_class_name=None
    )
    with pytest.raises((RuntimeError, ValueError, KeyError)):  # its weights are empty
        run_recbole(
            "SASRec", "ml-100k", config_dict=settings, **{path_kind: str(tmp_path / "evil.pth")}
        )
    assert not marker.exists()
