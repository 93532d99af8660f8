"""Safety tests' shared setup: tiny LLMs and the small settings that let each model run."""

import pytest

from recbole_llmsrec.tools.tiny_llm import build_tiny_llm

TEACHER = {
    "hidden_size": 16,
    "inner_size": 16,
    "n_layers": 1,
    "n_heads": 1,
    "epochs": 1,
    "train_batch_size": 512,
}


@pytest.fixture(scope="module")
def tiny_llms(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    return {
        "llama": build_tiny_llm(str(root / "tiny-llama"), hidden_size=32),
        "opt": build_tiny_llm(str(root / "tiny-opt"), hidden_size=32, architecture="opt"),
    }


def model_settings(model, tiny_llms, minilm_path):
    return {
        "SASRec": {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1},
        "LLMSRec": {
            "llm_path": tiny_llms["llama"],
            "llm_dtype": "float32",
            "cf_config": TEACHER,
            "llm_gradient_checkpointing": False,
            "validations_per_epoch": 1,
            "projection_hidden_size": 32,
            "representation_size": 16,
        },
        "ALLMRec": {
            "llm_path": tiny_llms["opt"],
            "llm_dtype": "float32",
            "cf_config": TEACHER,
            "text_encoder_path": minilm_path,
            "text_encoder_max_length": 16,
            "stage1_epochs": 1,
            "train_batch_size": 16,
            "num_candidates": 5,
        },
        "HLLM": {
            "item_llm_path": tiny_llms["llama"],
            "user_llm_path": tiny_llms["llama"],
            "max_text_length": 16,
            "num_negatives": 16,
            "train_batch_size": 32,
            "item_llm_gradient_checkpointing": False,
            "user_llm_gradient_checkpointing": False,
        },
    }[model]
