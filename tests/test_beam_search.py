"""The item-code trie and the beam search constrained to it (models/generative), against brute
force: sets of code prefixes for the trie, and plain full forwards of prompt + code (no cache, no
padding) for the scores."""

import itertools

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from recbole_llmsrec.models.generative.beam_search import (
    code_log_likelihoods,
    constrained_beam_search,
    unconstrained_beam_search,
)
from recbole_llmsrec.models.generative.trie import IndexTrie

SIZES = (4, 5, 6)  # 120 possible codes, 60 of them items: a sparse trie
N_VALID = 60
VOCAB = 100  # the last sum(SIZES) ids are the code tokens
PROMPT_VOCAB = VOCAB - sum(SIZES)
WIDEST_INNER_LEVEL = SIZES[0] * SIZES[1]  # with this many beams the search is exhaustive


@pytest.fixture(scope="module")
def llm():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def codes():
    generator = torch.Generator().manual_seed(1)
    every = torch.tensor(list(itertools.product(*[range(size) for size in SIZES])))
    chosen = every[torch.randperm(len(every), generator=generator)[:N_VALID]]
    return torch.cat([torch.full((1, len(SIZES)), -1), chosen])  # row 0: the padding item


@pytest.fixture(scope="module")
def trie(codes):
    return IndexTrie(codes, SIZES)


@pytest.fixture(scope="module")
def level_tokens():
    starts = [PROMPT_VOCAB + sum(SIZES[:level]) for level in range(len(SIZES))]
    return [torch.arange(start, start + size) for start, size in zip(starts, SIZES)]


def prompts(lengths, seed=2):
    """Left-padded random prompts of ``lengths`` -> (input_ids, attention_mask, unpadded list)."""
    generator = torch.Generator().manual_seed(seed)
    plain = [torch.randint(1, PROMPT_VOCAB, (n,), generator=generator) for n in lengths]
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, tokens in enumerate(plain):
        ids[row, width - len(tokens) :] = tokens
        mask[row, width - len(tokens) :] = 1
    return ids, mask, plain


def reference_log_likelihoods(llm, prompt, item_codes, level_tokens):
    """Independent: one full forward of ``prompt + code`` per code (no cache, no padding); the sum
    of the code tokens' full-vocabulary log-probs."""
    scores = []
    for code in item_codes.tolist():
        tokens = [int(level_tokens[level][value]) for level, value in enumerate(code)]
        sequence = torch.tensor([prompt.tolist() + tokens])
        with torch.no_grad():
            log_probs = llm(input_ids=sequence).logits[0].float().log_softmax(-1)
        start = len(prompt) - 1  # the logits at position p predict token p + 1
        scores.append(sum(float(log_probs[start + i, t]) for i, t in enumerate(tokens)))
    return torch.tensor(scores)


def children_by_prefix(item_codes, level):
    """Brute force: {prefix of length level: {next values}} over ``item_codes`` (a list)."""
    found = {}
    for code in item_codes:
        found.setdefault(tuple(code[:level]), set()).add(code[level])
    return found


def walk(trie, code):
    """The node ids along ``code`` (the last one: the item id)."""
    node, path = torch.zeros(1, dtype=torch.long), []
    for level, value in enumerate(code):
        node = trie.step(level, node, torch.tensor([value]))
        path.append(int(node))
    return path


def test_walking_every_code_reaches_its_item(trie, codes):
    for item in range(1, len(codes)):
        assert walk(trie, codes[item].tolist())[-1] == item
    moved = trie.to("cpu")
    assert all(walk(moved, codes[item].tolist())[-1] == item for item in range(1, len(codes)))
    absent = [c for c in itertools.product(*map(range, SIZES)) if list(c) not in codes.tolist()]
    assert walk(trie, absent[0])[-1] == -1


