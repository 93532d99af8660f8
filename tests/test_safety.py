"""Security and data safety of files: no code runs from pickles planted in checkpoint_dir or from
a crafted checkpoint, checkpoints are written atomically under unique names."""

import os
import pickle

import pytest
import safety_setup
from recbole.data import create_dataset as recbole_api_create_dataset
from recbole.data import data_preparation as recbole_api_data_preparation
from safety_setup import model_settings

from recbole_llmsrec import Config, run_recbole

# a pytest fixture: the tiny Llama and OPT, built once per module
tiny_llms = safety_setup.tiny_llms


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
