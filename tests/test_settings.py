"""One schema for every key the plugin adds, checked once when the config is built, before any
data."""

import pathlib
import re

import pytest
import yaml

from recbole_llmsrec import Config, run_recbole
from recbole_llmsrec.settings import SCHEMA, SettingError

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "recbole_llmsrec"
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
KIND_OF_COMMENT = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "list": "list",
    "dict": "dict",
}

BAD_VALUES = [  # (key, value, what the message must say is allowed), from the list and more
    ("adam_betas", [0.9], "two numbers in \\[0, 1\\)"),
    ("adam_betas", [0.9, 0.98, 0.5], "two numbers"),
    ("adam_betas", [1.5, -2], "two numbers"),
    ("adam_betas", "abc", "a list"),
    ("eval_item_groups", 10, "a list"),
    ("eval_item_groups", ["a", "b"], "increasing numbers >= 0"),
    ("eval_item_groups", [-1, 5], "increasing numbers >= 0"),
    ("eval_item_groups", [50, 10], "increasing numbers >= 0"),
    ("validations_per_epoch", 0, "an integer >= 1"),
    ("validations_per_epoch", 2.5, "an integer >= 1"),
    ("validations_per_epoch", "abc", "an integer >= 1"),
    ("gradient_accumulation_steps", 1_000_000, "<= 4096"),
    ("lr_decay_per_validation", -1, "a number > 0.0 and <= 1.0"),
    ("lr_decay_per_validation", 0, "a number > 0.0 and <= 1.0"),
    ("distributed_timeout_minutes", 0, "a number > 0"),
    ("distributed_timeout_minutes", -5, "a number > 0"),
    ("distributed_strategy", "zero3", "one of 'ddp', 'fsdp'"),
    ("eval_mask_history", "yes please", "True or False"),
]


@pytest.mark.parametrize("key, value, allowed", BAD_VALUES)
def test_a_bad_value_is_refused_with_the_key_the_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(
        SettingError,
        match=rf"^{re.escape(key)}={re.escape(repr(value))} is not allowed: "
        rf"it must be .*{allowed}",
    ):
        Config(
            model="SASRec",
            dataset="ml-100k",
            config_dict={"train_neg_sample_args": None, key: value},
        )


def test_settings_are_checked_before_any_data_is_loaded(monkeypatch):
    monkeypatch.setattr(
        "recbole_llmsrec.fingerprint.create_dataset",
        lambda config: pytest.fail("data loaded before the settings were checked"),
    )
    with pytest.raises(SettingError, match="adam_betas"):
        run_recbole(
            "SASRec", "ml-100k", config_dict={"adam_betas": [0.9], "train_neg_sample_args": None}
        )


def test_a_plugin_models_own_keys_are_checked_for_it():
    with pytest.raises(
        SettingError, match=r"num_candidates=1 is not allowed: it must be an integer >= 2"
    ):
        Config(model="ALLMRec", dataset="ml-100k", config_dict={"num_candidates": 1})
    with pytest.raises(SettingError, match=r"llm_dtype='fp8' is not allowed: it must be one of"):
        Config(model="LLMSRec", dataset="ml-100k", config_dict={"llm_dtype": "fp8"})
    with pytest.raises(SettingError, match=r"temperature_min=0.5 is above temperature_init=0.07"):
        Config(model="HLLM", dataset="ml-100k", config_dict={"temperature_min": 0.5})


def test_a_setting_without_effect_is_refused_not_labelled_as_done():
    with pytest.raises(SettingError, match="eval_shuffle_history=True has no effect for BPR"):
        Config(model="BPR", dataset="ml-100k", config_dict={"eval_shuffle_history": True})
    with pytest.raises(SettingError, match="distributed_strategy='fsdp' is not allowed for SASRec"):
        Config(
            model="SASRec",
            dataset="ml-100k",
            config_dict={"distributed_strategy": "fsdp", "train_neg_sample_args": None},
        )


def yaml_entries(path):
    """``{key: (value, comment type or None)}`` of a plugin YAML's top-level keys."""
    values = yaml.safe_load(path.read_text())
    comments = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z_]+):.*#\s*\((\w+)\)", line)
        if match:
            comments[match.group(1)] = match.group(2)
    return {key: (value, comments.get(key)) for key, value in values.items()}


def recbole_keys():
    return set(
        Config(
            model="SASRec", dataset="ml-100k", config_dict={"train_neg_sample_args": None}
        ).final_config_dict
    )


@pytest.mark.parametrize(
    "name",
    [
        "properties/overall.yaml",
        "models/llmsrec/LLMSRec.yaml",
        "models/allmrec/ALLMRec.yaml",
        "models/hllm/HLLM.yaml",
    ],
)
def test_the_yaml_comments_and_defaults_agree_with_the_schema(name):
    known = recbole_keys()
    for key, (value, comment) in yaml_entries(PACKAGE / name).items():
        assert key in SCHEMA or key in known, (
            f"{name}: {key} is neither in the schema nor RecBole's"
        )
        if key in SCHEMA and comment:
            assert KIND_OF_COMMENT[SCHEMA[key].kind] == comment, f"{name}: {key}"
        if key in SCHEMA and name == "properties/overall.yaml":
            assert value == SCHEMA[key].default, f"overall.yaml: {key}"


def test_the_readme_config_table_agrees_with_the_schema():
    section = README.read_text().split("## Config keys this plugin adds")[1].split("\n## ")[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    assert rows
    for keys, default in rows:
        shown = default.split("`")[1].strip('"')
        for key in re.findall(r"`([a-z_]+)`", keys):
            expected = SCHEMA[key].default
            assert shown == ("~" if expected is None else str(expected)), key
