"""Frozen-encoder item embeddings are computed once; any change of encoder, template or text
recomputes."""

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from recbole_llmsrec.llm import embedding_cache
from recbole_llmsrec.llm.embedding_cache import cached_item_embeddings, encoder_identity
from recbole_llmsrec.llm.loading import load_llm, mean_pooled_embeddings


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
    common = dict(cache_dir=str(tmp_path), encoder_id=identity, batches=[[3, 1], [4, 0], [2]])

    first = cached_item_embeddings(texts, encoder, template="{value}", **common)
    assert encoder.forwards == 3 and encoder.rows == len(texts)  # one forward per batch
    assert first.shape == (5, 384) and first.dtype == torch.float32
    direct = mean_pooled_embeddings(model, tokenizer, [texts[3]], max_length=32)[0]
    torch.testing.assert_close(first[3], direct, rtol=1e-4, atol=1e-5)  # back in item order

    again = cached_item_embeddings(texts, encoder, template="{value}", **common)
    assert encoder.forwards == 3  # cache hit: no forward at all
    assert torch.equal(again, first)

    cached_item_embeddings(texts, encoder, template="{name}: {value}", **common)
    assert encoder.forwards == 6  # new template: recomputed
    cached_item_embeddings(texts[:-1] + ["Casino"], encoder, template="{value}", **common)
    assert encoder.forwards == 9  # a changed text: recomputed
    other_identity = encoder_identity(model.to(torch.bfloat16), minilm_path)
    assert other_identity != identity


def test_local_checkpoint_rewritten_in_place_changes_identity(tiny_llama_dir):
    import os
    import time

    model, _ = load_llm(tiny_llama_dir, kind="base", dtype="float32", with_tokenizer=False)
    before = encoder_identity(model, tiny_llama_dir)
    time.sleep(0.01)
    model.save_pretrained(tiny_llama_dir)  # same config, new files
    assert os.path.isdir(tiny_llama_dir)
    assert encoder_identity(model, tiny_llama_dir) != before


# ----- damaged cache files: reported, recomputed and rewritten; never a crash, never used
# ----------
TEXTS = ["", "Toy Story, 1995", "GoldenEye, 1995", "Heat", "Casino, 1995, Drama"]


class FakeEncoder:
    """Deterministic stand-in for a frozen encoder: a text's vector depends on the text only."""

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        return torch.tensor([[len(t), sum(map(ord, t)) % 97, t.count(","), 1.0] for t in texts])


def fake_cache(tmp_path):
    """An encoder, a function running the cache with it, the fresh embeddings and the cache file."""
    encoder = FakeEncoder()

    def run():
        return cached_item_embeddings(
            TEXTS,
            encoder,
            cache_dir=str(tmp_path),
            encoder_id="fake",
            template="{value}",
            batches=[[0, 1], [2, 3], [4]],
        )

    fresh = run()
    (path,) = (tmp_path / embedding_cache.CACHE_SUBDIR).glob("*.pt")
    encoder.calls = 0
    return encoder, run, fresh, str(path)


def assert_recomputed(encoder, run, fresh, path, caplog, reason):
    with caplog.at_level(logging.WARNING, logger=embedding_cache.__name__):
        again = run()
    assert encoder.calls > 0 and torch.equal(again, fresh)
    assert any(path in r.getMessage() and reason in r.getMessage() for r in caplog.records), (
        caplog.text
    )
    calls = encoder.calls
    assert torch.equal(run(), fresh) and encoder.calls == calls  # rewritten: the next run is a hit


def test_valid_cache_is_a_hit_and_carries_a_checksum(tmp_path, caplog):
    encoder, run, fresh, path = fake_cache(tmp_path)
    with caplog.at_level(logging.WARNING, logger=embedding_cache.__name__):
        assert torch.equal(run(), fresh)
    assert encoder.calls == 0 and not caplog.records
    meta = json.loads(Path(path[:-3] + ".json").read_text())
    assert meta["shape"] == [5, 4] and meta["dtype"] == "torch.float32"
    assert len(meta["hmac_sha256"]) == 64
    assert (
        sorted(os.listdir(os.path.dirname(path)))
        == sorted(  # no temporary file left behind
            [os.path.basename(path), os.path.basename(path)[:-3] + ".json"]
        )
    )


