"""HLLM: InfoNCE as specified, Item-LLM training/freezing, one encoding per distinct item,
evaluation."""

import math
import pathlib

import pytest
import torch
from recbole.data import data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_llmsrec import Config, get_trainer
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.models.hllm.model import HLLM, info_nce_loss
from recbole_llmsrec.tools.tiny_llm import build_tiny_llm


@pytest.fixture(scope="module")
def tiny_llama_path(tmp_path_factory):
    return build_tiny_llm(str(tmp_path_factory.mktemp("llm") / "tiny-llama"), hidden_size=32)


@pytest.fixture
def hllm_config(tiny_llama_path, tmp_path):
    return {
        "use_gpu": False,
        "seed": 2020,
        "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "item_llm_path": tiny_llama_path,
        "user_llm_path": tiny_llama_path,
        "max_text_length": 24,
        "num_negatives": 32,
        "user_inter_num_interval": "[0,30]",
        "MAX_ITEM_LIST_LENGTH": 10,
        "epochs": 1,
        "train_batch_size": 16,
        "learning_rate": 0.001,
        "topk": [10, 50],
        "valid_metric": "NDCG@50",
    }


def prepare(config_dict):
    config = Config(model="HLLM", dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    return config, HLLM(config, train_data._dataset), train_data, valid_data, test_data


def test_info_nce_matches_a_hand_computation():
    user = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.bfloat16)
    positive = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    negatives = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    logit_scale = torch.tensor(math.log(1 / 0.07))
    # by hand, scale 1/0.07: user 0: pos cos = 1/sqrt2, negatives 1, 0, -1 (none near its positive)
    # user 1: pos cos 1; negative 1 (cos 1 to the positive: masked), 0 and 0
    s = 1 / 0.07
    loss0 = -(s / math.sqrt(2)) + math.log(
        math.exp(s / math.sqrt(2)) + math.exp(s) + 1 + math.exp(-s)
    )
    loss1 = -s + math.log(math.exp(s) + 1 + 1)
    got = info_nce_loss(user, positive, negatives, logit_scale, threshold=0.99)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx((loss0 + loss1) / 2, rel=1e-5)


def test_training_steps_lower_the_loss_and_train_the_item_llm(hllm_config):
    _, model, train_data, *_ = prepare(hllm_config)
    before = model.item_llm.layers[0].self_attn.q_proj.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    batch = next(iter(train_data))
    losses = []
    for _ in range(10):
        model.negative_generator.manual_seed(0)  # the same negatives: the same objective each step
        loss = model.calculate_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        assert model.item_token.grad is not None and model.item_token.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0]
    assert not torch.equal(model.item_llm.layers[0].self_attn.q_proj.weight, before)


def test_frozen_item_llm_stays_bit_equal(hllm_config):
    config, model, train_data, valid_data, _ = prepare(dict(hllm_config, freeze_item_llm=True))
    frozen = {k: v.clone() for k, v in model.item_llm.state_dict().items()}
    item_token = model.item_token.detach().clone()
    user_before = model.user_llm.layers[0].mlp.up_proj.weight.detach().clone()
    trainer = get_trainer(config["MODEL_TYPE"], "HLLM")(config, model)
    trainer.fit(train_data, valid_data, saved=False)
    for key, value in model.item_llm.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert torch.equal(model.item_token, item_token)
    assert not torch.equal(model.user_llm.layers[0].mlp.up_proj.weight, user_before)


def test_each_distinct_item_is_encoded_once_per_step(hllm_config):
    _, model, *_ = prepare(dict(hllm_config, num_negatives=4))
    seq = torch.tensor([[1, 2, 3, 0], [2, 3, 0, 0]])
    model.max_seq_length = 4
    batch = Interaction(
        {
            model.ITEM_SEQ: seq,
            model.ITEM_SEQ_LEN: torch.tensor([3, 2]),
            model.ITEM_ID: torch.tensor([4, 1]),
        }
    )
    model.negative_generator.manual_seed(0)
    negatives = torch.randint(1, model.n_items, (4,), generator=model.negative_generator)
    model.negative_generator.manual_seed(0)
    model.items_encoded = 0
    model.calculate_loss(batch)
    assert model.items_encoded == len({1, 2, 3, 4} | set(negatives.tolist()))


