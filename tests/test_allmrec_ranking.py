"""A-LLMRec's stage 2: prompts carry the soft tokens, LLM ranking and re-ranking, the paper's
metric."""

import allmrec_setup
import torch
from allmrec_setup import prepare, user_row
from recbole.data.interaction import Interaction

from recbole_llmsrec.data.dataset import create_dataset

# pytest fixtures: the tiny OPT (built once per module) and a run's settings
tiny_opt_path = allmrec_setup.tiny_opt_path
allmrec_config = allmrec_setup.allmrec_config


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
