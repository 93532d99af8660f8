"""Amazon Reviews -> RecBole atomic files: both releases, gz and plain, k-core, dedupe, ties, bad
lines, seeded user sampling."""

import json
import random
from collections import Counter

import pytest
from amazon_lines import META_2018, REVIEWS_2018, read_table, review_2018, write
from recbole.data import create_dataset

from recbole_llmsrec import Config
from recbole_llmsrec.data.item_text import build_item_texts
from recbole_llmsrec.tools.amazon import Converter, main, user_draw


@pytest.fixture
def converted_2018(tmp_path):
    reviews = write(tmp_path / "Toys.json.gz", REVIEWS_2018, gz=True)
    meta = write(tmp_path / "meta_Toys.json", META_2018, gz=False)
    stats = Converter(reviews, meta, str(tmp_path / "dataset"), "toys", k_core=2).run()
    return tmp_path / "dataset" / "toys", stats


def test_2018_release_iterative_k_core_dedupe_ties_and_bad_lines(converted_2018):
    folder, stats = converted_2018
    header, rows = read_table(folder / "toys.inter")
    assert header == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert [(u, i, t) for u, i, _, t in rows] == [
        ("u1", "i1", "1.000"),
        ("u1", "i2", "2.000"),
        ("u1", "i3", "3.000"),
        ("u2", "i2", "5.000"),
        ("u2", "i1", "5.000"),
        ("u2", "i3", "6.000"),
    ]
    assert stats["lines malformed (skipped)"] == 1
    assert stats["reviews dropped: repeated (user, item)"] == 1
    assert stats["interactions dropped: 2-core (5 rounds)"] == 5
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 3, 6)
    assert stats["meta lines malformed (skipped)"] == 1


def test_item_text_is_clean_and_titles_survive_missing_descriptions(converted_2018):
    folder, stats = converted_2018
    header, rows = read_table(folder / "toys.item")
    assert header == [
        "item_id:token",
        "title:token_seq",
        "description:token_seq",
        "categories:token_seq",
        "price:float",
        "brand:token",
    ]
    items = {row[0]: row for row in rows}
    assert set(items) == {"i1", "i2", "i3"}
    assert items["i1"][1:] == [
        "Toy Story",
        "Great & fun for kids",
        "Movies_&_TV Kids",
        "12.99",
        "Pixar",
    ]
    assert items["i2"][1] == "" and items["i2"][2] == "No title here"
    assert items["i3"][1:3] == ["Heat", ""] and items["i3"][4] == ""  # price range: unknown
    assert stats["share of items with title"] == pytest.approx(2 / 3)


def test_output_loads_in_recbole_with_item_text(converted_2018, toy_model):
    folder, _ = converted_2018
    config = Config(
        model=toy_model,
        dataset="toys",
        config_dict={
            "data_path": str(folder.parent),
            "train_neg_sample_args": None,
            "load_col": {
                "inter": ["user_id", "item_id", "rating", "timestamp"],
                "item": ["item_id", "title", "description", "categories", "price", "brand"],
            },
            "item_text_fields": ["title", "description"],
        },
    )
    dataset = create_dataset(config)
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (2, 3, 6)
    texts = build_item_texts(dataset, config)
    assert texts[dataset.token2id("item_id", "i1")] == "Toy Story, Great & fun for kids"
    assert texts[dataset.token2id("item_id", "i2")] == "No title here"


def test_drop_untitled_removes_items_before_the_k_core(tmp_path):
    reviews = write(tmp_path / "r.json", REVIEWS_2018, gz=False)
    meta = write(tmp_path / "m.json.gz", META_2018, gz=True)
    stats = Converter(reviews, meta, str(tmp_path / "out"), "t", k_core=2, drop_untitled=True).run()
    _, rows = read_table(tmp_path / "out" / "t" / "t.inter")
    assert {row[1] for row in rows} == {"i1", "i3"} and stats["users"] == 2
    # i2 has no title (2 reviews after dedupe), i5 no metadata at all (2 reviews)
    assert stats["interactions dropped: untitled items"] == 4