def test_allowed_values_are_exactly_the_codes_below_each_node(trie, codes):
    item_codes = codes[1:].tolist()
    for level in range(len(SIZES)):
        expected = children_by_prefix(item_codes, level)
        for prefix, values in expected.items():
            node = walk(trie, prefix)[-1] if prefix else 0
            allowed = trie.allowed(level, torch.tensor([node]))[0]
            assert set(allowed.nonzero().view(-1).tolist()) == values
        assert trie.num_nodes[level] == len(expected)
    assert not trie.allowed(1, torch.tensor([-1])).any()  # a dead beam allows nothing


def test_a_node_disappears_only_when_all_its_items_are_excluded(trie, codes):
    generator = torch.Generator().manual_seed(3)
    excluded = torch.rand(4, len(codes), generator=generator) < torch.tensor(
        [[0.2], [0.6], [0.9], [0]]
    )
    node_items = [i for i in range(1, len(codes)) if codes[i, :2].tolist() == codes[1, :2].tolist()]
    excluded[3, node_items] = True  # user 3: one level-2 node fully excluded
    under = {}  # level-2 prefix -> its items
    for i in range(1, len(codes)):
        under.setdefault(tuple(codes[i, :2].tolist()), []).append(i)
    sibling = next(v for k, v in under.items() if len(v) > 1 and k != tuple(codes[1, :2].tolist()))
    excluded[3, sibling] = True
    excluded[3, sibling[0]] = False  # another node keeps one item: it stays
    excluded[3, 0] = True  # the padding item is never an item, excluded or not
    removed = trie.exclusions(excluded)
    for level in range(len(SIZES)):
        for user in range(4):
            kept = [codes[i].tolist() for i in range(1, len(codes)) if not excluded[user, i]]
            expected = children_by_prefix(kept, level)
            for prefix in children_by_prefix(codes[1:].tolist(), level):
                node = walk(trie, prefix)[-1] if prefix else 0
                nodes = torch.full((4,), -1)
                nodes[user] = node  # one row per user: the others' rows are dead
                allowed = trie.allowed(level, nodes, removed)[user]
                assert set(allowed.nonzero().view(-1).tolist()) == expected.get(prefix, set())
    row = trie.allowed(1, torch.tensor([0, 0, 0, walk(trie, codes[1, :1].tolist())[0]]), removed)
    assert not row[3, codes[1, 1]]
    level_one = walk(trie, codes[sibling[0], :1].tolist())[0]
    row = trie.allowed(1, torch.tensor([0, 0, 0, level_one]), removed)
    assert row[3, codes[sibling[0], 1]]


def test_colliding_codes_are_refused():
    with pytest.raises(ValueError, match="same code"):
        IndexTrie(torch.tensor([[-1, -1], [0, 1], [0, 1]]), (2, 2))


def test_beam_search_returns_distinct_valid_items_never_excluded(llm, trie, codes, level_tokens):
    ids, mask, _ = prompts([5, 9, 7, 12])
    generator = torch.Generator().manual_seed(4)
    excluded = torch.rand(4, len(codes), generator=generator) < torch.tensor(
        [[0], [0.3], [0.7], [0]]
    )
    excluded[3, 4:] = True  # all but items 1, 2, 3
    items, scores = constrained_beam_search(llm, ids, mask, trie, level_tokens, 5, excluded)
    assert items.dtype == torch.long and scores.dtype == torch.float32
    assert items.shape == scores.shape == (4, 5)
    for user in range(3):
        assert len(set(items[user].tolist())) == 5 and 0 not in items[user].tolist()
        assert not excluded[user, items[user]].any()
    assert sorted(items[3, :3].tolist()) == [1, 2, 3] and items[3, 3:].tolist() == [0, 0]
    assert torch.isfinite(scores[3, :3]).all() and torch.isneginf(scores[3, 3:]).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    generated = {tuple(codes[item].tolist()) for item in items[items > 0].tolist()}
    assert generated <= {tuple(code) for code in codes[1:].tolist()}


