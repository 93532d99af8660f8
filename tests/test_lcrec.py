"""LCRec: its settings checked early, the loss on responses only and falling, constrained full sort
with the history masked, sampled scores as log-likelihoods, checkpoints carrying the codes, and the
evaluation rule that an item scored -inf is never retrieved."""

import pathlib

import pytest
import torch
from recbole.evaluator import Collector
from recbole.utils import init_seed

from recbole_llmsrec import Config
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.evaluation.loaders import data_preparation
from recbole_llmsrec.evaluation.results import ProtocolCollector
from recbole_llmsrec.models.lcrec.model import LCRec
from recbole_llmsrec.settings import SettingError
from recbole_llmsrec.tools.tiny_llm import build_tiny_llm

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return build_tiny_llm(str(tmp_path_factory.mktemp("llm") / "tiny-llama"), hidden_size=32)


@pytest.fixture
def lcrec_config(tiny_llama, tmp_path):
    return {
        "use_gpu": False,
        "seed": 2020,
        "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"),
        "llm_path": tiny_llama,
        "llm_dtype": "float32",
        "llm_gradient_checkpointing": False,
        "item_index": "sequential",
        "item_index_codebook_size": 16,
        "item_description_fields": ["class"],
        "user_inter_num_interval": "[0,25]",
        "MAX_ITEM_LIST_LENGTH": 5,
        "prompt_history_length": 5,
        "num_beams": 5,
        "epochs": 1,
        "train_batch_size": 8,
        "eval_batch_size": 64,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "eval_mask_history": True,
        "metrics": ["Recall", "NDCG"],
        "topk": [5],
        "valid_metric": "NDCG@5",
    }


