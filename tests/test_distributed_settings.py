"""What distributed runs rely on, checked in one process: gradient accumulation, optimizer-step
counts, refused distributed settings, --evaluate's checks, a race-safe checkpoint_dir."""

import os

import pytest
import torch

from recbole_llmsrec import run_recbole


def test_accumulating_two_half_batches_equals_one_step_on_the_whole_batch(small_sasrec_config):
    from recbole.utils import init_seed

    from recbole_llmsrec import Config, get_trainer
    from recbole_llmsrec.data.dataset import create_dataset
    from recbole_llmsrec.evaluation.loaders import data_preparation
    from recbole_llmsrec.registry import get_model

    def one_optimizer_step(accumulation, halves):
        config = Config(
            model="SASRec",
            dataset="ml-100k",
            config_dict={
                **small_sasrec_config,
                "hidden_dropout_prob": 0.0,
                "attn_dropout_prob": 0.0,
                "learner": "sgd",
                "learning_rate": 1.0,
                "gradient_accumulation_steps": accumulation,
            },
        )
        init_seed(config["seed"], True)
        train_data, _, _ = data_preparation(config, create_dataset(config))
        model = get_model("SASRec")(config, train_data._dataset)
        rows = list(range(64))
        batches = (
            [train_data.collate_fn(rows[:32]), train_data.collate_fn(rows[32:])]
            if halves
            else [train_data.collate_fn(rows)]
        )
        get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)._train_epoch(batches, 0)
        return model.state_dict()

    accumulated, whole = one_optimizer_step(2, halves=True), one_optimizer_step(1, halves=False)
    unaccumulated = one_optimizer_step(1, halves=True)  # two optimizer steps: must differ
    for key, value in whole.items():
        torch.testing.assert_close(accumulated[key], value, atol=1e-6, rtol=0)
    assert any(not torch.allclose(unaccumulated[k], v, atol=1e-4) for k, v in whole.items())


def test_optimizer_steps_count_accumulation_groups_per_part_of_an_epoch():
    from recbole_llmsrec.training.schedule import optimizer_steps_before

    # 10 batches in 3 parts (4, 3, 3 batches), groups of 2: 2 + 2 + 2 steps per epoch
    assert [optimizer_steps_before(p, 10, 3, 2) for p in range(4)] == [0, 2, 4, 6]
    assert optimizer_steps_before(7, 10, 3, 2) == 14  # two epochs and one part
    assert optimizer_steps_before(1, 10, 1, 1) == 10


def test_bad_distributed_settings_are_refused_with_the_key(small_sasrec_config):
    from torch import nn

    from recbole_llmsrec import Config
    from recbole_llmsrec.data.dataset import create_dataset
    from recbole_llmsrec.distribution.wrapping import shard_fsdp
    from recbole_llmsrec.registry import get_model

    config = Config(model="SASRec", dataset="ml-100k", config_dict=small_sasrec_config)
    dataset = create_dataset(config)
    from recbole_llmsrec.llm.loading import FrozenLLMNotSaved

    with pytest.raises(ValueError, match="distributed_strategy='zero'"):
        run_recbole(
            "SASRec", "ml-100k", config_dict={**small_sasrec_config, "distributed_strategy": "zero"}
        )
    with pytest.raises(
        ValueError, match="use distributed_strategy: ddp"
    ):  # RecBole's models fit one GPU
        shard_fsdp(get_model("SASRec")(config, dataset), config)

    class FrozenLLMModel(FrozenLLMNotSaved, nn.Module):
        pass

    with pytest.raises(ValueError, match="use distributed_strategy: ddp"):
        shard_fsdp(FrozenLLMModel(), {"mixed_precision": None, "device": torch.device("cpu")})


def test_gradient_accumulation_steps_below_one_is_refused(small_sasrec_config):
    with pytest.raises(ValueError, match="gradient_accumulation_steps=0"):
        run_recbole(
            "SASRec",
            "ml-100k",
            config_dict={**small_sasrec_config, "gradient_accumulation_steps": 0},
        )


def test_evaluate_only_supports_metrics_that_need_the_training_data(small_sasrec_config):
    trained = run_recbole("SASRec", "ml-100k", config_dict={**small_sasrec_config, "epochs": 1})
    result = run_recbole(
        "SASRec",
        "ml-100k",
        config_dict={
            **small_sasrec_config,
            "metrics": ["Recall", "ItemCoverage", "AveragePopularity"],
        },
        evaluate=trained["saved_model_file"],
    )["test_result"]
    assert result["itemcoverage@10"] > 0 and result["averagepopularity@10"] > 0


def test_evaluate_refuses_a_checkpoint_of_another_model_or_data(small_sasrec_config):
    trained = run_recbole("SASRec", "ml-100k", config_dict={**small_sasrec_config, "epochs": 1})
    with pytest.raises(ValueError, match="user_inter_num_interval"):
        run_recbole(
            "SASRec",
            "ml-100k",
            config_dict={**small_sasrec_config, "user_inter_num_interval": "[0,30]"},
            evaluate=trained["saved_model_file"],
        )
    with pytest.raises(ValueError, match="weights do not fit this SASRec.*size mismatch"):
        # e.g. a teacher's checkpoint, other sizes
        run_recbole(
            "SASRec",
            "ml-100k",
            config_dict={**small_sasrec_config, "hidden_size": 32},
            evaluate=trained["saved_model_file"],
        )


def test_recbole_creates_checkpoint_dir_safely_when_another_process_just_did(tmp_path, monkeypatch):
    from recbole.trainer import trainer as recbole_trainer

    (tmp_path / "saved").mkdir()  # another rank created it between RecBole's check and its makedirs
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    recbole_trainer.ensure_dir(str(tmp_path / "saved"))  # RecBole's own raised FileExistsError here
