"""Every ready-to-run profile in properties/ is a valid config for the model it is written for."""

import pathlib

import pytest

from recbole_llmsrec import Config

PROPERTIES = pathlib.Path(__file__).resolve().parent.parent / "properties"
PROFILES = {
    "ml-100k-offline.yaml": ("SASRec", "ml-100k"),
    "llmsrec-ml-100k-offline.yaml": ("LLMSRec", "ml-100k"),
    "allmrec-ml-100k-offline.yaml": ("ALLMRec", "ml-100k"),
    "hllm-ml-100k-offline.yaml": ("HLLM", "ml-100k"),
    "amazon/hllm-books.yaml": ("HLLM", "Books"),
    "amazon/llmsrec.yaml": ("LLMSRec", "Industrial_and_Scientific"),
    "amazon/allmrec-movies.yaml": ("ALLMRec", "Movies_and_TV"),
    "amazon/allmrec-games.yaml": ("ALLMRec", "Video_Games"),
    "amazon/allmrec-toys.yaml": ("ALLMRec", "Toys_and_Games"),
}


def test_every_profile_is_listed():
    found = {str(p.relative_to(PROPERTIES)) for p in PROPERTIES.rglob("*.yaml")} - {"full-sort.yaml"}
    assert found == set(PROFILES)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_loads_for_its_model(profile):
    model, dataset = PROFILES[profile]
    config = Config(model=model, dataset=dataset,
                    config_file_list=[str(PROPERTIES / profile), str(PROPERTIES / "full-sort.yaml")])
    assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    if model == "ALLMRec":
        assert "{history}" in config["prompt_template"] and "{candidates}" in config["prompt_template"]
    if profile.startswith("amazon/"):
        assert "title" in config["load_col"]["item"] and config["item_title_field"] == "title"
        assert set(config["item_text_fields"] or []) <= set(config["load_col"]["item"])
