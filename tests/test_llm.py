"""LLM loading from llm_path: a tiny local checkpoint, dtypes, LoRA, clear errors."""

import pytest
import torch
from transformers import LlamaForCausalLM, LlamaModel, OPTConfig, OPTForCausalLM

from recbole_llmsrec import Config
from recbole_llmsrec.llm.loading import LLMLoadError, freeze, load_llm, load_llm_from_config


def test_tiny_local_llama_loads_through_llm_path(tiny_llama_dir, toy_model):
    config = Config(
        model=toy_model,
        dataset="ml-100k",
        config_dict={"train_neg_sample_args": None, "llm_path": tiny_llama_dir},
    )
    model, tokenizer = load_llm_from_config(config)
    assert isinstance(model, LlamaForCausalLM)
    assert model.dtype == torch.bfloat16  # llm_dtype default
    reference = LlamaForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)
    assert torch.equal(model.model.embed_tokens.weight, reference.model.embed_tokens.weight)
    ids = tokenizer("Toy Story", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == model.config.vocab_size


def test_base_kind_is_the_bare_decoder_without_lm_head(tiny_llama_dir):
    model, _ = load_llm(tiny_llama_dir, kind="base", dtype="float32", with_tokenizer=False)
    assert isinstance(model, LlamaModel) and not hasattr(model, "lm_head")
    assert model.dtype == torch.float32


def test_lora_trains_only_adapters_and_gradient_checkpointing_turns_on(tiny_llama_dir):
    model, _ = load_llm(
        tiny_llama_dir,
        dtype="float32",
        gradient_checkpointing=True,
        lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert model.base_model.model.model.gradient_checkpointing
    model.train()
    loss = model(input_ids=torch.tensor([[5, 6, 7, 8]]), labels=torch.tensor([[5, 6, 7, 8]])).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_bad_llm_path_names_the_key_and_the_fix(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(LLMLoadError, match=r"llm_path=.*no-such-model.*--llm_path="):
        load_llm(missing)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(LLMLoadError, match=r"item_llm_path=.*Point item_llm_path at a local copy"):
        load_llm(str(empty_dir), key="item_llm_path")
    with pytest.raises(LLMLoadError, match="llm_path is not set"):
        load_llm(None)


def test_bad_dtype_and_lora_keys_are_clear_errors(tiny_llama_dir):
    with pytest.raises(ValueError, match=r"llm_dtype='fp8'.*bfloat16"):
        load_llm(tiny_llama_dir, dtype="fp8")
    with pytest.raises(ValueError, match=r"llm_lora has unknown entries \['rank'\]"):
        load_llm(tiny_llama_dir, dtype="float32", lora={"rank": 4})


def test_freeze_stops_gradients_and_dropout(tiny_llama_dir):
    model, _ = load_llm(tiny_llama_dir, dtype="float32", with_tokenizer=False)
    freeze(model)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_frozen_load_zeroes_every_dropout_so_train_mode_forwards_agree(tmp_path):
    path = str(tmp_path / "dropout-opt")
    torch.manual_seed(0)
    OPTForCausalLM(
        OPTConfig(
            vocab_size=64,
            hidden_size=16,
            ffn_dim=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            word_embed_proj_dim=16,
            max_position_embeddings=32,
            dropout=0.1,
            attention_dropout=0.1,
            layerdrop=0.1,
        )
    ).save_pretrained(path)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])

    def two_train_mode_forwards(model):
        model.train()  # as with gradient checkpointing: HF checkpoints train-mode modules only
        with torch.no_grad():
            return model(input_ids=ids).logits, model(input_ids=ids).logits

    trainable, _ = load_llm(path, dtype="float32", with_tokenizer=False)
    assert trainable.config.dropout == 0.1  # a model that trains keeps its dropout
    assert not torch.equal(*two_train_mode_forwards(trainable))

    frozen, _ = load_llm(path, dtype="float32", with_tokenizer=False, frozen=True)
    assert (frozen.config.dropout, frozen.config.attention_dropout, frozen.config.layerdrop) == (
        0,
        0,
        0,
    )
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    first, second = two_train_mode_forwards(frozen)
    assert torch.equal(first, second)
    frozen.eval()
    with torch.no_grad():
        assert torch.equal(frozen(input_ids=ids).logits, first)  # the same function in either mode


def test_load_report_is_silent_for_the_dropped_lm_head_only(tiny_llama_dir, tmp_path, monkeypatch):
    import logging

    reports = []
    handler = logging.Handler()
    handler.emit = lambda record: reports.append(record.getMessage())
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addHandler(handler)
    try:
        # the causal LM's head, left out on purpose
        load_llm(tiny_llama_dir, kind="base", dtype="float32")
        assert not [r for r in reports if "LOAD REPORT" in r]
        base_only = str(tmp_path / "base-only")
        LlamaModel.from_pretrained(tiny_llama_dir).save_pretrained(base_only)
        # a head it lacks
        load_llm(base_only, kind="causal_lm", dtype="float32", with_tokenizer=False)
        assert [r for r in reports if "LOAD REPORT" in r and "MISSING" in r]
    finally:
        logger.removeHandler(handler)


def test_a_hub_id_the_hub_does_not_serve_fails_at_once_with_the_key_and_the_fix(monkeypatch):
    import time

    from huggingface_hub import constants

    from recbole_llmsrec.llm.loading import LLMLoadError, load_llm

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    started = time.monotonic()
    with pytest.raises(
        LLMLoadError,
        match=r"llm_path='no-such-org/no-such-model' could not be loaded: "
        r"the Hugging Face hub did not serve it .* Point llm_path at a "
        r"local copy",
    ):
        load_llm("no-such-org/no-such-model")
    assert time.monotonic() - started < 30  # one short request, not transformers' retries


def test_the_kv_cache_keyword_is_read_through_a_lora_wrapper(tiny_llama_dir):
    import inspect

    from recbole_llmsrec.llm.loading import cache_keyword

    model, _ = load_llm(
        tiny_llama_dir,
        kind="base",
        dtype="float32",
        with_tokenizer=False,
        lora={"r": 2, "target_modules": ["q_proj"]},
    )
    keyword = cache_keyword(model)
    assert keyword in inspect.signature(model.get_base_model().forward).parameters
    assert keyword == cache_keyword(model.get_base_model())