def test_truncated_cache_is_recomputed(tmp_path, caplog):
    encoder, run, fresh, path = fake_cache(tmp_path)
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[: len(data) // 2])
    assert_recomputed(encoder, run, fresh, path, caplog, "unreadable")


def test_random_values_of_the_right_shape_fail_the_checksum(tmp_path, caplog):
    encoder, run, fresh, path = fake_cache(tmp_path)
    torch.save(torch.randn_like(fresh), path)
    assert_recomputed(encoder, run, fresh, path, caplog, "SHA-256")


def test_too_few_rows_is_recomputed(tmp_path, caplog):
    encoder, run, fresh, path = fake_cache(tmp_path)
    torch.save(fresh[:-1].clone(), path)
    assert_recomputed(encoder, run, fresh, path, caplog, "[5, dim]")


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda path, fresh: torch.save(fresh.double(), path), "float64"),
        (lambda path, fresh: torch.save(fresh.flatten(), path), "[5, dim]"),
        (lambda path, fresh: torch.save({"embeddings": fresh}, path), "not a dense tensor"),
        (lambda path, fresh: os.remove(path[:-3] + ".json"), "missing"),
        (lambda path, fresh: Path(path[:-3] + ".json").write_text("{not json"), "unparsable"),
        (
            lambda path, fresh: Path(path[:-3] + ".json").write_text('{"shape": [5, 4]}'),
            "unparsable",
        ),
    ],
    ids=[
        "float64",
        "1-D",
        "not-a-tensor",
        "sidecar-missing",
        "sidecar-not-json",
        "sidecar-incomplete",
    ],
)
def test_wrong_dtype_shape_or_sidecar_is_recomputed(tmp_path, caplog, damage, reason):
    encoder, run, fresh, path = fake_cache(tmp_path)
    damage(path, fresh)
    assert_recomputed(encoder, run, fresh, path, caplog, reason)


def test_crash_between_tensor_and_checksum_never_validates(tmp_path, monkeypatch, caplog):
    encoder = FakeEncoder()
    common = {
        "cache_dir": str(tmp_path),
        "encoder_id": "fake",
        "template": "{value}",
        "batches": [[0, 1], [2, 3], [4]],
    }

    def crash(meta, path):
        raise KeyboardInterrupt("killed while writing the checksum file")

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(embedding_cache, "_write_json", crash)
        cached_item_embeddings(TEXTS, encoder, **common)
    cache_dir = tmp_path / embedding_cache.CACHE_SUBDIR
    assert [p.suffix for p in cache_dir.iterdir()] == [".pt"]  # tensor only, no temporary file
    calls = encoder.calls
    with caplog.at_level(logging.WARNING, logger=embedding_cache.__name__):
        cached_item_embeddings(TEXTS, encoder, **common)
    assert encoder.calls > calls and "missing" in caplog.text


def test_batches_that_miss_or_repeat_a_row_are_refused(tmp_path):
    for batches in ([[0, 1], [2, 3]], [[0, 1], [2, 3], [4, 4]]):
        with pytest.raises(ValueError, match="exactly once"):
            cached_item_embeddings(
                TEXTS,
                FakeEncoder(),
                cache_dir=str(tmp_path),
                encoder_id="fake",
                template="{value}",
                batches=batches,
            )


def test_a_tensor_changed_with_a_recomputed_unkeyed_checksum_is_reported(tmp_path, caplog):
    import hashlib

    encoder, run, fresh, path = fake_cache(tmp_path)
    forged = torch.randn_like(fresh)
    torch.save(forged, path)
    sidecar = Path(path[:-3] + ".json")
    meta = json.loads(sidecar.read_text())
    meta["hmac_sha256"] = hashlib.sha256(
        forged.numpy().tobytes()
    ).hexdigest()  # what a forger can do
    sidecar.write_text(json.dumps(meta))
    assert_recomputed(encoder, run, fresh, path, caplog, "keyed SHA-256 (HMAC) does not match")


def test_a_damaged_cache_key_is_replaced_never_used(tmp_path, monkeypatch):
    from recbole_llmsrec.llm.embedding_cache import KEY_FILE_VARIABLE, cache_key_secret

    path = tmp_path / "damaged.key"
    path.write_bytes(b"")  # a writer killed before it wrote the key
    monkeypatch.setenv(KEY_FILE_VARIABLE, str(path))
    key = cache_key_secret()
    assert len(key) == 32 and path.read_bytes() == key and cache_key_secret() == key
    assert oct(path.stat().st_mode & 0o777) == "0o600"
