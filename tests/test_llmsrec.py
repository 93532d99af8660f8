"""LLM-SRec: frozen parts stay frozen, prompts carry the SASRec soft tokens, losses match the
spec."""

import llmsrec_setup
import pytest
import torch
from llmsrec_setup import prepare, user_batch
from recbole.data.interaction import Interaction

from recbole_llmsrec import get_trainer
from recbole_llmsrec.models.llmsrec.model import HISTORY_TOKEN, distillation_loss, uniformity

# pytest fixtures: the tiny LLM (built once per module) and a run's settings
tiny_llm_path = llmsrec_setup.tiny_llm_path
llmsrec_config = llmsrec_setup.llmsrec_config


def test_training_changes_only_the_mlps_and_the_two_token_vectors(llmsrec_config):
    config, model, train_data, valid_data, _ = prepare(llmsrec_config)
    frozen_llm = {k: v.clone() for k, v in model.llm.state_dict().items()}
    trained = {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }
    assert set(n.split(".")[0] for n in trained) == {
        "item_emb_proj",
        "pred_user",
        "pred_item",
        "pred_user_cf",
        "user_out_embedding",
        "item_out_embedding",
    }

    trainer = get_trainer(config["MODEL_TYPE"], "LLMSRec")(config, model)
    trainer.fit(train_data, valid_data, saved=False)

    assert bool(model.cf_teacher_ready)  # no cf_checkpoint: the teacher was pre-trained first
    teacher_after_pretraining = {k: v.clone() for k, v in model.cf_model.state_dict().items()}
    trainer.fit(train_data, valid_data, saved=False)  # a second fit: the teacher must not move
    for key, value in model.cf_model.state_dict().items():
        assert torch.equal(value, teacher_after_pretraining[key]), key
    for key, value in model.llm.state_dict().items():
        assert torch.equal(value, frozen_llm[key]), key
    for name, param in model.named_parameters():
        if name in trained:
            assert not torch.equal(param, trained[name]), f"{name} did not train"


def test_user_prompt_holds_projected_sasrec_embeddings_at_history_slots(llmsrec_config):
    _, model, *_ = prepare(llmsrec_config)
    model.eval()
    captured = {}
    model.llm.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(kwargs), with_kwargs=True
    )
    histories = [[5, 9, 2], list(range(1, 16))]  # 3 items, and 15 items of which 10 are shown
    batch = user_batch(histories, model=model)

    prompts, shown = model._user_prompts(batch)
    assert [p.count(HISTORY_TOKEN) for p in prompts] == [3, 10]
    assert "Item No.10" in prompts[1] and "Item No.11" not in prompts[1]
    assert 'Time: 1997-11-20, "' in prompts[0] and model.titles[5] in prompts[0]
    assert shown == [5, 9, 2] + list(range(6, 16))

    with torch.no_grad():
        model.user_representation(batch, use_prefix_cache=False)
    ids = model.tokenizer(prompts, padding=True, return_tensors="pt")["input_ids"]
    slots = ids == model.history_token_id
    expected = model.item_emb_proj(model.cf_model.item_embedding(torch.tensor(shown)))
    torch.testing.assert_close(captured["inputs_embeds"][slots], expected)
    out_slots = ids == model.user_out_id
    assert torch.equal(
        captured["inputs_embeds"][out_slots], model.user_out_embedding.detach().expand(2, -1)
    )


def test_user_vector_changes_when_history_order_changes(llmsrec_config):
    _, model, *_ = prepare(llmsrec_config)
    model.eval()
    with torch.no_grad():
        users = model.user_representation(user_batch([[5, 9, 2, 7], [7, 2, 9, 5]], model=model))
    assert not torch.allclose(users[0], users[1], atol=1e-4)


def test_prefix_kv_cache_gives_the_plain_outputs(llmsrec_config):
    _, model, *_ = prepare(llmsrec_config)
    model.eval()
    batch = user_batch([[5, 9, 2], list(range(1, 16))], model=model)
    items = torch.tensor([1, 2, 3, 50])
    fed_lengths = []
    model.llm.register_forward_pre_hook(
        lambda module, args, kwargs: (
            fed_lengths.append(kwargs["inputs_embeds"].shape[1])
            if kwargs.get("inputs_embeds") is not None
            else None
        ),
        with_kwargs=True,
    )
    with torch.no_grad():
        for kind, run in (
            ("user", lambda c: model.user_representation(batch, c)),
            ("item", lambda c: model.item_representation(items, c)),
        ):
            prefix_length = len(model._prefix_ids(kind))
            assert prefix_length > 5
            fed_lengths.clear()
            cached, plain = run(True), run(False)
            assert fed_lengths[0] == fed_lengths[1] - prefix_length  # the prefix was not re-run
            torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-5)