def test_enough_beams_make_the_search_exhaustive(llm, trie, codes, level_tokens):
    ids, mask, plain = prompts([6, 10])
    items, scores = constrained_beam_search(llm, ids, mask, trie, level_tokens, WIDEST_INNER_LEVEL)
    for user, prompt in enumerate(plain):
        reference = reference_log_likelihoods(llm, prompt, codes[1:], level_tokens)
        best = reference.sort(descending=True)
        assert int(items[user, 0]) == int(best.indices[0]) + 1
        assert torch.allclose(scores[user], best.values[:WIDEST_INNER_LEVEL], atol=1e-4)
        assert torch.allclose(scores[user], reference[items[user] - 1], atol=1e-4)
    small_items, small_scores = constrained_beam_search(llm, ids, mask, trie, level_tokens, 3)
    assert (small_scores[:, 0] <= scores[:, 0] + 1e-5).all()


def test_code_log_likelihoods_are_teacher_forced_scores(llm, trie, codes, level_tokens):
    ids, mask, plain = prompts([4, 11, 8])
    generator = torch.Generator().manual_seed(5)
    candidates = torch.randint(1, len(codes), (3, 7), generator=generator)
    likelihoods = code_log_likelihoods(llm, ids, mask, codes[candidates], level_tokens)
    assert likelihoods.dtype == torch.float32 and likelihoods.shape == (3, 7)
    for user, prompt in enumerate(plain):
        reference = reference_log_likelihoods(llm, prompt, codes[candidates[user]], level_tokens)
        assert torch.allclose(likelihoods[user], reference, atol=1e-4)
    items, scores = constrained_beam_search(llm, ids, mask, trie, level_tokens, 6)
    beams = code_log_likelihoods(llm, ids, mask, codes[items], level_tokens)
    assert torch.allclose(beams, scores, atol=1e-4)
    padding = code_log_likelihoods(llm, ids[:1], mask[:1], codes[:1].unsqueeze(0), level_tokens)
    assert torch.isneginf(padding).all()


def test_a_batch_searches_as_each_user_alone(llm, trie, level_tokens):
    ids, mask, plain = prompts([3, 13, 8, 1])
    items, scores = constrained_beam_search(llm, ids, mask, trie, level_tokens, 8)
    for user, prompt in enumerate(plain):
        one = prompt.unsqueeze(0)
        alone_items, alone_scores = constrained_beam_search(
            llm, one, torch.ones_like(one), trie, level_tokens, 8
        )
        assert items[user].tolist() == alone_items[0].tolist()
        assert torch.allclose(scores[user], alone_scores[0], atol=1e-4)


def test_a_bfloat16_model_is_scored_in_float32(llm, trie, level_tokens):
    half = LlamaForCausalLM(llm.config).to(torch.bfloat16).eval()
    half.load_state_dict(llm.state_dict())
    ids, mask, _ = prompts([5, 7])
    items, scores = constrained_beam_search(half, ids, mask, trie, level_tokens, 4)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()


def test_unconstrained_search_is_the_same_loop_over_every_token(llm, trie, level_tokens):
    ids, mask, _ = prompts([5, 9])
    tokens, scores = unconstrained_beam_search(llm, ids, mask, 6, len(SIZES))
    assert tokens.shape == (2, 6, len(SIZES)) and scores.shape == (2, 6)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    for user in range(2):
        assert len({tuple(sequence) for sequence in tokens[user].tolist()}) == 6
    _, constrained = constrained_beam_search(llm, ids, mask, trie, level_tokens, 6)
    assert (scores[:, 0] >= constrained[:, 0] - 1e-5).all()
    chosen = code_log_likelihoods_of_tokens(llm, ids, mask, tokens[:, 0])
    assert torch.allclose(chosen, scores[:, 0], atol=1e-4)


def code_log_likelihoods_of_tokens(llm, ids, mask, tokens):
    """The log-likelihood of arbitrary token sequences ``[B, steps]``: the identity codebook."""
    identity = [torch.arange(VOCAB)] * tokens.shape[-1]
    return code_log_likelihoods(llm, ids, mask, tokens.unsqueeze(1), identity)[:, 0]
