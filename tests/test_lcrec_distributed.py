"""LCRec in two processes (torchrun, gloo on CPU): the item index built once, the checkpoint
evaluated the same in one process, on SASRec's data. (That two processes take the same steps as one
is tests/distributed_steps.py.)"""

import glob
import os

import pytest
from test_distributed import ROOT, launch, logged_result

from recbole_llmsrec import Config, run_recbole
from recbole_llmsrec.fingerprint import build_data
from recbole_llmsrec.tools.tiny_llm import build_tiny_llm


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return build_tiny_llm(str(tmp_path_factory.mktemp("llms") / "llama"), hidden_size=32)


SETTINGS = {
    "llm_dtype": "float32",
    "item_index": "collaborative",
    "item_index_codebook_size": 16,
    "item_description_fields": "['class']",  # a list literal: RecBole reads it as a list
    "user_inter_num_interval": "[0,22]",
    "MAX_ITEM_LIST_LENGTH": 5,
    "prompt_history_length": 5,
    "num_beams": 10,
    "epochs": 1,
    "train_batch_size": 16,
    "learning_rate": 0.002,
    "gradient_accumulation_steps": 1,
    "eval_mask_history": True,
    "topk": "[10]",
    "valid_metric": "NDCG@10",
}


def test_lcrec_trained_in_two_processes_evaluates_the_same_in_one(tiny_llama, tmp_path):
    """The item index is built once (rank 0) and read by the other rank; the beam search's
    ranking of each user does not depend on which rank evaluates it."""
    settings = {**SETTINGS, "llm_path": tiny_llama, "checkpoint_dir": str(tmp_path / "saved")}
    protocol = os.path.join(ROOT, "properties", "protocol", "hllm.yaml")
    launch(
        [
            "-m",
            "recbole_llmsrec",
            "--model=LCRec",
            "--dataset=ml-100k",
            "--use_gpu=False",
            "--show_progress=False",
            f"--config_files={protocol}",
            *[f"--{k}={v}" for k, v in settings.items()],
        ],
        tmp_path,
    )
    assert len(glob.glob(str(tmp_path / "saved" / "item_index" / "collaborative-*.json"))) == 1
    two_processes = logged_result(tmp_path / "log" / "LCRec")
    assert set(two_processes) >= {"recall@10", "ndcg@10"}
    checkpoint = glob.glob(str(tmp_path / "saved" / "LCRec-*.pth"))[0]
    # the same settings in one process, the lists as lists
    one_process = {
        **settings,
        "use_gpu": False,
        "show_progress": False,
        "item_description_fields": ["class"],
        "topk": [10],
    }
    evaluated = run_recbole(
        "LCRec",
        "ml-100k",
        config_file_list=[protocol],
        config_dict=one_process,
        evaluate=checkpoint,
    )
    assert evaluated["test_result"] == two_processes
    sasrec = Config(
        model="SASRec", dataset="ml-100k", config_file_list=[protocol], config_dict=one_process
    )
    assert evaluated["data_fingerprint"] == build_data(sasrec)[-1]  # SASRec's data
