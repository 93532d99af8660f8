"""Item text from .item atomic files: ml-100k out of the box, holes, bad config, token
truncation."""

import pytest
from recbole.data import create_dataset, data_preparation
from transformers import AutoTokenizer

from recbole_llmsrec import Config
from recbole_llmsrec.data.item_text import build_item_texts, build_item_titles, truncate_to_tokens

HOLEY_INTER = """user_id:token\titem_id:token\trating:float\ttimestamp:float
u1\ti1\t5\t1
u1\ti2\t4\t2
u1\ti3\t3\t3
u2\ti1\t2\t4
u2\ti4\t1\t5
u2\ti5\t5\t6
"""
# i2: empty title; i3: no year, no genres, no price; i4: nothing but its id; i5: tabs/spaces in text
HOLEY_ITEM = """item_id:token\ttitle:token_seq\tyear:token\tgenres:token_seq\tprice:float
i1\tToy Story\t1995\tAnimation Comedy\t9.5
i2\t\t1996\tDrama\t3.5
i3\tHeat\t\t\t
i4\t\t\t\t
i5\t  Spaced    Out  \t2001\tSci-Fi\t1
"""


def make_config(toy_model, dataset, **overrides):
    return Config(
        model=toy_model, dataset=dataset, config_dict={"train_neg_sample_args": None, **overrides}
    )


@pytest.fixture
def holey_dataset(tmp_path, toy_model):
    folder = tmp_path / "data" / "holey"
    folder.mkdir(parents=True)
    (folder / "holey.inter").write_text(HOLEY_INTER)
    (folder / "holey.item").write_text(HOLEY_ITEM)
    overrides = dict(
        data_path=str(tmp_path / "data"),
        normalize_all=False,
        load_col={
            "inter": ["user_id", "item_id", "rating", "timestamp"],
            "item": ["item_id", "title", "year", "genres", "price"],
        },
        item_text_fields=["title", "year", "genres", "price"],
    )
    return lambda **more: _load(toy_model, "holey", {**overrides, **more})


def _load(toy_model, name, overrides):
    config = make_config(toy_model, name, **overrides)
    dataset = create_dataset(config)
    texts = build_item_texts(dataset, config)
    return {dataset.id2token(dataset.iid_field, i): t for i, t in enumerate(texts) if i}, texts


def test_ml100k_item_text_works_out_of_the_box(toy_model):
    config = make_config(toy_model, "ml-100k")
    dataset = create_dataset(config)
    texts = build_item_texts(dataset, config)
    assert len(texts) == dataset.item_num and texts[0] == ""
    toy_story = texts[dataset.token2id(dataset.iid_field, "1")]
    assert toy_story == "Toy Story, 1995, Animation Children's Comedy"
    assert all(texts[1:]) and not any("nan" in t.split(", ") for t in texts)
    # models build their texts from the training split, where item_feat is an Interaction
    train_data, _, _ = data_preparation(config, dataset)
    assert build_item_texts(train_data.dataset, config) == texts


def test_name_value_template(toy_model):
    config = make_config(
        toy_model, "ml-100k", item_text_template="{name}: {value}", item_text_separator="; "
    )
    dataset = create_dataset(config)
    text = build_item_texts(dataset, config)[dataset.token2id(dataset.iid_field, "1")]
    assert text == "movie_title: Toy Story; release_year: 1995; class: Animation Children's Comedy"


def test_missing_and_empty_fields_are_left_out_not_nan(holey_dataset):
    by_item, texts = holey_dataset()
    assert texts[0] == ""
    assert by_item["i1"] == "Toy Story, 1995, Animation Comedy, 9.5"
    assert by_item["i2"] == "1996, Drama, 3.5"  # empty title skipped
    assert by_item["i3"].startswith("Heat, ")  # no year, no genres (RecBole imputes the price)
    assert by_item["i3"].count(",") == 1
    assert "nan" not in " ".join(texts).lower()
    assert by_item["i5"] == "Spaced Out, 2001, Sci-Fi, 1"


def test_item_without_any_value_gets_the_fallback(holey_dataset):
    by_item, _ = holey_dataset(item_text_fields=["title", "genres"], item_text_fallback="no text")
    assert by_item["i4"] == "no text"


def test_missing_value_placeholder(holey_dataset):
    by_item, _ = holey_dataset(
        item_text_fields=["title", "genres"], item_text_missing_value="Empty"
    )
    assert by_item["i2"] == "Empty, Drama"
    assert by_item["i4"] == "Empty, Empty"


def test_unknown_item_text_field_is_a_clear_error(toy_model):
    config = make_config(toy_model, "ml-100k", item_text_fields=["movie_title", "plot"])
    dataset = create_dataset(config)
    with pytest.raises(ValueError, match=r"item_text_fields entry 'plot'.*load_col"):
        build_item_texts(dataset, config)


def test_unset_item_text_fields_and_bad_template_are_clear_errors(toy_model):
    config = make_config(toy_model, "ml-100k", item_text_fields=None)
    dataset = create_dataset(config)
    with pytest.raises(ValueError, match="item_text_fields is not set"):
        build_item_texts(dataset, config)
    config = make_config(toy_model, "ml-100k", item_text_template="{title}")
    with pytest.raises(ValueError, match="item_text_template"):
        build_item_texts(dataset, config)


def test_truncate_to_tokens_keeps_the_text_verbatim(minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    texts = ["Toy Story, 1995, Animation Children's Comedy", "Heat"]
    short = truncate_to_tokens(texts, tokenizer, 4)
    assert short[0] == "Toy Story, 1995"  # toy / story / , / 1995
    assert short[1] == "Heat"
    assert all(len(tokenizer(t, add_special_tokens=False)["input_ids"]) <= 4 for t in short)
    with pytest.raises(ValueError, match="max_tokens"):
        truncate_to_tokens(texts, tokenizer, 0)


def test_titles_come_from_the_title_field(toy_model):
    config = make_config(toy_model, "ml-100k")
    dataset = create_dataset(config)
    titles = build_item_titles(dataset, config)
    assert titles[dataset.token2id(dataset.iid_field, "1")] == "Toy Story"
    config = make_config(toy_model, "ml-100k", item_title_field="name")
    with pytest.raises(ValueError, match="item_title_field 'name'"):
        build_item_titles(dataset, config)
