"""A-LLMRec tests' shared setup: the tiny OPT, a run's settings, the model and its trainer on
ml-100k, one-user batches."""

import glob

import pytest
import torch
from recbole.data import data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_llmsrec import Config, get_trainer
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.models.allmrec.model import ALLMRec
from recbole_llmsrec.tools.tiny_llm import build_tiny_llm

TEACHER = {
    "hidden_size": 16,
    "inner_size": 16,
    "n_layers": 1,
    "n_heads": 1,
    "epochs": 2,
    "train_batch_size": 512,
}


@pytest.fixture(scope="module")
def tiny_opt_path(tmp_path_factory):
    return build_tiny_llm(
        str(tmp_path_factory.mktemp("llm") / "tiny-opt"), hidden_size=32, architecture="opt"
    )


@pytest.fixture
def allmrec_config(tiny_opt_path, minilm_path, tmp_path):
    return {
        "use_gpu": False,
        "seed": 2020,
        "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "llm_path": tiny_opt_path,
        "llm_dtype": "float32",
        "llm_gradient_checkpointing": False,
        "text_encoder_path": minilm_path,
        "text_encoder_max_length": 32,
        "user_inter_num_interval": "[0,30]",
        "MAX_ITEM_LIST_LENGTH": 20,
        "cf_config": TEACHER,
        "stage1_epochs": 1,
        "stage1_batch_size": 64,
        "epochs": 1,
        "train_batch_size": 8,
    }


def prepare(config_dict):
    config = Config(model="ALLMRec", dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    model = ALLMRec(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "ALLMRec")(config, model)
    return config, model, trainer, train_data, valid_data, test_data


def stage1_path(config_dict):
    return sorted(glob.glob(config_dict["checkpoint_dir"] + "/ALLMRec-stage1-*.pth"))[-1]


def user_row(model, items, user=1):
    seq = torch.zeros(1, model.max_seq_length, dtype=torch.long)
    seq[0, : len(items)] = torch.tensor(items)
    return Interaction(
        {
            model.USER_ID: torch.tensor([user]),
            model.ITEM_SEQ: seq,
            model.ITEM_SEQ_LEN: torch.tensor([len(items)]),
        }
    )