def lines_2023():
    """The 2023 release's review and meta lines: ms timestamps, parent_asin, one low rating."""

    def review(user, item, ms, rating):
        return json.dumps(
            {
                "user_id": user,
                "parent_asin": item,
                "asin": item + "-v",
                "rating": rating,
                "timestamp": ms,
                "text": "ok",
            }
        )

    reviews = [
        review("a", "p1", 1_600_000_000_123, 5.0),
        review("a", "p2", 1_600_000_001_000, 4.0),
        review("b", "p1", 1_600_000_002_000, 5.0),
        review("b", "p2", 1_600_000_003_000, 2.0),
        review("b", "p3", 1_600_000_004_000, 5.0),
    ]
    meta = [
        json.dumps(
            {
                "parent_asin": "p1",
                "title": "Lamp",
                "description": ["Bright", "<i>LED</i>"],
                "categories": ["Home", "Lighting & Fans"],
                "price": 19.5,
                "store": "Acme",
            }
        ),
        json.dumps(
            {
                "parent_asin": "p2",
                "title": "Desk",
                "description": [],
                "categories": [],
                "price": None,
                "store": None,
            }
        ),
    ]
    return reviews, meta


def test_2023_release_with_rating_filter_and_ms_timestamps(tmp_path):
    reviews, meta = lines_2023()
    stats = main(
        [
            write(tmp_path / "Home.jsonl", reviews, gz=False),
            write(tmp_path / "meta_Home.jsonl.gz", meta, gz=True),
            "--out",
            str(tmp_path / "ds"),
            "--name",
            "home",
            "--min-rating",
            "3",
            "--k-core",
            "0",
            "--max-description",
            "9",
        ]
    )
    _, rows = read_table(tmp_path / "ds" / "home" / "home.inter")
    assert [(u, i, t) for u, i, _, t in rows][:2] == [
        ("a", "p1", "1600000000.123"),
        ("a", "p2", "1600000001.000"),
    ]
    assert stats["reviews dropped: rating below min"] == 1 and stats["interactions"] == 4
    _, items = read_table(tmp_path / "ds" / "home" / "home.item")
    by_id = {row[0]: row for row in items}
    assert by_id["p1"][1:] == ["Lamp", "Bright LE", "Home Lighting_&_Fans", "19.5", "Acme"]
    assert by_id["p3"][1:] == ["", "", "", "", ""]  # reviewed, absent from the metadata


def test_k_core_holds_on_random_data_and_small_buckets_give_the_same_output(tmp_path):
    rng = random.Random(0)
    lines = [
        review_2018(
            f"u{int(rng.paretovariate(1.2)) % 300}",
            f"i{int(rng.paretovariate(1.1)) % 200}",
            rng.randrange(1000),
        )
        for _ in range(4000)
    ]
    reviews = write(tmp_path / "big.json.gz", lines, gz=True)
    meta = write(
        tmp_path / "meta.json",
        [json.dumps({"asin": f"i{i}", "title": f"t{i}"}) for i in range(200)],
        gz=False,
    )
    Converter(reviews, meta, str(tmp_path / "one"), "d", k_core=5).run()
    Converter(reviews, meta, str(tmp_path / "many"), "d", k_core=5, bucket_records=300).run()
    _, rows = read_table(tmp_path / "one" / "d" / "d.inter")
    users, items = Counter(r[0] for r in rows), Counter(r[1] for r in rows)
    assert rows and min(users.values()) >= 5 and min(items.values()) >= 5
    assert len({(r[0], r[1]) for r in rows}) == len(rows)
    _, bucketed = read_table(tmp_path / "many" / "d" / "d.inter")
    assert sorted(map(tuple, bucketed)) == sorted(map(tuple, rows))
    by_user = {}
    for row in bucketed:
        by_user.setdefault(row[0], []).append(float(row[3]))
    assert all(times == sorted(times) for times in by_user.values())


# -- --user-fraction / --seed
# ---------------------------------------------------------------------------
SAMPLED_USERS = [f"user{n}" for n in range(200)]


