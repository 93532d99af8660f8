"""A-LLMRec: stages run in order, frozen parts stay frozen, stage checkpoints resume and are
checked, any sequential teacher."""

import allmrec_setup
import pytest
import torch
from allmrec_setup import prepare, stage1_path

from recbole_llmsrec.models.allmrec.model import ALLMRec
from recbole_llmsrec.models.allmrec.stage1 import alignment_loss

# pytest fixtures: the tiny OPT (built once per module) and a run's settings
tiny_opt_path = allmrec_setup.tiny_opt_path
allmrec_config = allmrec_setup.allmrec_config


def test_stages_run_in_order_and_leave_sasrec_and_the_llm_bit_equal(allmrec_config):
    _, model, trainer, train_data, valid_data, _ = prepare(allmrec_config)
    llm_before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    projections_before = [p.detach().clone() for p in model.user_proj.parameters()]

    trainer.run_pending_stages(train_data, show_progress=False)  # stage 0 then stage 1
    assert model.stage_done.all() and model.text_encoder is None
    teacher = {k: v.clone() for k, v in model.cf_model.state_dict().items()}
    item_encoder = {k: v.clone() for k, v in model.item_autoencoder.state_dict().items()}
    trainer.fit(train_data, valid_data, saved=False)  # stage 2

    for key, value in model.cf_model.state_dict().items():
        assert torch.equal(value, teacher[key]), key
    for key, value in model.item_autoencoder.state_dict().items():
        assert torch.equal(value, item_encoder[key]), key  # frozen after stage 1
    for key, value in model.llm.state_dict().items():
        assert torch.equal(value, llm_before[key]), key
    assert any(
        not torch.equal(a, b) for a, b in zip(model.user_proj.parameters(), projections_before)
    )


def test_stage1_loss_matches_a_hand_computation():
    torch.manual_seed(0)
    user = torch.randn(3, 4)
    item_emb, item_recon = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    item_latent, text_latent = torch.rand(2, 3, 2), torch.rand(2, 3, 2)
    text_emb, text_recon = torch.randn(2, 3, 5), torch.randn(2, 3, 5)

    def mse(a, b):
        return ((a - b) ** 2).sum() / a.numel()

    def bce(logit, label):
        return -(
            label * torch.log(torch.sigmoid(logit))
            + (1 - label) * torch.log(1 - torch.sigmoid(logit))
        ).mean()

    rec = bce((user * item_recon[0]).sum(-1) / 4, 1.0) + bce(
        (user * item_recon[1]).sum(-1) / 4, 0.0
    )
    match = mse(item_latent[0], text_latent[0]) + mse(item_latent[1], text_latent[1])
    item = mse(item_recon[0], item_emb[0]) + mse(item_recon[1], item_emb[1])
    text = mse(text_recon[0], text_emb[0]) + mse(text_recon[1], text_emb[1])
    expected = rec + match + 0.5 * item + 0.2 * text
    got = alignment_loss(user, item_emb, item_latent, item_recon, text_emb, text_latent, text_recon)
    torch.testing.assert_close(got, expected)


def test_stage1_trains_the_text_encoder_and_lowers_the_loss(allmrec_config):
    _, model, _, train_data, *_ = prepare(allmrec_config)
    model.stage_done[0] = True
    model.prepare_stage1()
    before = model.text_encoder.embeddings.word_embeddings.weight.detach().clone()
    optimizer = torch.optim.Adam(model.stage1_parameters(), lr=1e-3)
    batch = next(iter(train_data))
    losses = []
    for _ in range(12):
        loss = model.stage1_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(model.text_encoder.embeddings.word_embeddings.weight, before)


def test_resume_from_finished_stage1_skips_it(allmrec_config, monkeypatch):
    _, model, trainer, train_data, *_ = prepare(allmrec_config)
    trainer.run_pending_stages(train_data, show_progress=False)
    path = stage1_path(allmrec_config)

    _, fresh, fresh_trainer, train_data, *_ = prepare(dict(allmrec_config, stage1_checkpoint=path))
    monkeypatch.setattr(ALLMRec, "prepare_stage1", lambda self: pytest.fail("stage 1 ran again"))
    monkeypatch.setattr(
        "recbole_llmsrec.models.cf_teacher.trainer.pretrain_teacher",
        lambda *a, **k: pytest.fail("stage 0 ran again"),
    )
    fresh_trainer.run_pending_stages(train_data, show_progress=False)
    assert fresh.stage_done.all()
    for key, value in model.item_autoencoder.state_dict().items():
        assert torch.equal(fresh.item_autoencoder.state_dict()[key], value)
    assert torch.equal(fresh.cf_model.item_embedding.weight, model.cf_model.item_embedding.weight)


