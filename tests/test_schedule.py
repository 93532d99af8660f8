"""LLM-SRec's optimisation schedule as trainer options for any model: several validations per epoch,
patience in validations, LR decay per validation, Adam betas."""

import pathlib

import pytest
from recbole.utils import init_seed

from recbole_llmsrec import Config, get_model, get_trainer
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.evaluation.loaders import data_preparation


def fit(config_dict, model_name="SASRec"):
    config = Config(model=model_name, dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    model = get_model(model_name)(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    trained, validations = [], []
    step = model.calculate_loss
    model.calculate_loss = lambda interaction: trained.append(len(interaction)) or step(interaction)
    trainer.fit(
        train_data,
        valid_data,
        saved=False,
        callback_fn=lambda epoch, score: validations.append(
            trainer.optimizer.param_groups[0]["lr"]
        ),
    )
    return trainer, train_data, trained, validations


def test_validations_per_epoch_validate_k_times_and_see_every_sample_once(small_sasrec_config):
    settings = dict(small_sasrec_config, train_batch_size=256, stopping_step=100)
    _, train_data, trained, validations = fit(dict(settings, validations_per_epoch=4))
    assert len(validations) == 2 * 4  # 2 epochs x 4 validations
    assert sum(trained) == 2 * len(train_data._dataset)  # each sample once per epoch
    _, _, trained_plain, validations_plain = fit(settings)
    assert len(validations_plain) == 2 and sum(trained_plain) == sum(trained)


def test_learning_rate_decays_once_per_validation(small_sasrec_config):
    trainer, _, _, lrs = fit(
        dict(
            small_sasrec_config,
            validations_per_epoch=3,
            learning_rate=0.01,
            lr_decay_per_validation=0.5,
            stopping_step=100,
        )
    )
    # the callback runs after the validation's decay: the i-th validation leaves lr * 0.5 ** i
    assert lrs == pytest.approx([0.01 * 0.5**i for i in range(1, 7)])


def test_patience_counts_validations(small_sasrec_config, monkeypatch):
    # validation scores that only get worse: stopping_step 2 stops at the 4th validation, mid-epoch
    from recbole.trainer import Trainer

    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    monkeypatch.setattr(
        Trainer,
        "_valid_epoch",
        lambda self, data, show_progress=False: (s := next(scores), {"hit@10": s}),
    )
    _, _, trained, validations = fit(
        dict(
            small_sasrec_config,
            epochs=1,
            validations_per_epoch=5,
            stopping_step=2,
            train_batch_size=128,
        )
    )
    assert len(validations) == 4
    assert 0 < sum(trained) < len(validations) / 5 * 1.2 * _training_rows(small_sasrec_config)


def _training_rows(config_dict):
    config = Config(model="SASRec", dataset="ml-100k", config_dict=config_dict)
    train_data, _, _ = data_preparation(config, create_dataset(config))
    return len(train_data._dataset)


def test_adam_betas_reach_the_optimizer(small_sasrec_config):
    trainer, *_ = fit(dict(small_sasrec_config, epochs=1, adam_betas=[0.9, 0.98]))
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.98)
    with pytest.raises(ValueError, match="adam_betas.*sgd"):
        fit(dict(small_sasrec_config, epochs=1, adam_betas=[0.9, 0.98], learner="sgd"))


def test_llmsrec_and_allmrec_default_to_the_originals_schedule_and_sasrec_keeps_its_own():
    for model_name in ("LLMSRec", "ALLMRec"):
        config = Config(model=model_name, dataset="ml-100k")
        assert config["adam_betas"] == [0.9, 0.98]
        assert config["cf_config"]["adam_betas"] == [0.9, 0.98]
        assert config["cf_config"]["validations_per_epoch"] == 1
    config = Config(model="LLMSRec", dataset="ml-100k")
    assert (
        config["validations_per_epoch"],
        config["stopping_step"],
        config["lr_decay_per_validation"],
    ) == (10, 5, 0.95)
    protocol = pathlib.Path(__file__).resolve().parent.parent / "properties/protocol/llmsrec.yaml"
    sasrec = Config(model="SASRec", dataset="ml-100k", config_file_list=[str(protocol)])
    assert sasrec["validations_per_epoch"] is None and sasrec["lr_decay_per_validation"] is None


def test_cosine_schedule_resumed_mid_epoch_continues_where_it_stopped(small_sasrec_config):
    # HLLMTrainer's per-step schedule on a run validated 4 times per epoch: resuming after part 3
    # (RecBole counts parts as epochs) must fast-forward 3 parts of batches, not 3 epochs
    from recbole_llmsrec.models.hllm.trainer import HLLMTrainer

    settings = dict(
        small_sasrec_config,
        validations_per_epoch=4,
        warmup_ratio=0.1,
        epochs=2,
        train_batch_size=128,
        stopping_step=100,
    )

    def learning_rates(start_epoch):
        config = Config(model="SASRec", dataset="ml-100k", config_dict=settings)
        init_seed(config["seed"], config["reproducibility"])
        train_data, valid_data, _ = data_preparation(config, create_dataset(config))
        trainer = HLLMTrainer(config, get_model("SASRec")(config, train_data._dataset))
        trainer.start_epoch = start_epoch
        rates = []
        trainer.fit(
            train_data,
            valid_data,
            saved=False,
            callback_fn=lambda epoch, score: rates.append(trainer.optimizer.param_groups[0]["lr"]),
        )
        return rates

    uninterrupted = learning_rates(0)
    assert len(uninterrupted) == 8
    assert learning_rates(3) == pytest.approx(uninterrupted[3:])
