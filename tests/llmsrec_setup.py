"""LLM-SRec tests' shared setup: the tiny LLM, a run's settings, the model on ml-100k, user
batches."""

import pytest
import torch
from recbole.data import data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_llmsrec import Config
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.models.llmsrec.model import (
    LLMSRec,
)
from recbole_llmsrec.tools.tiny_llm import build_tiny_llm

TEACHER = {
    "hidden_size": 16,
    "inner_size": 16,
    "n_layers": 1,
    "n_heads": 1,
    "hidden_dropout_prob": 0.1,
    "attn_dropout_prob": 0.1,
    "hidden_act": "relu",
    "layer_norm_eps": 1e-8,
    "initializer_range": 0.02,
    "loss_type": "CE",
    "learning_rate": 0.001,
    "train_batch_size": 256,
    "epochs": 2,
    "stopping_step": 10,
}


@pytest.fixture(scope="module")
def tiny_llm_path(tmp_path_factory):
    return build_tiny_llm(str(tmp_path_factory.mktemp("llm") / "tiny-llama"), hidden_size=32)


@pytest.fixture
def llmsrec_config(tiny_llm_path, tmp_path):
    return {
        "use_gpu": False,
        "seed": 2020,
        "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "llm_path": tiny_llm_path,
        "llm_dtype": "float32",
        "llm_gradient_checkpointing": False,
        "user_inter_num_interval": "[0,30]",
        "MAX_ITEM_LIST_LENGTH": 20,
        "epochs": 2,
        "cf_config": TEACHER,
        "projection_hidden_size": 64,
        "representation_size": 16,
        "learning_rate": 0.001,
    }


def prepare(config_dict):
    config = Config(model="LLMSRec", dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    model = LLMSRec(config, train_data._dataset)
    return config, model, train_data, valid_data, test_data


def user_batch(item_lists, times=None, model=None):
    length = model.max_seq_length
    seq = torch.zeros(len(item_lists), length, dtype=torch.long)
    for row, items in enumerate(item_lists):
        seq[row, : len(items)] = torch.tensor(items)
    data = {model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: torch.tensor([len(i) for i in item_lists])}
    if model.time_list_field:
        data[model.time_list_field] = torch.full((len(item_lists), length), 8.8e8)
    return Interaction(data)
