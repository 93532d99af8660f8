"""Evaluation of the plugin's models and profiles: sampled metrics equal RecBole's, the protocol
profiles, the teacher's config, item groups, shuffled histories."""

import pathlib

import evaluation_setup
import pytest
import torch
import yaml
from evaluation_setup import evaluate, prepare, split_mode
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import InputType, init_seed

from recbole_llmsrec import Config, get_trainer
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.evaluation.loaders import data_preparation
from recbole_llmsrec.quick_start import main
from recbole_llmsrec.registry import MODELS
from recbole_llmsrec.tools.tiny_llm import build_tiny_llm

# a pytest fixture: SASRec trained for 2 epochs, and a function that rebuilds the split
trained_sasrec = evaluation_setup.trained_sasrec


PROTOCOL_KEYS = {
    "eval_args",
    "metrics",
    "topk",
    "valid_metric",
    "eval_mask_history",
    "eval_neg_exclude_history",
}
PROFILES = pathlib.Path(__file__).resolve().parent.parent / "properties"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return build_tiny_llm(str(tmp_path_factory.mktemp("llm") / "tiny-llama"), hidden_size=32)


@pytest.fixture(scope="module")
def tiny_opt(tmp_path_factory):
    return build_tiny_llm(
        str(tmp_path_factory.mktemp("llm") / "tiny-opt"), hidden_size=32, architecture="opt"
    )


TEACHER = {
    "hidden_size": 16,
    "inner_size": 16,
    "n_layers": 1,
    "n_heads": 1,
    "epochs": 1,
    "train_batch_size": 512,
}


@pytest.mark.parametrize("model_name", ["LLMSRec", "HLLM", "ALLMRec"])
def test_plugin_models_sampled_metrics_equal_recbole_per_row_metrics(
    model_name, tiny_llama, tiny_opt, minilm_path, tmp_path
):
    settings = {
        "use_gpu": False,
        "seed": 2020,
        "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "user_inter_num_interval": "[0,22]",
        "MAX_ITEM_LIST_LENGTH": 10,
        "eval_args": split_mode("uni9"),
        "eval_neg_exclude_history": True,
        "metrics": ["Hit", "NDCG"],
        "topk": [1, 5],
        "valid_metric": "Hit@1",
        "cf_config": TEACHER,
        "llm_dtype": "float32",
        "llm_path": tiny_opt if model_name == "ALLMRec" else tiny_llama,
        "item_llm_path": tiny_llama,
        "user_llm_path": tiny_llama,
        "max_text_length": 16,
        "projection_hidden_size": 32,
        "representation_size": 16,
        "text_encoder_path": minilm_path,
    }
    config, _, model, train_data, _, test_data = prepare(model_name, settings)
    if model_name == "ALLMRec":
        model.stage_done.fill_(True)  # rank with untrained stages: the scoring path is what counts
    elif model_name == "LLMSRec":
        model.cf_teacher_ready.fill_(True)
    plugin = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    per_row = evaluate(RecBoleTrainer(config, model), config, test_data)
    assert evaluate(plugin, config, test_data) == per_row
    assert per_row["hit@5"] > 0


def test_model_yamls_leave_the_protocol_to_the_profiles():
    for path in (pathlib.Path(entry.config_file) for entry in MODELS.values()):
        assert not PROTOCOL_KEYS & set(yaml.safe_load(path.read_text())), path.name
    keys = ("eval_args", "metrics", "topk", "valid_metric")
    sasrec = Config(model="SASRec", dataset="ml-100k", config_dict={"train_neg_sample_args": None})
    for model_name in ("LLMSRec", "ALLMRec", "HLLM"):
        ours = Config(model=model_name, dataset="ml-100k")
        assert {k: ours[k] for k in keys} == {k: sasrec[k] for k in keys}


@pytest.mark.parametrize("profile", ["llmsrec", "allmrec", "hllm"])
def test_each_paper_profile_runs_sasrec_and_reports_its_metrics(
    profile, small_sasrec_config, monkeypatch, caplog
):
    from recbole_llmsrec.quick_start import run_recbole

    results = {}
    monkeypatch.setattr(
        "recbole_llmsrec.quick_start.run_recbole",
        lambda **kwargs: results.update(run_recbole(**kwargs)),
    )
    overrides = [f"--{k}={v}" for k, v in dict(small_sasrec_config, epochs=1).items()]
    path = PROFILES / "protocol" / f"{profile}.yaml"
    with caplog.at_level("INFO"):
        main(["-m", "SASRec", "-d", "ml-100k", f"--config_files={path}", *overrides])
    spec = yaml.safe_load(path.read_text())
    assert set(results["test_result"]) == {
        f"{m.lower()}@{k}" for m in spec["metrics"] for k in spec["topk"]
    }
    mode = spec["eval_args"]["mode"]
    assert f"'mode': {{'valid': '{mode}', 'test': '{mode}'}}" in caplog.text


