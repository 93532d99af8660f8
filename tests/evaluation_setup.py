"""Evaluation tests' shared setup: a model and its split on ml-100k, every user's items, seeded
evaluation, a trained SASRec."""

import pytest
from recbole.utils import init_seed

from recbole_llmsrec import Config, get_model, get_trainer
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.evaluation.loaders import data_preparation


def split_mode(mode):
    return {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": mode}


def prepare(model_name, config_dict):
    config = Config(model=model_name, dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(model_name)(config, train_data._dataset)
    return config, dataset, model, train_data, valid_data, test_data


def all_items_by_user(dataset):
    """Every item of every user in the whole (built) dataset: row targets and item lists."""
    feat = dataset[:]  # the rows as RecBole's loaders collate them (lists gathered)
    items = {}
    for user, target, item_list in zip(
        feat[dataset.uid_field].tolist(),
        feat[dataset.iid_field].tolist(),
        feat[dataset.item_id_list_field].tolist(),
    ):
        items.setdefault(user, set()).update([target, *item_list])
    for seen in items.values():
        seen.discard(0)
    return items


def evaluate(trainer, config, data):
    init_seed(config["seed"], config["reproducibility"])  # RecBole's own sampler uses np.random
    return trainer.evaluate(data, load_best_model=False)


@pytest.fixture
def trained_sasrec(small_sasrec_config):
    """SASRec trained for 2 epochs, and a function that rebuilds the split with other settings."""

    def build(**settings):
        return prepare("SASRec", dict(small_sasrec_config, **settings))

    config, dataset, model, train_data, valid_data, test_data = build()
    get_trainer(config["MODEL_TYPE"], "SASRec")(config, model).fit(train_data, saved=False)
    return model, build
