"""Every ready-to-run profile in properties/ is a valid config for the model it is written for."""

import pathlib
import re

import pytest
import yaml

from recbole_llmsrec import Config

PROPERTIES = pathlib.Path(__file__).resolve().parent.parent / "properties"
PROTOCOLS = {
    "protocol/llmsrec.yaml": "uni99",
    "protocol/allmrec.yaml": "uni19",
    "protocol/hllm.yaml": "full",
}
# model settings -> (model, dataset, the protocol profile its commands pair it with)
PROFILES = {
    "llmsrec-ml-100k-offline.yaml": ("LLMSRec", "ml-100k", "protocol/llmsrec.yaml"),
    "allmrec-ml-100k-offline.yaml": ("ALLMRec", "ml-100k", "protocol/allmrec.yaml"),
    "hllm-ml-100k-offline.yaml": ("HLLM", "ml-100k", "protocol/hllm.yaml"),
    "lcrec-ml-100k-offline.yaml": ("LCRec", "ml-100k", "protocol/hllm.yaml"),
    "amazon/hllm-books.yaml": ("HLLM", "Books", "protocol/hllm.yaml"),
    "amazon/llmsrec.yaml": ("LLMSRec", "Industrial_and_Scientific", "protocol/llmsrec.yaml"),
    "amazon/allmrec-movies.yaml": ("ALLMRec", "Movies_and_TV", "protocol/allmrec.yaml"),
    "amazon/allmrec-games.yaml": ("ALLMRec", "Video_Games", "protocol/allmrec.yaml"),
    "amazon/allmrec-toys.yaml": ("ALLMRec", "Toys_and_Games", "protocol/allmrec.yaml"),
}
PROTOCOL_KEYS = {
    "eval_args",
    "metrics",
    "topk",
    "valid_metric",
    "eval_mask_history",
    "eval_neg_exclude_history",
}


def test_every_profile_is_listed():
    found = {str(p.relative_to(PROPERTIES)) for p in PROPERTIES.rglob("*.yaml")}
    assert found == set(PROFILES) | set(PROTOCOLS) | {
        "full-sort.yaml",
        "ml-100k-offline.yaml",
        "sasrec-ml-100k-offline.yaml",
        *INDEX_SCHEMES,
    }


INDEX_SCHEMES = {
    f"item_index/{scheme}.yaml" for scheme in ("sequential", "collaborative", "random")
}


@pytest.mark.parametrize("scheme", sorted(INDEX_SCHEMES))
def test_an_index_scheme_file_switches_only_the_index(scheme):
    """A group run's ``LCRec@<scheme>`` file on top of the LCRec profile changes the scheme and
    nothing else."""
    files = [str(PROPERTIES / "protocol/hllm.yaml"), str(PROPERTIES / "lcrec-ml-100k-offline.yaml")]
    plain = Config(model="LCRec", dataset="ml-100k", config_file_list=files)
    switched = Config(
        model="LCRec", dataset="ml-100k", config_file_list=[*files, str(PROPERTIES / scheme)]
    )
    assert switched["item_index"] == scheme.split("/")[1].removesuffix(".yaml") != "rqvae"
    assert plain["item_index"] == "rqvae"
    assert yaml.safe_load((PROPERTIES / scheme).read_text()) == {
        "item_index": switched["item_index"]
    }


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_model_profiles_leave_the_protocol_to_the_protocol_profiles(profile):
    model, dataset, protocol = PROFILES[profile]
    assert not PROTOCOL_KEYS & set(yaml.safe_load((PROPERTIES / profile).read_text()))
    assert protocol in (PROPERTIES / profile).read_text()  # its command names its protocol
    config = Config(
        model=model,
        dataset=dataset,
        config_file_list=[str(PROPERTIES / protocol), str(PROPERTIES / profile)],
    )
    assert config["eval_args"]["mode"]["test"] == PROTOCOLS[protocol]
    config = Config(
        model=model,
        dataset=dataset,
        config_file_list=[
            str(PROPERTIES / protocol),
            str(PROPERTIES / profile),
            str(PROPERTIES / "full-sort.yaml"),
        ],
    )
    assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    if model == "ALLMRec":
        assert (
            "{history}" in config["prompt_template"] and "{candidates}" in config["prompt_template"]
        )
    if profile.startswith("amazon/"):
        assert "title" in config["load_col"]["item"] and config["item_title_field"] == "title"
        assert set(config["item_text_fields"] or []) <= set(config["load_col"]["item"])


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec", "LLMSRec", "ALLMRec", "HLLM", "LCRec"])
@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_protocol_profiles_give_every_model_the_same_protocol(protocol, model):
    config = Config(model=model, dataset="ml-100k", config_file_list=[str(PROPERTIES / protocol)])
    spec = yaml.safe_load((PROPERTIES / protocol).read_text())
    assert config["eval_args"]["mode"]["test"] == PROTOCOLS[protocol]
    for key in PROTOCOL_KEYS - {"eval_args"}:
        assert config[key] == (spec.get(key, False) if key.startswith("eval_") else spec[key]) or (
            config[key] is None and not spec.get(key)
        )


README = PROPERTIES.parent / "README.md"


def readme_protocol_rows():
    """The rows of README's table of protocol profiles: ``(profile, candidates, metrics,
    selection)``."""
    rows = []
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if (
            len(cells) == 5
            and cells[0].startswith("`")
            and cells[0].split("`")[1].endswith(".yaml")
        ):
            rows.append((cells[0].split("`")[1], cells[2], cells[3], cells[4]))
    return rows


def test_readme_describes_each_protocol_profile_as_the_config_it_builds():
    rows = readme_protocol_rows()
    assert {row[0] for row in rows} == {*PROTOCOLS, "full-sort.yaml"}
    for profile, candidates, metrics, selection in rows:
        files = (
            [str(PROPERTIES / "protocol" / "llmsrec.yaml")] if profile == "full-sort.yaml" else []
        )
        config = Config(
            model="SASRec", dataset="ml-100k", config_file_list=[*files, str(PROPERTIES / profile)]
        )
        mode = candidates.split("`")[1]
        assert config["eval_args"]["mode"] == {"valid": mode, "test": mode}, profile
        assert (
            config["eval_args"]["split"] == {"LS": "valid_and_test"}
            and config["eval_args"]["order"] == "TO"
        )
        assert bool(config["eval_mask_history"]) == ("history masked" in candidates), profile
        if mode != "full":  # negatives exist in sampled modes only
            assert bool(config["eval_neg_exclude_history"]) == ("outside the history" in candidates)
        names = set(re.findall(r"[A-Za-z]+", metrics))  # "Hit@1 (+ Hit, NDCG @5, 10)"
        cutoffs = {int(k) for k in re.findall(r"\d+", metrics)}
        assert names == set(config["metrics"]) and cutoffs == set(config["topk"]), profile
        assert selection == f"valid {config['valid_metric']}", profile
