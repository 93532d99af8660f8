"""Model lookup and config precedence: plugin defaults sit beneath everything the user gives."""

import pytest
import yaml
from conftest import ToyLLMRec
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_llmsrec import Config, get_model, registry
from recbole_llmsrec.registry import is_plugin_model


@pytest.fixture
def toy_plugin_model(tmp_path, monkeypatch, toy_model):
    properties = tmp_path / "properties"
    (properties / "model").mkdir(parents=True)
    (properties / "dataset").mkdir()
    (properties / "overall.yaml").write_text(
        yaml.safe_dump({"llm_dtype": "bfloat16", "shared_key": "overall", "ds_key": "overall"})
    )
    (properties / "model" / "ToyLLMRec.yaml").write_text(
        yaml.safe_dump(
            {"learning_rate": 0.0005, "shared_key": "model", "toy_size": 8, "ds_key": "model"}
        )
    )
    (properties / "dataset" / "ml-100k.yaml").write_text(yaml.safe_dump({"ds_key": "dataset"}))
    monkeypatch.setattr(Config, "properties_dir", str(properties))
    entry = registry.ModelEntry(
        "ToyLLMRec", ToyLLMRec, config_file=str(properties / "model" / "ToyLLMRec.yaml")
    )
    monkeypatch.setitem(registry.MODELS, "ToyLLMRec", entry)
    return properties


def test_get_model_finds_plugin_models_first_then_recbole(toy_plugin_model):
    assert get_model("ToyLLMRec") is ToyLLMRec
    assert get_model("SASRec") is SASRec
    assert is_plugin_model(ToyLLMRec) and not is_plugin_model(SASRec)
    with pytest.raises(ValueError, match="NoSuchModel"):
        get_model("NoSuchModel")


@pytest.mark.parametrize(
    "typo, closest", [("LLMSrec", "LLMSRec"), ("sasrec", "SASRec"), ("HLMM", "HLLM")]
)
def test_a_model_name_typo_lists_the_plugin_models_and_the_closest_name(typo, closest):
    with pytest.raises(ValueError) as error:  # RecBole's own lookup ended importing lightgbm
        get_model(typo)
    message = str(error.value)
    assert "ALLMRec, HLLM, LCRec, LLMSRec" in message and f"Did you mean {closest}" in message
    assert "lightgbm" not in message


def test_plugin_model_defaults_sit_beneath_files_dicts_and_command_line(
    toy_plugin_model, tmp_path, monkeypatch
):
    user_file = tmp_path / "user.yaml"
    user_file.write_text(yaml.safe_dump({"toy_size": 16, "learning_rate": 0.01}))
    monkeypatch.setattr("sys.argv", ["run", "--learning_rate=0.02"])

    config = Config(
        model="ToyLLMRec",
        dataset="ml-100k",
        config_file_list=[str(user_file)],
        config_dict={"toy_size": 32, "train_neg_sample_args": None},
    )

    assert config["shared_key"] == "model"  # model YAML beats the plugin's overall YAML
    assert config["ds_key"] == "dataset"  # plugin dataset YAML beats the model YAML
    assert config["llm_dtype"] == "bfloat16"  # plugin overall default, nobody overrode it
    assert config["toy_size"] == 32  # dict beats file beats model YAML
    assert config["learning_rate"] == 0.02  # command line beats everything
    assert config["MODEL_TYPE"] == ToyLLMRec.type


def test_model_yaml_beats_recbole_internal_defaults(toy_plugin_model):
    config = Config(
        model="ToyLLMRec", dataset="ml-100k", config_dict={"train_neg_sample_args": None}
    )
    assert config["learning_rate"] == 0.0005  # RecBole's overall.yaml says 0.001


def test_recbole_models_get_exactly_recbole_config(toy_plugin_model):
    import recbole.config

    ours = Config(model="SASRec", dataset="ml-100k", config_dict={"train_neg_sample_args": None})
    theirs = recbole.config.Config(
        model="SASRec", dataset="ml-100k", config_dict={"train_neg_sample_args": None}
    )
    assert ours["shared_key"] is None
    assert ours.final_config_dict == theirs.final_config_dict


def test_shipped_defaults_are_found_by_an_installed_package():
    config = Config(model="SASRec", dataset="ml-100k", config_dict={"train_neg_sample_args": None})
    assert config["item_text_fields"] is None  # SASRec is RecBole's: no plugin keys
    import os

    from recbole_llmsrec.config import PROPERTIES_DIR

    with open(os.path.join(PROPERTIES_DIR, "overall.yaml")) as f:
        shipped = yaml.safe_load(f)
    assert shipped["trust_remote_code"] is False and shipped["llm_dtype"] == "bfloat16"


def test_partial_cf_config_completes_the_model_defaults(tmp_path):
    config = Config(model="LLMSRec", dataset="ml-100k", config_dict={"cf_config": {"epochs": 3}})
    assert config["cf_config"]["epochs"] == 3
    assert config["cf_config"]["hidden_size"] == 64 and config["cf_config"]["n_heads"] == 1
