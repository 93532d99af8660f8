"""A-LLMRec: stages run in order, frozen parts stay frozen, prompts carry the soft tokens, LLM
ranking."""

import glob

import pytest
import torch
from recbole.data import data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_llmsrec import Config, get_trainer
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.models.allmrec.model import ALLMRec
from recbole_llmsrec.models.allmrec.stage1 import alignment_loss
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


def test_stage2_prompt_holds_10_history_and_20_candidate_soft_tokens(allmrec_config):
    _, model, *_ = prepare(allmrec_config)
    captured = {}
    model.llm.base_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(kwargs), with_kwargs=True
    )
    seq = torch.zeros(2, model.max_seq_length, dtype=torch.long)
    seq[0, :15], seq[1, :3] = torch.arange(1, 16), torch.tensor([40, 41, 42])
    batch = Interaction(
        {
            model.USER_ID: torch.tensor([1, 2]),
            model.ITEM_SEQ: seq,
            model.ITEM_SEQ_LEN: torch.tensor([15, 3]),
            model.ITEM_ID: torch.tensor([16, 43]),
        }
    )
    model.calculate_loss(batch)

    embeds = captured["inputs_embeds"]
    with torch.no_grad():  # every item's soft token, to find which item each prompt slot holds
        all_items = model.item_proj(model.item_autoencoder(model.cf_model.item_embedding.weight)[0])
        users = model.user_proj(model.cf_model(seq, batch[model.ITEM_SEQ_LEN]))
    for row, (history, target) in enumerate((([*range(6, 16)], 16), ([40, 41, 42], 43))):
        matches = (embeds[row].unsqueeze(1) - all_items.unsqueeze(0)).abs().amax(-1) < 1e-5
        _, slot_items = torch.nonzero(matches, as_tuple=True)
        assert len(slot_items) == len(history) + 20
        assert slot_items[: len(history)].tolist() == history  # the last 10, in order
        candidates = slot_items[len(history) :].tolist()
        assert target in candidates and len(set(candidates)) == 20
        seen = set(model.history_matrix[row + 1].indices.tolist())
        assert not (set(candidates) - {target}) & seen  # negatives are unseen items
        torch.testing.assert_close(embeds[row, 0], users[row])  # user token first, before BOS


def reference_log_likelihood(model, row, candidates, item):
    """``"title"</s>`` of ``item`` teacher-forced alone after the prompt: one plain forward, no
    cache."""
    history = model._history(row)[0]
    answer = model._title_tokens(item)
    ids = torch.tensor([model._prompt_ids(history, candidates) + answer])
    user = model.cf_model(row[model.ITEM_SEQ], row[model.ITEM_SEQ_LEN])
    hidden = model.llm.base_model(
        inputs_embeds=model._embed(ids, user, history + candidates)
    ).last_hidden_state
    log_probs = (
        model.llm.get_output_embeddings()(hidden[0, -len(answer) - 1 : -1]).float().log_softmax(-1)
    )
    return log_probs.gather(-1, torch.tensor(answer).unsqueeze(-1)).sum()


def test_batched_ranking_equals_each_answer_scored_alone(allmrec_config):
    """Several users per forward, answers merged into one token trie per prompt: the scores equal
    each candidate's answer teacher-forced alone after its user's prompt."""
    _, model, *_ = prepare(dict(allmrec_config, rank_batch_size=3))
    model.eval()
    histories = [[5, 9, 2, 7], [7, 2, 9, 5], [30, 31], [5, 9, 2, 7], [1]]
    rows = [user_row(model, h, user=u) for u, h in enumerate(histories, 1)]
    batch = Interaction({k: torch.cat([r[k] for r in rows]) for k in rows[0].interaction})
    candidate_lists = [list(range(100 + 7 * u, 120 + 7 * u)) for u in (0, 1, 2, 0, 4)]
    model.titles[101] = model.titles[100]  # identical titles tie
    scores = model.llm_scores(batch, candidate_lists)
    with torch.no_grad():
        for row, candidates, got in zip(rows, candidate_lists, scores):
            ordered = model.candidate_order(candidates)  # the order the prompt lists them in
            expected = torch.stack(
                [reference_log_likelihood(model, row, ordered, c) for c in candidates]
            )
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert scores[0][0] == scores[0][1] and (scores[0] < 0).all()
    assert not torch.allclose(scores[0], scores[1], atol=1e-5)  # the history changes the scores
    torch.testing.assert_close(scores[0], scores[3])  # the same prompt in two forwards