def test_stage1_checkpoint_of_other_data_is_refused(allmrec_config):
    _, model, trainer, train_data, *_ = prepare(allmrec_config)
    trainer.run_pending_stages(train_data, show_progress=False)
    path = stage1_path(allmrec_config)
    _, _, other_trainer, other_train, *_ = prepare(
        dict(allmrec_config, user_inter_num_interval="[0,40]", stage1_checkpoint=path)
    )
    with pytest.raises(
        ValueError, match=r"stage1_checkpoint=.*other data.*user_inter_num_interval"
    ):
        other_trainer.run_pending_stages(other_train, show_progress=False)


def test_sasrec_checkpoint_of_another_dataset_is_refused(
    allmrec_config, small_sasrec_config, tmp_path
):
    from recbole_llmsrec import run_recbole

    folder = tmp_path / "data" / "other"
    folder.mkdir(parents=True)
    rows = [f"u{u}\ti{(u * 7 + k) % 40}\t5\t{k}" for u in range(30) for k in range(8)]
    (folder / "other.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "\n".join(rows) + "\n"
    )
    sasrec = dict(
        small_sasrec_config,
        epochs=1,
        data_path=str(tmp_path / "data"),
        user_inter_num_interval=None,
        load_col={"inter": ["user_id", "item_id", "rating", "timestamp"]},
    )
    other = run_recbole("SASRec", "other", config_dict=sasrec)
    with pytest.raises(
        ValueError, match=r"cf_checkpoint=.*other data \(dataset: checkpoint 'other'"
    ):
        prepare(dict(allmrec_config, cf_checkpoint=other["saved_model_file"]))


def test_gradient_checkpointing_reaches_the_opt_decoder(allmrec_config):
    _, model, *_ = prepare(dict(allmrec_config, llm_gradient_checkpointing=True))
    assert model.llm_checkpointing
    model.train()
    assert model.llm.training  # HF checkpoints only modules in train mode
    model.eval()
    assert not model.llm.training


def test_loading_a_stage2_checkpoint_freezes_the_item_encoder(allmrec_config):
    # as RecBole's --checkpoint resume: trainer (optimizer over model.parameters()) first, then
    # weights
    _, model, trainer, train_data, *_ = prepare(allmrec_config)
    assert all(p.requires_grad for p in model.item_autoencoder.parameters())  # stage 1 trains it
    state = model.state_dict()
    state["stage_done"] = torch.tensor([True, True])  # stages 0-1 finished
    model.load_state_dict(state)
    assert not any(p.requires_grad for p in model.item_autoencoder.parameters())

    item_encoder = {k: v.clone() for k, v in model.item_autoencoder.state_dict().items()}
    user_proj = model.user_proj[0].weight.detach().clone()
    model.train()
    loss = model.calculate_loss(next(iter(train_data)))
    trainer.optimizer.zero_grad()
    loss.backward()
    trainer.optimizer.step()
    for key, value in model.item_autoencoder.state_dict().items():
        assert torch.equal(value, item_encoder[key]), key
    assert not torch.equal(model.user_proj[0].weight, user_proj)  # the step did happen


def test_frozen_opt_has_no_dropout_in_the_train_mode_checkpointing_needs(allmrec_config):
    _, model, *_ = prepare(dict(allmrec_config, llm_gradient_checkpointing=True))
    assert model.llm.config.dropout == 0.0 and model.llm.config.attention_dropout == 0.0
    model.train()
    assert model.llm.training
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    with torch.no_grad():
        first, second = model.llm(input_ids=ids).logits, model.llm(input_ids=ids).logits
    assert torch.equal(first, second)


def test_a_gru4rec_teacher_runs_all_three_stages(allmrec_config):
    """A-LLMRec is model-agnostic: any RecBole sequential model (here GRU4Rec) can be stage 0."""
    from recbole.model.sequential_recommender.gru4rec import GRU4Rec

    teacher = {
        "embedding_size": 16,
        "hidden_size": 16,
        "num_layers": 1,
        "dropout_prob": 0.1,
        "loss_type": "CE",
        "epochs": 1,
        "train_batch_size": 512,
    }
    config, model, trainer, train_data, valid_data, test_data = prepare(
        dict(allmrec_config, cf_model="GRU4Rec", cf_config=teacher)
    )
    assert isinstance(model.cf_model, GRU4Rec) and model.user_proj[0].in_features == 16
    trainer.fit(train_data, valid_data, saved=False)
    assert model.stage_done.all() and all(
        torch.isfinite(torch.tensor(v)) for v in trainer.train_loss_dict.values()
    )
    result = trainer.evaluate(test_data, load_best_model=False)
    assert 0 <= result["hit@10"] <= 1