def test_teacher_config_overriding_eval_args_is_processed_as_recbole_does(tmp_path):
    from recbole.data.dataloader import FullSortEvalDataLoader

    from recbole_llmsrec.models.cf_teacher.stage0 import teacher_config

    config = Config(
        model="LLMSRec",
        dataset="ml-100k",
        config_file_list=[str(PROFILES / "protocol" / "llmsrec.yaml")],
        config_dict={
            "cf_config": {
                "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
                "topk": 10,
                "valid_metric": "NDCG@10",
                "metrics": ["NDCG"],
            },
            "checkpoint_dir": str(tmp_path),
            "user_inter_num_interval": "[0,30]",
        },
    )
    teacher = teacher_config(config)
    assert teacher["model"] == "SASRec" and teacher["hidden_size"] == 64  # cf_config defaults
    assert teacher["eval_args"]["group_by"] == "user"
    assert teacher["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    assert teacher["topk"] == [10] and teacher["valid_neg_sample_args"]["sample_num"] == "none"
    assert teacher["eval_neg_exclude_history"] is True  # the run's protocol
    _, valid_data, _ = data_preparation(teacher, create_dataset(teacher))
    assert isinstance(valid_data, FullSortEvalDataLoader)
    # the run is untouched
    assert config["eval_args"]["mode"] == {
        "valid": "uni99",
        "test": "uni99",
    }


def test_teacher_config_keeps_the_runs_data_and_split(tmp_path):
    from recbole_llmsrec.models.cf_teacher.stage0 import teacher_config

    def teacher(cf_config):
        return teacher_config(
            Config(
                model="LLMSRec",
                dataset="ml-100k",
                config_file_list=[str(PROFILES / "protocol" / "llmsrec.yaml")],
                config_dict={
                    "cf_config": cf_config,
                    "checkpoint_dir": str(tmp_path),
                    "MAX_ITEM_LIST_LENGTH": 10,
                },
            )
        )

    partial = teacher({"eval_args": {"mode": "full"}})  # RecBole would replace the whole dict
    assert partial["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert partial["eval_args"]["order"] == "TO"
    assert partial["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    with pytest.raises(ValueError, match=r"cf_config.*MAX_ITEM_LIST_LENGTH.*5.*10"):
        teacher({"MAX_ITEM_LIST_LENGTH": 5})
    with pytest.raises(ValueError, match=r"cf_config.*eval_args.*split"):
        teacher({"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}}})


def test_item_groups_split_test_rows_by_training_popularity(trained_sasrec):
    model, build = trained_sasrec
    config, _, _, train_data, _, test_data = build(
        eval_item_groups=[20, 60], metrics=["Recall", "NDCG"], topk=[10]
    )
    result = evaluate(get_trainer(config["MODEL_TYPE"], "SASRec")(config, model), config, test_data)
    # popularity recounted here: the users with the item among their training rows (targets and
    # lists)
    train, test = train_data._dataset[:], test_data._dataset.inter_feat
    users_of = {}
    for user, target, items in zip(
        train["user_id"].tolist(), train["item_id"].tolist(), train["item_id_list"].tolist()
    ):
        for item in (target, *items):
            users_of.setdefault(item, set()).add(user)
    popularity = [len(users_of.get(item, ())) for item in test["item_id"].tolist()]
    groups = {"items[0,20)": (0, 20), "items[20,60)": (20, 60), "items[60,inf)": (60, float("inf"))}
    for name, (low, high) in groups.items():
        assert result[f"rows {name}"] == sum(low <= p < high for p in popularity) > 0
    assert sum(result[f"rows {name}"] for name in groups) == len(test)
    weighted = sum(result[f"rows {name}"] * result[f"recall@10 {name}"] for name in groups) / len(
        test
    )
    assert weighted == pytest.approx(result["recall@10"], abs=2e-4)  # RecBole rounds to 4 decimals
    assert type(result["recall@10"]) is float and type(result["ndcg@10 items[0,20)"]) is float


class OrderBlind(SequentialRecommender):
    """Scores items against the SUM of the history's embeddings: blind to the history's order
    (float64, so that summing in another order changes no score)."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding = torch.nn.Embedding(self.n_items, 8, dtype=torch.float64)

    def calculate_loss(self, interaction):
        return self.full_sort_predict(interaction).logsumexp(-1).mean()

    def full_sort_predict(self, interaction):
        return (self.embedding(interaction[self.ITEM_SEQ]).sum(1) @ self.embedding.weight.T).float()

    def predict(self, interaction):
        user = self.embedding(interaction[self.ITEM_SEQ]).sum(1)
        return (user * self.embedding(interaction[self.ITEM_ID])).sum(-1).float()


def test_shuffled_history_changes_sasrec_but_not_an_order_blind_scorer(
    trained_sasrec, small_sasrec_config
):
    model, build = trained_sasrec
    results, batches = {}, {}
    for shuffle in (False, True):
        config, _, _, _, _, test_data = build(eval_shuffle_history=shuffle)
        batches[shuffle] = next(iter(test_data))[0]
        results[shuffle] = evaluate(
            get_trainer(config["MODEL_TYPE"], "SASRec")(config, model), config, test_data
        )
    plain, shuffled = batches[False]["item_id_list"], batches[True]["item_id_list"]
    assert torch.equal(plain.sort(1).values, shuffled.sort(1).values) and not torch.equal(
        plain, shuffled
    )
    assert results[True] != results[False]

    blind = {}
    for shuffle in (False, True):
        config = Config(
            model=OrderBlind,
            dataset="ml-100k",
            config_dict=dict(
                small_sasrec_config,
                eval_shuffle_history=shuffle,
                eval_args=split_mode({"valid": "uni99", "test": "full"}),
            ),
        )
        init_seed(config["seed"], config["reproducibility"])
        train_data, _, test_data = data_preparation(config, create_dataset(config))
        trainer = get_trainer(config["MODEL_TYPE"], "OrderBlind")(
            config, OrderBlind(config, train_data._dataset)
        )
        blind[shuffle] = evaluate(trainer, config, test_data)
    assert blind[True] == blind[False]