def test_predict_and_full_sort_rerank_the_stage1_top_k(allmrec_config):
    _, model, *_ = prepare(dict(allmrec_config, rerank_k=5))
    model.eval()
    row = user_row(model, [5, 9, 2, 7])
    with torch.no_grad():
        stage1 = model.stage1_scores(row)[0]
        full = model.full_sort_predict(row)[0]
        retrieval = stage1.clone()
        retrieval[0] = -torch.inf  # padding only: the protocol, not the model, masks history
        top = retrieval.topk(5).indices
        others = torch.ones_like(full, dtype=torch.bool)
        others[top] = False
        assert full[top].min() > full[others].max()
        torch.testing.assert_close(full[others], stage1[others])
        row2 = Interaction(
            {
                k: v.repeat(5, 1).squeeze(-1) if v.dim() == 1 else v.repeat(5, 1)
                for k, v in row.interaction.items()
            }
        )
        row2.update(Interaction({model.ITEM_ID: top}))
        sampled = model.predict(row2)
    assert torch.equal(sampled.argsort(), full[top].argsort())


def test_full_sort_excludes_what_the_protocol_masks_and_a_repeated_target_can_rank_first(
    allmrec_config, monkeypatch
):
    from recbole_llmsrec.evaluation.loaders import HistoryMaskedFullSortEvalDataLoader

    config, model, trainer, *_ = prepare(dict(allmrec_config, rerank_k=3, eval_mask_history=True))
    model.eval()
    history = [5, 9, 2, 7]
    row = user_row(model, history)
    favourite = lambda scores: scores.index_fill(1, torch.tensor([9]), 100.0)  # noqa: E731
    monkeypatch.setattr(
        model, "stage1_scores", lambda i: favourite(torch.randn(len(i), model.n_items))
    )
    monkeypatch.setattr(
        model,
        "llm_scores",
        lambda i, lists: [  # the LLM prefers item 9 too
            torch.tensor([float(item == 9) for item in items]) for items in lists
        ],
    )
    with (
        torch.no_grad()
    ):  # masking off: item 9, in the model's input window, is retrieved and can win
        assert int(model.full_sort_predict(row)[0].argmax()) == 9
        excluded = torch.zeros(1, model.n_items, dtype=torch.bool)
        excluded[0, [5, 2, 7]] = (
            True  # the protocol's mask for a target 9 that repeats a listed item
        )
        scores = model.full_sort_predict_excluding(row, excluded)[0]
        reranked = scores > scores[~excluded[0]].sort().values[-4]
        assert not reranked[[5, 2, 7]].any() and reranked.sum() == 3 and reranked[9]
    # the trainer hands the model exactly what the plugin's masked loader scores -inf
    from recbole_llmsrec.evaluation.loaders import data_preparation as protocol_data_preparation

    _, _, test_data = protocol_data_preparation(config, create_dataset(config))
    assert isinstance(test_data, HistoryMaskedFullSortEvalDataLoader)
    seen = {}
    monkeypatch.setattr(
        model,
        "full_sort_predict_excluding",
        lambda i, e: seen.setdefault("excluded", e) * 0.0 + torch.randn(e.shape),
    )
    trainer.tot_item_num = model.n_items
    batch = next(iter(test_data))
    _, scores, _, _ = trainer._full_sort_batch_eval(batch)
    mask = torch.zeros_like(seen["excluded"])
    mask[batch[1]] = True
    assert torch.equal(seen["excluded"], mask) and torch.isinf(scores[mask]).all()


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


