"""Frozen-encoder item embeddings are computed once; any change of encoder, template or text recomputes."""

import torch

from recbole_llmsrec.embedding_cache import cached_item_embeddings, encoder_identity
from recbole_llmsrec.llm import load_llm, mean_pooled_embeddings


class CountingEncoder:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer, self.forwards, self.rows = model, tokenizer, 0, 0

    def __call__(self, texts):
        self.forwards += 1
        self.rows += len(texts)
        return mean_pooled_embeddings(self.model, self.tokenizer, texts, max_length=32)


def test_cache_hit_does_zero_forwards_and_changes_recompute(minilm_path, tmp_path):
    model, tokenizer = load_llm(minilm_path, kind="base", dtype="float32")
    encoder = CountingEncoder(model, tokenizer)
    identity = encoder_identity(model, minilm_path)
    texts = ["", "Toy Story, 1995", "GoldenEye, 1995", "Heat", "Casino, 1995, Drama"]
    common = dict(cache_dir=str(tmp_path), encoder_id=identity, batch_size=2)

    first = cached_item_embeddings(texts, encoder, template="{value}", **common)
    assert encoder.forwards == 3 and encoder.rows == len(texts)    # batched: ceil(5 / 2)
    assert first.shape == (5, 384) and first.dtype == torch.float32
    direct = mean_pooled_embeddings(model, tokenizer, [texts[3]], max_length=32)[0]
    torch.testing.assert_close(first[3], direct, rtol=1e-4, atol=1e-5)   # unsorted back to item order

    again = cached_item_embeddings(texts, encoder, template="{value}", **common)
    assert encoder.forwards == 3                                   # cache hit: no forward at all
    assert torch.equal(again, first)

    cached_item_embeddings(texts, encoder, template="{name}: {value}", **common)
    assert encoder.forwards == 6                                   # new template: recomputed
    cached_item_embeddings(texts[:-1] + ["Casino"], encoder, template="{value}", **common)
    assert encoder.forwards == 9                                   # a changed text: recomputed
    other_identity = encoder_identity(model.to(torch.bfloat16), minilm_path)
    assert other_identity != identity


def test_local_checkpoint_rewritten_in_place_changes_identity(tiny_llama_dir):
    import os
    import time

    model, _ = load_llm(tiny_llama_dir, kind="base", dtype="float32", with_tokenizer=False)
    before = encoder_identity(model, tiny_llama_dir)
    time.sleep(0.01)
    model.save_pretrained(tiny_llama_dir)   # same config, new files
    assert os.path.isdir(tiny_llama_dir)
    assert encoder_identity(model, tiny_llama_dir) != before