def kept_users(tmp_path, run, fraction, seed, lines=None, bucket_records=4_000_000):
    """Users in the .inter of a 0-core conversion of one review per user (item cycling over 7)."""
    lines = lines or [review_2018(u, f"i{n % 7}", n) for n, u in enumerate(SAMPLED_USERS)]
    reviews = write(tmp_path / f"{run}.json", lines, gz=False)
    meta = write(
        tmp_path / f"meta_{run}.json", [json.dumps({"asin": "i0", "title": "t"})], gz=False
    )
    stats = Converter(
        reviews,
        meta,
        str(tmp_path / run),
        "d",
        k_core=0,
        bucket_records=bucket_records,
        user_fraction=fraction,
        seed=seed,
    ).run()
    _, rows = read_table(tmp_path / run / "d" / "d.inter")
    return {row[0] for row in rows}, stats


def test_user_sampling_is_a_seeded_deterministic_subset_independent_of_file_order(tmp_path):
    kept, stats = kept_users(tmp_path, "a", 0.5, seed=7)
    assert kept < set(SAMPLED_USERS) and 60 <= len(kept) <= 140
    assert stats["users dropped: sampling 0.5 (seed 7)"] == 200 - len(kept)
    assert stats["reviews dropped: sampling 0.5 (seed 7)"] == 200 - len(kept)
    assert stats["users"] == len(kept)
    shuffled = [review_2018(u, f"i{n % 7}", n) for n, u in enumerate(SAMPLED_USERS)]
    random.Random(1).shuffle(shuffled)
    assert kept_users(tmp_path, "b", 0.5, seed=7, lines=shuffled, bucket_records=16)[0] == kept
    assert kept_users(tmp_path, "c", 0.5, seed=8)[0] != kept
    assert kept == {u for u in SAMPLED_USERS if user_draw(7, u) < 0.5}  # the documented rule


def test_user_samples_are_nested_across_fractions(tmp_path):
    small, _ = kept_users(tmp_path, "small", 0.3, seed=0)
    large, _ = kept_users(tmp_path, "large", 0.6, seed=0)
    assert small and small < large < set(SAMPLED_USERS)
    everyone, stats = kept_users(tmp_path, "all", 1.0, seed=0)
    assert everyone == set(SAMPLED_USERS) and not any(
        key.startswith("users dropped") for key in stats
    )


def test_user_sampling_happens_before_the_k_core(tmp_path):
    kept = [u for u in SAMPLED_USERS if user_draw(0, u) < 0.5][:2]
    dropped = next(u for u in SAMPLED_USERS if user_draw(0, u) >= 0.5)
    a, b = kept
    # 2-core: z and w reach 2 reviews only with the dropped user; a and b keep x and y between them.
    lines = [
        review_2018(a, "x", 1),
        review_2018(a, "y", 2),
        review_2018(a, "z", 3),
        review_2018(b, "x", 1),
        review_2018(b, "y", 2),
        review_2018(b, "w", 3),
        review_2018(dropped, "z", 1),
        review_2018(dropped, "w", 2),
    ]
    reviews = write(tmp_path / "r.json", lines, gz=False)
    meta = write(tmp_path / "m.json", [json.dumps({"asin": "x", "title": "X"})], gz=False)
    Converter(reviews, meta, str(tmp_path / "full"), "d", k_core=2).run()
    _, rows = read_table(tmp_path / "full" / "d" / "d.inter")
    assert {row[1] for row in rows} == {"x", "y", "z", "w"}  # without sampling all pass the 2-core
    stats = Converter(reviews, meta, str(tmp_path / "half"), "d", k_core=2, user_fraction=0.5).run()
    _, rows = read_table(tmp_path / "half" / "d" / "d.inter")
    assert sorted((row[0], row[1]) for row in rows) == sorted(
        [(a, "x"), (a, "y"), (b, "x"), (b, "y")]
    )
    assert stats["users dropped: sampling 0.5 (seed 0)"] == 1
    assert stats["interactions dropped: 2-core (1 rounds)"] == 2


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "nan", "half"])
def test_user_fraction_outside_zero_one_is_refused(tmp_path, capsys, value):
    reviews = write(tmp_path / "r.json", REVIEWS_2018, gz=False)
    meta = write(tmp_path / "m.json", META_2018, gz=False)
    with pytest.raises(SystemExit) as exit_:
        main(
            [reviews, meta, "--out", str(tmp_path / "out"), "--name", "t", "--user-fraction", value]
        )
    assert exit_.value.code == 2
    assert "--user-fraction" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="user_fraction"):
        Converter(reviews, meta, str(tmp_path / "out"), "t", user_fraction=0.0)