def test_paper_metric_matches_titles_exactly_not_by_substring():
    from recbole_llmsrec.models.allmrec.paper_metric import extract_answer, matched_candidates

    titles = {1: "Up", 2: "Up in the Air", 3: "Heat", 4: "heat "}
    answer = extract_answer('The recommendation is "Up in the Air". Enjoy')
    assert answer == "up in the air"
    assert matched_candidates(answer, [1, 2, 3], titles) == [2]  # substring matching would add 1
    assert matched_candidates(extract_answer("HEAT."), [1, 2, 3, 4], titles) == [3, 4]
    assert matched_candidates(extract_answer('"Casino"'), [1, 2, 3], titles) == []


def test_paper_metric_script_runs_on_a_trained_checkpoint(allmrec_config, capsys):
    from recbole_llmsrec import run_recbole
    from recbole_llmsrec.models.allmrec.paper_metric import main

    result = run_recbole("ALLMRec", "ml-100k", config_dict=dict(allmrec_config, epochs=1))
    hit = main([result["saved_model_file"], "--max-users", "5", "--max-new-tokens", "8"])
    assert 0.0 <= hit <= 1.0
    assert "users: 5" in capsys.readouterr().out


def test_gradient_checkpointing_reaches_the_opt_decoder(allmrec_config):
    _, model, *_ = prepare(dict(allmrec_config, llm_gradient_checkpointing=True))
    assert model.llm_checkpointing
    model.train()
    assert model.llm.training  # HF checkpoints only modules in train mode
    model.eval()
    assert not model.llm.training


def test_predict_keeps_users_with_identical_sequences_apart(allmrec_config):
    _, model, *_ = prepare(allmrec_config)
    model.eval()
    history = [5, 9, 2, 7]
    candidates = {1: [100, 101, 102], 2: [200, 201, 202, 203]}  # two users, the same sequence
    rows = [(user, item) for user, items in candidates.items() for item in items]
    rows = rows[::2] + rows[1::2]  # the two users' rows interleaved

    def batch(selected):
        seq = torch.zeros(len(selected), model.max_seq_length, dtype=torch.long)
        seq[:, : len(history)] = torch.tensor(history)
        return Interaction(
            {
                model.USER_ID: torch.tensor([u for u, _ in selected]),
                model.ITEM_SEQ: seq,
                model.ITEM_SEQ_LEN: torch.full((len(selected),), len(history)),
                model.ITEM_ID: torch.tensor([i for _, i in selected]),
            }
        )

    with torch.no_grad():
        together = model.predict(batch(rows))
        alone = torch.empty_like(together)
        for user in candidates:
            mine = [k for k, (u, _) in enumerate(rows) if u == user]
            alone[mine] = model.predict(batch([rows[k] for k in mine]))
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-6)


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


def test_a_prompt_longer_than_the_llms_context_loses_its_oldest_history_items(allmrec_config):
    _, model, *_ = prepare(allmrec_config)
    model.eval()
    history, candidates = [5, 9, 2, 7, 11], [3, 4, 6]
    full = model._prompt_ids(history, candidates)
    answer = max(len(model._title_tokens(item)) for item in candidates)
    model.max_prompt_tokens = len(full) + answer - 1  # one token too many
    prompt, kept = model._fitted_prompt(history, candidates, answer)
    # newest kept
    assert kept == history[len(history) - len(kept) :] and 0 < len(kept) < len(history)
    assert len(prompt) + answer <= model.max_prompt_tokens and model.prompts_shortened == 1
    assert prompt == model._prompt_ids(kept, candidates)  # the instruction and candidates stay
    with torch.no_grad():  # ranking runs on the cut prompt
        scores = model.prompt_log_likelihoods(
            model.teacher_users(user_row(model, history)), [history], [candidates]
        )
    assert scores[0].shape == (3,) and torch.isfinite(scores[0]).all()