def test_windows_make_every_training_interaction_a_target_once(hllm_config):
    _, model, train_data, *_ = prepare(dict(hllm_config, MAX_ITEM_LIST_LENGTH=5))
    rows = train_data._dataset[:]
    targets = {}
    for user, seq, length, target in zip(
        rows[model.USER_ID].tolist(),
        rows[model.ITEM_SEQ].tolist(),
        rows[model.ITEM_SEQ_LEN].tolist(),
        rows[model.ITEM_ID].tolist(),
    ):
        sequence = seq[:length] + [target]
        targets.setdefault(user, []).extend(sequence[1:])  # every position predicts its next item
    history = model_history = train_data._dataset.history_matrix
    for user, trained in targets.items():
        assert len(trained) == len(set(trained))  # no interaction trained twice
        assert len(trained) == history[user].nnz - 1  # all but the very first one
    assert model_history is history


def test_item_matrix_once_per_evaluation_and_predict_agrees_with_full_sort(hllm_config):
    config, model, _, valid_data, test_data = prepare(hllm_config)
    trainer = get_trainer(config["MODEL_TYPE"], "HLLM")(config, model)
    trainer.evaluate(valid_data, load_best_model=False)
    trainer.evaluate(test_data, load_best_model=False)
    assert model.item_matrix_computations == 1
    model.train()
    model.eval()
    seq = torch.zeros(2, model.max_seq_length, dtype=torch.long)
    seq[0, :3], seq[1, :2] = torch.tensor([5, 9, 2]), torch.tensor([1, 4])
    batch = Interaction(
        {
            model.ITEM_SEQ: seq,
            model.ITEM_SEQ_LEN: torch.tensor([3, 2]),
            model.ITEM_ID: torch.tensor([7, 300]),
        }
    )
    with torch.no_grad():
        full = model.full_sort_predict(batch)
        sampled = model.predict(batch)
    assert model.item_matrix_computations == 2
    torch.testing.assert_close(sampled, full[[0, 1], [7, 300]])
    assert torch.isfinite(full[:, 1:]).all()


def test_item_text_gaps_fall_back_instead_of_nan(hllm_config):
    _, model, *_ = prepare(
        dict(
            hllm_config,
            item_text_fields=["movie_title", "class"],
            item_text_fallback="Unknown item",
        )
    )
    prompt = model.tokenizer("Compress the following sentence into embedding: ")["input_ids"]
    assert all(len(ids) > len(prompt) - 1 for ids in model.item_token_ids[1:])
    with pytest.raises(ValueError, match="item_text_fields entry 'plot'"):
        prepare(dict(hllm_config, item_text_fields=["movie_title", "plot"]))


def test_minilm_item_llm_feeds_a_smaller_user_llm_through_the_adapter(hllm_config, minilm_path):
    _, model, train_data, *_ = prepare(dict(hllm_config, item_llm_path=minilm_path))
    assert isinstance(model.adapter, torch.nn.Linear)
    assert (model.adapter.in_features, model.adapter.out_features) == (384, 32)
    loss = model.calculate_loss(next(iter(train_data)))
    loss.backward()
    assert torch.isfinite(loss) and model.adapter.weight.grad is not None


def test_cosine_schedule_warms_up_then_decays(hllm_config):
    config, model, train_data, valid_data, _ = prepare(
        dict(hllm_config, epochs=2, warmup_ratio=0.5)
    )
    trainer = get_trainer(config["MODEL_TYPE"], "HLLM")(config, model)
    rates = []
    trainer.optimizer.register_step_post_hook(
        lambda opt, *_: rates.append(opt.param_groups[0]["lr"])
    )
    trainer.fit(train_data, valid_data, saved=False)
    peak = rates.index(max(rates))
    assert 0 < peak < len(rates) - 1 and max(rates) <= 0.001
    assert rates[:peak] == sorted(rates[:peak]) and rates[peak:] == sorted(
        rates[peak:], reverse=True
    )


def test_frozen_item_llm_embeddings_come_from_the_cache(hllm_config):
    config = dict(hllm_config, freeze_item_llm=True)
    _, model, train_data, *_ = prepare(config)
    model.calculate_loss(next(iter(train_data)))
    assert model.items_encoded == model.n_items - 1  # the whole catalogue, once
    model.calculate_loss(next(iter(train_data)))
    assert model.items_encoded == model.n_items - 1  # then no Item LLM forward at all
    _, again, *_ = prepare(config)
    again.eval()
    torch.testing.assert_close(again.item_matrix(), model.item_matrix())
    assert again.items_encoded == 0  # a new run reuses the cache file


