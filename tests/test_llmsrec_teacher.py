"""LLM-SRec's CF teacher: a cf_checkpoint is loaded and checked, other sequential models teach,
models that cannot teach are refused."""

import llmsrec_setup
import pytest
import torch
from llmsrec_setup import TEACHER, prepare, user_batch

from recbole_llmsrec import Config, get_trainer

# pytest fixtures: the tiny LLM (built once per module) and a run's settings
tiny_llm_path = llmsrec_setup.tiny_llm_path
llmsrec_config = llmsrec_setup.llmsrec_config


def test_cf_checkpoint_is_loaded_instead_of_pretraining(llmsrec_config, tmp_path, caplog):
    from recbole_llmsrec.models.cf_teacher.stage0 import pretrain_teacher

    config = Config(model="LLMSRec", dataset="ml-100k", config_dict=llmsrec_config)
    path = pretrain_teacher(config)
    _, model, *_ = prepare(dict(llmsrec_config, cf_checkpoint=path))
    assert bool(model.cf_teacher_ready)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert torch.equal(model.cf_model.item_embedding.weight, saved["item_embedding.weight"])
    assert not model.cf_model.training and not model.cf_model.item_embedding.weight.requires_grad


def test_the_log_shows_the_loaded_teachers_settings_not_the_ignored_cf_config(
    llmsrec_config, caplog
):
    from recbole_llmsrec.models.cf_teacher.stage0 import (
        pretrain_teacher,
        show_loaded_teacher_settings,
    )

    path = pretrain_teacher(Config(model="LLMSRec", dataset="ml-100k", config_dict=llmsrec_config))
    # its data's ids
    assert torch.load(path, weights_only=True)["data"]["item_tokens"][0] == "[PAD]"
    config = Config(
        model="LLMSRec",
        dataset="ml-100k",
        config_dict=dict(
            llmsrec_config, cf_checkpoint=path, cf_config={**TEACHER, "hidden_size": 48}
        ),
    )
    with caplog.at_level("INFO"):
        show_loaded_teacher_settings(config)
    assert config["cf_config"]["hidden_size"] == TEACHER["hidden_size"] != 48
    assert "its settings (cf_config is not used)" in caplog.text


def test_cf_checkpoint_of_other_data_is_refused(llmsrec_config, small_sasrec_config):
    from recbole_llmsrec import run_recbole

    other = run_recbole("SASRec", "ml-100k", config_dict=dict(small_sasrec_config, epochs=1))
    with pytest.raises(ValueError, match=r"trained on other data.*user_inter_num_interval"):
        prepare(dict(llmsrec_config, cf_checkpoint=other["saved_model_file"]))


GRU4REC_TEACHER = {
    "embedding_size": 16,
    "hidden_size": 16,
    "num_layers": 1,
    "dropout_prob": 0.1,
    "loss_type": "CE",
    "epochs": 1,
    "train_batch_size": 256,
}


def test_a_gru4rec_teacher_is_pretrained_and_distilled(llmsrec_config):
    """``cf_model``: any RecBole sequential model with an item table and a user vector teaches."""
    from recbole.model.sequential_recommender.gru4rec import GRU4Rec

    config, model, train_data, valid_data, test_data = prepare(
        dict(llmsrec_config, cf_model="GRU4Rec", cf_config=GRU4REC_TEACHER, epochs=1)
    )
    assert isinstance(model.cf_model, GRU4Rec) and model.item_emb_proj[0].in_features == 16
    trainer = get_trainer(config["MODEL_TYPE"], "LLMSRec")(config, model)
    trainer.fit(train_data, valid_data, saved=False)
    teacher = {k: v.clone() for k, v in model.cf_model.state_dict().items()}
    assert bool(model.cf_teacher_ready) and trainer.train_loss_dict
    assert all(torch.isfinite(torch.tensor(loss)) for loss in trainer.train_loss_dict.values())
    trainer.fit(train_data, valid_data, saved=False)  # distillation leaves the teacher as trained
    assert all(torch.equal(v, teacher[k]) for k, v in model.cf_model.state_dict().items())
    assert trainer.evaluate(test_data, load_best_model=False)["hit@10"] >= 0


def test_bert4rec_teacher_user_vector_is_the_one_it_ranks_with(llmsrec_config):
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec

    from recbole_llmsrec.models.cf_teacher.stage0 import checked_teacher, user_representation

    _, model, train_data, *_ = prepare(llmsrec_config)
    config = Config(
        model="BERT4Rec",
        dataset="ml-100k",
        config_dict=dict(
            llmsrec_config,
            hidden_size=16,
            inner_size=16,
            n_layers=1,
            n_heads=1,
            train_neg_sample_args=None,
        ),
    )
    bert = checked_teacher(BERT4Rec(config, train_data._dataset))
    batch = user_batch([[5, 9, 2], [7]], model=model)
    users = user_representation(bert, batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
    # its item bias
    scores = users @ bert.item_embedding.weight[: bert.n_items].T + bert.output_bias
    torch.testing.assert_close(scores, bert.full_sort_predict(batch))


@pytest.mark.parametrize(
    "name, message",
    [
        ("Caser", "cannot be the teacher"),
        ("Pop", "not a RecBole sequential model"),
        ("HLLM", "not a RecBole sequential model"),
        ("GRU4Rek", "Did you mean GRU4Rec"),
    ],
)
def test_a_model_that_cannot_teach_is_refused_with_the_reason(llmsrec_config, name, message):
    with pytest.raises(ValueError, match=message):
        prepare(dict(llmsrec_config, cf_model=name, cf_config={"loss_type": "CE"}))


def test_the_teacher_trains_and_validates_without_the_runs_diagnostics(llmsrec_config):
    from recbole_llmsrec.models.cf_teacher.stage0 import teacher_config

    config = Config(
        model="LLMSRec",
        dataset="ml-100k",
        config_dict=dict(llmsrec_config, eval_shuffle_history=True, eval_item_groups=[10]),
    )
    teacher = teacher_config(config)
    assert not teacher["eval_shuffle_history"] and not teacher["eval_item_groups"]


def test_a_cf_checkpoint_of_a_model_that_cannot_teach_says_so_without_bad_advice(
    llmsrec_config, tmp_path
):
    from recbole_llmsrec.models.cf_teacher.stage0 import build_teacher

    path = tmp_path / "llmsrec.pth"
    torch.save(
        {
            "config": Config(model="LLMSRec", dataset="ml-100k", config_dict=llmsrec_config),
            "state_dict": {},
        },
        path,
    )
    run = Config(
        model="LLMSRec",
        dataset="ml-100k",
        config_dict=dict(llmsrec_config, cf_checkpoint=str(path)),
    )
    with pytest.raises(
        ValueError,
        match=r"holds a LLMSRec, which cannot be the teacher: "
        r"cf_model='LLMSRec' is not a RecBole sequential model",
    ) as raised:
        build_teacher(run, dataset=None)
    assert "set cf_model" not in str(raised.value)