def test_distillation_loss_matches_a_hand_computation():
    user_llm = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    user_cf = torch.tensor([[0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    u = user_llm / user_llm.norm(dim=1, keepdim=True)  # [.6,.8], [1,0], [0,1]
    t = user_cf / user_cf.norm(dim=1, keepdim=True)
    mse = ((u - t) ** 2).sum() / 6

    def unif(x):
        pairs = [(0, 1), (0, 2), (1, 2)]
        return sum(torch.exp(-2 * ((x[i] - x[j]) ** 2).sum()) for i, j in pairs) / 3

    expected = mse + 0.5 * (unif(u) + unif(t))
    torch.testing.assert_close(distillation_loss(user_llm, user_cf, 0.5), expected)
    assert uniformity(torch.ones(1, 2)) == 0  # a batch of one user has no pairs


def test_distillation_loss_decreases_in_training(llmsrec_config):
    config, model, train_data, *_ = prepare(llmsrec_config)
    model.cf_teacher_ready.fill_(True)  # a random teacher is a fine target for this check
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = next(iter(train_data))
    losses = []
    for _ in range(15):
        rec, distill = model.calculate_loss(batch)
        optimizer.zero_grad()
        (rec + distill).backward()
        optimizer.step()
        losses.append(distill.item())
    # every step lowers it (how fast depends on the random teacher's initialisation)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < 0.97 * losses[0]


def test_negatives_avoid_the_whole_training_history_and_are_seeded(llmsrec_config):
    _, model, train_data, *_ = prepare(dict(llmsrec_config, MAX_ITEM_LIST_LENGTH=5))
    batch = next(iter(train_data))
    users = batch[model.USER_ID]
    negatives = model.sample_negatives(users)
    assert negatives.shape == (len(users), 3)
    history = model.history_matrix
    for user, target, row in zip(users.tolist(), batch[model.ITEM_ID].tolist(), negatives.tolist()):
        seen = set(history[user].indices.tolist())
        assert target in seen and len(seen) > 6  # more than the 5 items the sequence shows
        assert not seen & set(row) and len(set(row)) == 3
    _, again, *_ = prepare(dict(llmsrec_config, MAX_ITEM_LIST_LENGTH=5))
    assert torch.equal(again.sample_negatives(users), negatives)


def test_item_matrix_once_per_evaluation_and_predict_agrees_with_full_sort(llmsrec_config):
    config, model, train_data, valid_data, test_data = prepare(llmsrec_config)
    model.cf_teacher_ready.fill_(True)
    trainer = get_trainer(config["MODEL_TYPE"], "LLMSRec")(config, model)
    trainer.evaluate(valid_data, load_best_model=False)
    assert model.item_matrix_computations == 1
    trainer.evaluate(test_data, load_best_model=False)
    assert model.item_matrix_computations == 1  # no training in between: the matrix is reused
    model.train()
    model.eval()
    batch = user_batch([[5, 9, 2], [1, 4]], model=model)
    with torch.no_grad():
        full = model.full_sort_predict(batch)
        batch.update(Interaction({model.ITEM_ID: torch.tensor([7, 300])}))
        sampled = model.predict(batch)
    assert model.item_matrix_computations == 2
    torch.testing.assert_close(sampled, full[[0, 1], [7, 300]])


def test_checkpoint_leaves_the_llm_out_and_reloads(llmsrec_config):
    _, model, *_ = prepare(llmsrec_config)
    state = model.state_dict()
    assert not any(key.startswith("llm.") for key in state)
    assert "cf_model.item_embedding.weight" in state and "user_out_embedding" in state
    _, fresh, *_ = prepare(dict(llmsrec_config, seed=7))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.user_out_embedding, model.user_out_embedding)
    with pytest.raises(RuntimeError, match="missing keys"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "user_out_embedding"})


def test_gradient_checkpointing_runs_the_frozen_llm_checkpointed_in_training(llmsrec_config):
    _, model, train_data, *_ = prepare(dict(llmsrec_config, llm_gradient_checkpointing=True))
    model.train()
    assert model.llm.training  # HF checkpoints only modules in train mode
    assert not model._can_use_prefix_cache()
    rec, distill = model.calculate_loss(next(iter(train_data)))
    (rec + distill).backward()
    assert model.item_emb_proj[0].weight.grad.abs().sum() > 0
    assert model.user_out_embedding.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.llm.parameters())
    model.eval()
    assert not model.llm.training and not model.cf_model.training