def prepare(config_dict):
    config = Config(model="LCRec", dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    return LCRec(config, train._dataset), train, valid, test


def teacher_forced(model, prompt_ids, continuation):
    """The log-likelihood of ``continuation`` after ``prompt_ids`` by one plain forward."""
    ids = torch.tensor([prompt_ids + continuation])
    logits = model.llm(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    return logits.log_softmax(-1).gather(1, torch.tensor(continuation).unsqueeze(1)).sum().item()


def test_unknown_tasks_and_unfillable_templates_are_refused_early(lcrec_config):
    with pytest.raises(SettingError, match="lcrec_tasks=.*unknown: recommend"):
        Config(
            model="LCRec",
            dataset="ml-100k",
            config_dict={**lcrec_config, "lcrec_tasks": ["seqrec", "recommend"]},
        )
    with pytest.raises(SettingError, match="must hold seqrec"):
        Config(
            model="LCRec",
            dataset="ml-100k",
            config_dict={**lcrec_config, "lcrec_tasks": ["item2index"]},
        )
    # preferenceobtain needs a user preference text, which ml-100k has not
    with pytest.raises(ValueError, match="preferenceobtain.*explicit_preference"):
        prepare({**lcrec_config, "lcrec_tasks": ["seqrec", "preferenceobtain"]})


def test_the_loss_is_the_response_tokens_cross_entropy_and_training_lowers_it(lcrec_config):
    model, train, _, _ = prepare(lcrec_config)
    batch = next(iter(train))
    state = model.template_generator.get_state()
    prompts, responses = model.training_examples(batch)
    assert {"seqrec", "item2index", "index2item", "fusionseqrec"} <= set(model.tasks)
    # every row gives a seqrec and a fusionseqrec example; the item tasks a slice of items each
    assert len(prompts) == 2 * len(batch) + 2 * model.items_per_step
    model.item_order, model.item_cursor, model.item_passes = None, 0, 0
    model.template_generator.set_state(state)
    loss = model.calculate_loss(batch)
    eos = model.tokenizer.eos_token_id
    total, count = 0.0, 0
    for prompt_ids, response in zip(model.tokenizer(prompts)["input_ids"], responses):
        total -= teacher_forced(model, prompt_ids, response + [eos])
        count += len(response) + 1
    assert loss.item() == pytest.approx(total / count, rel=1e-4)

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        model.template_generator.set_state(state)
        model.item_order, model.item_cursor, model.item_passes = None, 0, 0
        loss = model.calculate_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0]


def test_full_sort_scores_only_the_beams_items_outside_the_history(lcrec_config):
    model, _, valid, _ = prepare(lcrec_config)
    model.eval()
    interaction, history_index, _, _ = next(iter(valid))
    excluded = torch.zeros(len(interaction), model.n_items, dtype=torch.bool)
    excluded[history_index] = True
    scores = model.full_sort_predict_excluding(interaction, excluded)
    finite = torch.isfinite(scores)
    assert (finite.sum(1) == model.num_beams).all()
    assert not (finite & excluded).any() and not finite[:, 0].any()
    # each returned item's score is its index's log-likelihood after the user's prompt
    ids, mask = model.eval_prompts(interaction[:2])
    for row in range(2):
        prompt = ids[row][mask[row].bool()].tolist()
        for item in finite[row].nonzero().flatten()[:3].tolist():
            expected = teacher_forced(model, prompt, model.index_ids([item])[0].tolist())
            assert scores[row, item].item() == pytest.approx(expected, abs=1e-4)


def test_sampled_scores_are_each_candidates_teacher_forced_log_likelihood(lcrec_config):
    model, _, valid, _ = prepare(lcrec_config)
    model.eval()
    interaction = next(iter(valid))[0][:3]
    rows = interaction.repeat_interleave(4)  # every user with 4 candidates, as sampled modes give
    rows[model.ITEM_ID] = torch.tensor([1, 7, 30, 12, 5, 5, 9, 2, 40, 3, 8, 11])
    scores = model.predict(rows)
    ids, mask = model.eval_prompts(interaction)
    for row in range(len(rows)):
        prompt = ids[row // 4][mask[row // 4].bool()].tolist()
        item = int(rows[model.ITEM_ID][row])
        expected = teacher_forced(model, prompt, model.index_ids([item])[0].tolist())
        assert scores[row].item() == pytest.approx(expected, abs=1e-4)


def test_a_checkpoint_carries_its_codes_and_the_prompts_follow_them(lcrec_config):
    model, _, _, _ = prepare(lcrec_config)
    state = model.state_dict()
    assert torch.equal(state["item_codes"], model.item_codes)
    texts_before, _ = model.views()
    tokens_of_2 = model.index_ids([2]).tolist()
    swapped = state["item_codes"].clone()
    swapped[[1, 2]] = swapped[[2, 1]]
    model.load_state_dict({**state, "item_codes": swapped})
    texts_after, _ = model.views()
    assert texts_after.code_texts[1] == texts_before.code_texts[2]
    assert model.index_ids([1]).tolist() == tokens_of_2


def test_a_target_scored_minus_inf_is_never_a_hit():
    """A generative model scores the items it generated; RecBole's top-k filled the rest of the list
    with arbitrary -inf ties and could count the target among them."""
    config = {"metrics": ["Recall"], "topk": [3], "metric_decimal_place": 4}
    config.update({"eval_type": None, "eval_item_groups": None, "ITEM_ID_FIELD": "item_id"})
    config.update({"LABEL_FIELD": "label", "eval_args": {"mode": "full"}})
    scores = torch.full((1, 3), -torch.inf)
    scores[0, 2] = 0.5  # the model generated item 2 only; the target is item 1
    positive_u, positive_i = torch.tensor([0]), torch.tensor([1])
    recbole = Collector.__new__(Collector)
    ours = ProtocolCollector.__new__(ProtocolCollector)
    for collector in (recbole, ours):
        Collector.__init__(collector, _Config(config))
        collector.item_groups = False
        collector.eval_batch_collect(scores, None, positive_u, positive_i)
    recbole_hits = recbole.data_struct.get("rec.topk")[0, :3].sum().item()
    our_hits = ours.data_struct.get("rec.topk")[0, :3].sum().item()
    assert recbole_hits == 1  # torch.topk picked the -inf target among the ties
    assert our_hits == 0
    assert ours.data_struct.get("rec.topk")[0, 3].item() == 1  # one target still counted


class _Config(dict):
    def __getitem__(self, key):
        return self.get(key)
