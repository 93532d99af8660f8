"""RecBole's whole pipeline through the plugin on today's numpy/torch/pandas."""

import copy
import pickle

import pytest
import torch
from recbole.config import Config as RecBoleConfig
from recbole.data import create_dataset, data_preparation
from recbole.data.transform import construct_transform
from recbole.utils import get_flops, init_logger, init_seed
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_llmsrec import Config, run_recbole
from recbole_llmsrec.checkpoints import load_checkpoint
from recbole_llmsrec.quick_start import main


def run_with_recbole_api(config_dict):
    """RecBole 1.2.1's own run_recbole, step for step, with nothing from the plugin but its
    import."""
    config = RecBoleConfig(model="SASRec", dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = recbole_get_model(config["model"])(config, train_data._dataset).to(config["device"])
    get_flops(model, dataset, config["device"], None, construct_transform(config))
    trainer = recbole_get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    _, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    return best_valid_result, test_result


def test_sasrec_metrics_through_the_plugin_equal_recbole_api(small_sasrec_config):
    ours = run_recbole("SASRec", "ml-100k", config_dict=dict(small_sasrec_config))
    valid, test = run_with_recbole_api(dict(small_sasrec_config))
    assert ours["best_valid_result"] == valid
    assert ours["test_result"] == test
    assert test["ndcg@10"] > 0


def test_checkpoint_is_weights_only_loadable_and_best_model_is_reloaded(small_sasrec_config):
    from recbole_llmsrec import get_model, get_trainer

    config = Config(model="SASRec", dataset="ml-100k", config_dict=small_sasrec_config)
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    model = get_model("SASRec")(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)

    checkpoint = torch.load(trainer.saved_model_file, weights_only=True)
    assert checkpoint["config"]["model"] == "SASRec"
    assert checkpoint["config"].model_class is type(model)
    best_state = checkpoint["state_dict"]
    result_with_best = trainer.evaluate(test_data, load_best_model=False)

    with torch.no_grad():  # wreck the in-memory weights: load_best_model must restore them
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    assert not torch.equal(model.item_embedding.weight, best_state["item_embedding.weight"])
    result_reloaded = trainer.evaluate(test_data, load_best_model=True)
    assert torch.equal(model.item_embedding.weight, best_state["item_embedding.weight"])
    assert result_reloaded == result_with_best


def test_cli_resume_from_checkpoint_continues_at_the_next_epoch(
    small_sasrec_config, monkeypatch, caplog
):
    one_epoch = dict(small_sasrec_config, epochs=1)
    first = run_recbole("SASRec", "ml-100k", config_dict=one_epoch)
    overrides = [f"--{k}={v}" for k, v in dict(small_sasrec_config, epochs=3).items()]

    captured = {}

    def capture(**kwargs):
        captured.update(kwargs)
        return run_recbole(**kwargs)

    monkeypatch.setattr("recbole_llmsrec.quick_start.run_recbole", capture)
    with caplog.at_level("INFO"):
        main(
            [
                "-m",
                "SASRec",
                "-d",
                "ml-100k",
                f"--checkpoint={first['saved_model_file']}",
                *overrides,
            ]
        )
    assert captured["checkpoint"] == first["saved_model_file"]
    log = caplog.text
    assert "Resume training from epoch 1" in log
    assert "epoch 0 training" not in log and "epoch 2 training" in log


def test_sampled_uni100_evaluation_runs(small_sasrec_config):
    config = dict(
        small_sasrec_config,
        epochs=1,
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni100"},
    )
    result = run_recbole("SASRec", "ml-100k", config_dict=config)
    assert 0 < result["test_result"]["hit@10"] <= 1


def test_config_pickles_without_class_objects(small_sasrec_config):
    config = Config(model="SASRec", dataset="ml-100k", config_dict=small_sasrec_config)
    payload = pickle.dumps(config)
    assert b"FullLoader" not in payload and b"sasrec\nSASRec" not in payload
    restored = pickle.loads(payload)
    assert restored.final_config_dict == config.final_config_dict
    assert restored.model_class is config.model_class
    assert copy.deepcopy(config)["hidden_size"] == 16


class _Exploit:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_checkpoints_that_would_run_code_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": _Exploit()}, path)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        load_checkpoint(str(path))
    assert "arbitrary code ran" not in capsys.readouterr().out


def test_checkpoints_of_unpatched_recbole_get_a_clear_error(tmp_path):
    path = tmp_path / "legacy.pth"  # RecBole 1.2.1 writes protocol 4, which weights_only rejects
    torch.save({"state_dict": {"w": torch.ones(1)}}, path, pickle_protocol=4)
    with pytest.raises(ValueError, match="written by RecBole without recbole_llmsrec"):
        load_checkpoint(str(path))
    assert load_checkpoint(str(path), allow_unsafe=True)["state_dict"]["w"].item() == 1


def test_recbole_runs_without_anomaly_detection():
    import recbole.model.sequential_recommender.sine  # noqa: F401  (it switches the mode on at import)

    assert not torch.is_anomaly_enabled()