def test_frozen_llm_has_no_dropout_in_the_train_mode_checkpointing_needs(
    llmsrec_config, tiny_llm_path, tmp_path
):
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = str(tmp_path / "llama-with-attention-dropout")
    llm = LlamaForCausalLM.from_pretrained(tiny_llm_path)
    llm.config.attention_dropout = 0.5
    llm.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_llm_path).save_pretrained(path)
    _, model, *_ = prepare(dict(llmsrec_config, llm_path=path, llm_gradient_checkpointing=True))
    assert model.llm.config.attention_dropout == 0.0
    model.train()
    assert model.llm.training  # HF checkpoints only modules in train mode
    batch = user_batch([[5, 9, 2, 7], [1, 4]], model=model)
    first = model.user_representation(batch, use_prefix_cache=False).detach()
    second = model.user_representation(batch, use_prefix_cache=False).detach()
    assert torch.equal(first, second)


def test_prompt_dates_are_the_raw_dates_of_timestamps_just_before_midnight(llmsrec_config):
    import os
    import re
    import time

    import numpy as np
    import pandas as pd

    config, model, train_data, valid_data, test_data = prepare(
        dict(llmsrec_config, history_max_items=30)
    )
    raw = pd.read_csv(os.path.join(config["data_path"], "ml-100k.inter"), sep="\t")
    users, times = raw["user_id:token"].astype(str).to_numpy(), raw["timestamp:float"].to_numpy()
    raw_times = {user: np.sort(times[users == user]).astype(np.int64) for user in np.unique(users)}

    def date(t):
        return time.strftime("%Y-%m-%d", time.gmtime(int(t)))

    # ml-100k's ~8.8e8 s timestamps in float32 (spacing 64 s) round across midnight for these
    midnight = {user for user, t in zip(users, times) if date(t) != date(np.float32(t))}

    split = test_data._dataset[:]  # the rows with their lists, as a batch holds them
    time_field = model.time_list_field[: -len(config["LIST_SUFFIX"])]
    tokens = test_data._dataset.id2token(model.USER_ID, split[model.USER_ID].numpy())
    rows = [row for row, token in enumerate(tokens) if token in midnight]
    assert rows  # the ml-100k slice holds such users
    for row in rows:
        length = int(split[model.ITEM_SEQ_LEN][row])
        history = raw_times[tokens[row]][-length - 1 : -1]
        assert split[model.time_list_field][row, :length].tolist() == history.tolist()  # exact
        assert split[time_field][row].item() == raw_times[tokens[row]][-1]
        prompts, _ = model._user_prompts(split[[row]])
        assert re.findall(r"Time: ([0-9-]+),", prompts[0]) == [date(t) for t in history]
    assert any(
        date(t) != date(np.float32(t))
        for row in rows
        for t in raw_times[tokens[row]][-int(split[model.ITEM_SEQ_LEN][row]) - 1 : -1]
    )


def test_length_bucketed_batches_leave_item_and_user_representations_unchanged(llmsrec_config):
    _, model, train_data, *_ = prepare(dict(llmsrec_config, llm_eval_batch_size=7))
    model.eval()
    items = torch.arange(1, 60)
    assert not torch.equal(torch.argsort(model.title_tokens[items], stable=True), items - 1)
    users = train_data.collate_fn(list(range(40)))
    with torch.no_grad():
        in_id_order = torch.cat([model.item_representation(chunk) for chunk in items.split(7)])
        torch.testing.assert_close(model.compute_item_matrix(items), in_id_order, atol=1e-5, rtol=0)
        one_batch = model.user_representation(users)
        torch.testing.assert_close(model._eval_users(users), one_batch, atol=1e-5, rtol=0)


def test_a_prompt_longer_than_the_llms_context_loses_its_oldest_history_items(
    llmsrec_config, caplog
):
    import re

    _, model, train_data, *_ = prepare(llmsrec_config)
    batch = next(iter(train_data))
    full, _ = model._user_prompts(batch)
    assert model.prompts_shortened == 0
    model.max_prompt_tokens = 90
    with caplog.at_level("WARNING"):
        prompts, history = model._user_prompts(batch)
    assert "longer than the LLM's context of 90 tokens" in caplog.text
    assert max(len(model.tokenizer(p)["input_ids"]) for p in prompts) <= 90
    assert 0 < model.prompts_shortened <= len(prompts)
    titles = lambda prompt: re.findall(r'"([^"]*)"\[HistoryEmb\]', prompt)  # noqa: E731
    for whole, cut in zip(full, prompts):
        assert cut.endswith("[UserOut]") and 1 <= len(titles(cut)) <= len(titles(whole))
        # the newest kept
        assert titles(cut) == titles(whole)[len(titles(whole)) - len(titles(cut)) :]
    assert len(history) == sum(len(titles(p)) for p in prompts)