def test_lora_on_the_item_llm_trains_only_its_adapters(hllm_config):
    _, model, train_data, *_ = prepare(
        dict(
            hllm_config, item_llm_lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
        )
    )
    trainable = [n for n, p in model.item_llm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    model.calculate_loss(next(iter(train_data))).backward()
    assert all(p.grad is not None for n, p in model.item_llm.named_parameters() if p.requires_grad)


def test_frozen_item_llm_table_is_the_eval_mode_one_after_model_train(hllm_config, minilm_path):
    import shutil

    from recbole_llmsrec.llm.embedding_cache import CACHE_SUBDIR

    config = dict(hllm_config, item_llm_path=minilm_path, freeze_item_llm=True)
    _, model, *_ = prepare(config)
    model.item_texts = model.item_texts[:100]  # the table of 100 items is enough, and quick on CPU
    model.train()  # as RecBole's epoch does
    assert not model.item_llm.training  # the frozen Item LLM stays in eval mode
    in_training = model.frozen_item_table().clone()
    assert model.items_encoded == 100 and in_training.shape == (101, 384)

    shutil.rmtree(f"{config['checkpoint_dir']}/{CACHE_SUBDIR}")  # compute it again, from scratch
    model._frozen_table = None
    model.eval()
    in_eval = model.frozen_item_table()
    assert model.items_encoded == 200  # really encoded a second time
    torch.testing.assert_close(in_training, in_eval, rtol=0, atol=1e-6)


def test_logged_parameter_count_is_an_integer(hllm_config):
    _, model, *_ = prepare(hllm_config)  # a 0-d parameter made RecBole's np.prod sum print a float
    count = str(model).rsplit(": ", 1)[-1]
    assert count.isdigit() and int(count) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )


def test_checkpoint_with_the_old_scalar_temperature_still_loads(hllm_config):
    _, model, *_ = prepare(hllm_config)
    state = model.state_dict()
    state["logit_scale"] = torch.tensor(1.5)  # saved before logit_scale had shape [1] (for FSDP)
    model.load_state_dict(state)
    assert model.logit_scale.shape == (1,) and float(model.logit_scale.detach()) == 1.5


def test_packed_item_texts_equal_the_padded_batches(hllm_config):
    """Packed texts (no padding; varlen attention on CUDA, its block-diagonal SDPA reference here)
    give the padded path's item embeddings, loss and gradients; the token budget bounds every
    batch."""
    _, model, train_data, *_ = prepare(dict(hllm_config, item_encode_tokens=120))
    batches = model.token_budget_batches(range(1, 200))
    assert sorted(i for b in batches for i in b) == list(range(1, 200)) and len(batches) > 20
    assert all(
        len(b) * (len(model.item_token_ids[b[-1]]) + 1) <= 120 for b in batches if len(b) > 1
    )
    batch = next(iter(train_data))
    results = {}
    for packed in (False, True):
        model.pack_item_texts = packed
        model.negative_generator.manual_seed(0)
        model.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        results[packed] = (
            model.encode_items(torch.arange(1, 200)).detach(),
            loss.detach(),
            model.item_token.grad.clone(),
            model.item_llm.layers[0].self_attn.k_proj.weight.grad.clone(),
        )
    for padded, packed in zip(results[False], results[True]):
        torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)


def test_a_training_step_opens_one_mixed_precision_region(hllm_config, monkeypatch):
    """Each autocast region casts the fp32 weights anew: one per step, however many Item LLM
    batches."""
    _, model, train_data, *_ = prepare(dict(hllm_config, item_encode_tokens=120))
    regions = []
    autocast = model._autocast
    monkeypatch.setattr(
        model, "_autocast", lambda device: regions.append(device) or autocast(device)
    )
    encoded = model.items_encoded
    model.calculate_loss(next(iter(train_data)))
    assert model.items_encoded - encoded > 100 and len(regions) == 1


def test_texts_are_packed_by_default_only_on_cuda_in_half_precision(hllm_config):
    # fp32 weights: flash has no fp32 kernel, the fallback a dense mask
    _, model, *_ = prepare(hllm_config)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    model.autocast_dtype = None
    assert not model.packs_texts(cuda) and not model.packs_texts(cpu)
    model.autocast_dtype = "bfloat16"
    assert model.packs_texts(cuda) and not model.packs_texts(cpu)
    model.pack_item_texts = True
    assert model.packs_texts(cpu)


def test_frozen_item_table_cached_in_fp32_is_not_reused_under_bf16_autocast(
    hllm_config, monkeypatch
):
    from recbole_llmsrec.llm.embedding_cache import CACHE_SUBDIR

    config, model, *_ = prepare(dict(hllm_config, freeze_item_llm=True))
    model.item_texts = model.item_texts[:50]
    fp32 = model.frozen_item_table().clone()
    model._frozen_table = None
    monkeypatch.setattr(model, "_compute_dtype", lambda device: torch.bfloat16)  # CPU bf16 autocast
    bf16 = model.frozen_item_table()
    # one per dtype
    assert len(list((pathlib.Path(config["checkpoint_dir"]) / CACHE_SUBDIR).glob("*.pt"))) == 2
    assert not torch.equal(fp32, bf16)
