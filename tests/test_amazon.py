"""Amazon Reviews -> RecBole atomic files: both releases, gz and plain, k-core, dedupe, ties, bad
lines, seeded user sampling; all-or-nothing output, --overwrite, undecodable lines, truncated gz,
Python-literal meta."""

import gzip
import json
import os
import random
import zlib
from collections import Counter

import pytest
from recbole.data import create_dataset

from recbole_llmsrec import Config
from recbole_llmsrec.data.item_text import build_item_texts
from recbole_llmsrec.tools.amazon import ConversionError, Converter, main, user_draw


def review_2018(user, item, seconds, rating=5.0):
    return json.dumps(
        {
            "reviewerID": user,
            "asin": item,
            "overall": rating,
            "unixReviewTime": seconds,
            "reviewText": "fine\tfilm\n",
        }
    )


# With k = 2 a one-pass filter keeps u3, u5, i4, i5; the iterative k-core removes them in turn:
# u4 (1 review) goes, then i5, then u5, then i4, then u3.
REVIEWS_2018 = [
    review_2018("u1", "i1", 1),
    review_2018("u1", "i2", 2),
    review_2018("u1", "i3", 3),
    review_2018("u1", "i2", 9),  # repeated (u1, i2): the later one goes
    review_2018("u2", "i2", 5),
    review_2018("u2", "i1", 5),  # tied: file order (i2 first) stays
    review_2018("u2", "i3", 6),
    "{this line is not json",
    review_2018("u3", "i1", 2),
    review_2018("u3", "i4", 3),
    review_2018("u4", "i5", 1),
    review_2018("u5", "i4", 1),
    review_2018("u5", "i5", 2),
]
META_2018 = [
    json.dumps(
        {
            "asin": "i1",
            "title": "Toy Story",
            "price": "$12.99",
            "brand": "Pixar",
            "description": ["<b>Great</b> &amp; fun\tfor\nkids"],
            "category": ["Movies & TV", "Kids"],
        }
    ),
    json.dumps({"asin": "i2", "description": ["No title here"], "category": ["Drama"]}),
    json.dumps({"asin": "i3", "title": "Heat", "description": [], "price": "$5 - $9"}),
    "garbage",
    json.dumps({"asin": "i4", "title": "Casino"}),
]


def write(path, lines, gz):
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def read_table(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


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


def test_2023_release_with_rating_filter_and_ms_timestamps(tmp_path):
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


# -- safety: all-or-nothing output, --overwrite, bad bytes, truncated gz, literal meta, empty
# results --
def run_main(capsys, *args):
    """``main`` as the command line runs it: (exit code, stderr); an expected failure must not
    raise."""
    try:
        main([str(arg) for arg in args])
    except SystemExit as exit_:
        return exit_.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


def truncated_gz(path, lines):
    """A gzip file cut short (an interrupted download): no end-of-stream marker; with the complete
    lines the readable part holds."""
    data = gzip.compress(("\n".join(lines) + "\n").encode("utf-8"))
    path.write_bytes(data[: len(data) * 2 // 3])
    return str(path), zlib.decompressobj(wbits=31).decompress(path.read_bytes()).count(b"\n")


@pytest.fixture
def converted_once(tmp_path, capsys):
    """A first, good conversion into ``out/t``: its files' bytes, to compare after a rerun."""
    reviews = write(tmp_path / "r.json.gz", REVIEWS_2018, gz=True)
    meta = write(tmp_path / "m.json", META_2018, gz=False)
    code, _ = run_main(
        capsys, reviews, meta, "--out", tmp_path / "out", "--name", "t", "--k-core", "2"
    )
    assert code == 0
    folder = tmp_path / "out" / "t"
    return (
        reviews,
        meta,
        folder,
        {name: (folder / name).read_bytes() for name in os.listdir(folder)},
    )


@pytest.mark.parametrize(
    "broken", ["truncated reviews gz", "truncated meta gz", "empty reviews", "no titles"]
)
def test_failed_rerun_keeps_earlier_output_byte_identical_and_leaves_no_temp_files(
    tmp_path, capsys, converted_once, broken
):
    reviews, meta, folder, before = converted_once
    assert sorted(before) == ["t.inter", "t.item"]
    if broken == "truncated reviews gz":
        reviews, _ = truncated_gz(tmp_path / "cut.json.gz", REVIEWS_2018 * 50)
    elif broken == "truncated meta gz":  # the run gets as far as writing the tables before it fails
        meta, _ = truncated_gz(tmp_path / "cut_meta.json.gz", META_2018 * 50)
    elif broken == "empty reviews":
        (tmp_path / "empty.json").write_bytes(b"")
        reviews = str(tmp_path / "empty.json")
    else:
        meta = write(
            tmp_path / "untitled.json", [json.dumps({"asin": "i1", "brand": "x"})], gz=False
        )
    code, err = run_main(
        capsys,
        reviews,
        meta,
        "--out",
        tmp_path / "out",
        "--name",
        "t",
        "--k-core",
        "2",
        "--overwrite",
    )
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(folder)) == ["t.inter", "t.item"]  # no temporary file or folder
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before


def test_rerun_refuses_without_overwrite_and_replaces_with_it(tmp_path, capsys, converted_once):
    reviews, meta, folder, before = converted_once
    code, err = run_main(
        capsys, reviews, meta, "--out", tmp_path / "out", "--name", "t", "--k-core", "0"
    )
    assert code == 1
    assert str(folder / "t.inter") in err and str(folder / "t.item") in err and "--overwrite" in err
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    with pytest.raises(ConversionError, match="--overwrite"):  # the library refuses by default too
        Converter(reviews, meta, str(tmp_path / "out"), "t", k_core=0).run()
    (folder / "t.inter").unlink()  # one stale table is output too
    with pytest.raises(ConversionError, match="t.item"):
        Converter(reviews, meta, str(tmp_path / "out"), "t", k_core=0).run()
    assert (
        run_main(
            capsys,
            reviews,
            meta,
            "--out",
            tmp_path / "out",
            "--name",
            "t",
            "--k-core",
            "0",
            "--overwrite",
        )[0]
        == 0
    )
    assert sorted(os.listdir(folder)) == ["t.inter", "t.item"]
    _, rows = read_table(folder / "t.inter")
    assert len(rows) == 11  # 0-core: all deduplicated reviews
    assert (folder / "t.item").read_bytes() != before["t.item"]  # i4 and i5 are items now


def test_python_literal_meta_lines_give_titles_and_are_never_evaluated(tmp_path):
    reviews = write(tmp_path / "r.json", REVIEWS_2018, gz=False)
    meta = write(
        tmp_path / "m.json",
        [
            # the 2014 layout, single quotes
            repr(
                {
                    "asin": "i1",
                    "title": "Toy Story",
                    "price": 12.99,
                    "categories": [["Movies & TV", "Kids"]],
                    "description": "It's <b>fun</b>",
                }
            ),
            repr({"asin": "i2", "title": 'Say "hi"'}),
            json.dumps({"asin": "i3", "title": "Heat"}),  # JSON lines still parse as JSON
            # code: malformed, not run
            "{'asin': 'i4', 'title': __import__('os').system('touch pwned')}",
            "{'asin': 'i5', 'title': 'cut short'",  # truncated: malformed
            "['asin', 'i5']",  # not a dict: malformed
        ],
        gz=False,
    )
    stats = Converter(reviews, meta, str(tmp_path / "out"), "t", k_core=0).run()
    _, rows = read_table(tmp_path / "out" / "t" / "t.item")
    items = {row[0]: row for row in rows}
    assert items["i1"][1:] == ["Toy Story", "It's fun", "Movies_&_TV Kids", "12.99", ""]
    assert items["i2"][1] == 'Say "hi"' and items["i3"][1] == "Heat"
    assert items["i4"][1:] == ["", "", "", "", ""] and items["i5"][1] == ""
    assert stats["meta lines parsed as Python literals"] == 2
    assert stats["meta lines malformed (skipped)"] == 3
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_non_utf8_bytes_in_reviews_and_meta_are_skipped_and_counted_per_file(tmp_path):
    reviews, meta = tmp_path / "r.json.gz", tmp_path / "m.json"
    lines = [line.encode("utf-8") for line in REVIEWS_2018]
    # Latin-1 byte
    bad_review = review_2018("u1", "i9", 4).encode("utf-8").replace(b"fine", b"fin\xe9")
    with gzip.open(reviews, "wb") as f:
        f.write(b"\n".join(lines[:3] + [bad_review, b"\xff\xfe garbage"] + lines[3:]) + b"\n")
    meta_lines = [line.encode("utf-8") for line in META_2018]
    meta_lines[2] = meta_lines[2].replace(b"Heat", b"H\xe9at")  # i3's line is lost, not the run
    meta.write_bytes(b"\n".join(meta_lines) + b"\n")
    stats = Converter(str(reviews), str(meta), str(tmp_path / "out"), "t", k_core=2).run()
    assert (stats["lines read"], stats["lines undecodable (skipped)"]) == (len(REVIEWS_2018) + 2, 2)
    assert stats["lines malformed (skipped)"] == 1
    assert (stats["meta lines read"], stats["meta lines undecodable (skipped)"]) == (
        len(META_2018),
        1,
    )
    assert stats["meta lines malformed (skipped)"] == 1
    _, rows = read_table(tmp_path / "out" / "t" / "t.inter")
    assert len(rows) == 6 and "i9" not in {row[1] for row in rows}
    _, items = read_table(tmp_path / "out" / "t" / "t.item")
    assert {row[0]: row[1] for row in items} == {"i1": "Toy Story", "i2": "", "i3": ""}


@pytest.mark.parametrize("which", ["reviews", "meta"])
def test_truncated_gz_fails_with_the_count_of_lines_read(tmp_path, capsys, which):
    if which == "reviews":
        reviews, read = truncated_gz(tmp_path / "cut.json.gz", REVIEWS_2018 * 50)
        meta = write(tmp_path / "m.json", META_2018, gz=False)
    else:
        reviews = write(tmp_path / "r.json", REVIEWS_2018, gz=False)
        meta, read = truncated_gz(tmp_path / "cut_meta.json.gz", META_2018 * 50)
    assert 0 < read < 50 * len(REVIEWS_2018 if which == "reviews" else META_2018)
    code, err = run_main(
        capsys, reviews, meta, "--out", tmp_path / "out", "--name", "t", "--k-core", "2"
    )
    assert code == 1
    assert (
        err
        == f"error: {tmp_path / ('cut.json.gz' if which == 'reviews' else 'cut_meta.json.gz')}: "
        f"truncated or corrupt gzip stream after {read:,} lines read "
        "(Compressed file ended before the end-of-stream marker was reached)\n"
    )
    assert not (tmp_path / "out").exists()  # the folder this run created is gone again


@pytest.mark.parametrize(
    "case, reason",
    [
        ("empty reviews", "has no lines"),
        ("only malformed reviews", "no review line was parsed and kept"),
        ("k-core removes all", "the filters removed every interaction"),
        ("no titles", "none of the 5 items kept has a title"),
        ("no titles, --drop-untitled", "no reviewed item has a title"),
    ],
)
def test_empty_result_or_untitled_items_exit_non_zero_with_the_reason(
    tmp_path, capsys, case, reason
):
    reviews = write(
        tmp_path / "r.json",
        REVIEWS_2018[7:8] * 3 if case == "only malformed reviews" else REVIEWS_2018,
        gz=False,
    )
    if case == "empty reviews":
        (tmp_path / "r.json").write_bytes(b"")
    untitled = [json.dumps({"asin": f"i{n}", "description": ["d"]}) for n in range(6)]
    meta = write(
        tmp_path / "m.json", untitled if case.startswith("no titles") else META_2018, gz=False
    )
    options = ["--k-core", "9" if case == "k-core removes all" else "0"]
    options += ["--drop-untitled"] if "drop" in case else []
    code, err = run_main(capsys, reviews, meta, "--out", tmp_path / "out", "--name", "t", *options)
    assert code == 1 and reason in err and "nothing written" in err
    assert not (tmp_path / "out").exists()


def test_odd_ids_and_values_are_malformed_not_fatal(tmp_path):
    good = [review_2018("u1", "i1", 1), review_2018("u1", "i2", 2)]
    odd = [
        # list id
        json.dumps({"reviewerID": ["u1"], "asin": "i1", "overall": 5, "unixReviewTime": 1}),
        json.dumps({"reviewerID": "u\t2", "asin": "i1", "overall": 5, "unixReviewTime": 1}),  # tab
        json.dumps({"reviewerID": "u3", "asin": "", "overall": 5, "unixReviewTime": 1}),  # empty
        '{"reviewerID": "u4", "asin": "i1", "overall": 5, "unixReviewTime": NaN}',
        '{"reviewerID": "u5", "asin": "i1", "overall": 5, "unixReviewTime": 1' + "0" * 400 + "}",
        "[1, 2]",
        '"reviewerID"',
    ]
    # a later line of i2: ignored
    meta = [
        json.dumps({"asin": ["i1"], "title": "list id"}),  # malformed
        json.dumps({"asin": "i1", "title": "One", "category": "Books"}),  # one category, a string
        json.dumps({"asin": "i2", "title": "Two \udc80"}),  # a lone surrogate: '?', not a crash
        "{'asin': 'i2'}",
    ]
    reviews = write(tmp_path / "r.json", good + odd, gz=False)
    stats = Converter(
        reviews, write(tmp_path / "m.json", meta, gz=False), str(tmp_path / "out"), "t", k_core=0
    ).run()
    assert stats["lines malformed (skipped)"] == len(odd) and stats["interactions"] == 2
    assert stats["meta lines malformed (skipped)"] == 1
    _, items = read_table(tmp_path / "out" / "t" / "t.item")
    assert {row[0]: row[1:4] for row in items} == {
        "i1": ["One", "", "Books"],
        "i2": ["Two ?", "", ""],
    }


def test_work_folders_of_killed_runs_are_removed_but_not_those_of_live_ones(tmp_path):
    import subprocess
    import sys

    reviews, meta = tmp_path / "r.json", tmp_path / "m.json"
    reviews.write_text(
        "".join(
            json.dumps(
                {"reviewerID": f"U{u}", "asin": f"I{i}", "overall": 5.0, "unixReviewTime": 1000 + i}
            )
            + "\n"
            for u in range(3)
            for i in range(3)
        )
    )
    meta.write_text(
        "".join(json.dumps({"asin": f"I{i}", "title": f"T{i}"}) + "\n" for i in range(3))
    )
    folder = tmp_path / "out" / "Tiny"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    abandoned, live = folder / f".Tiny.tmp-{dead}-abc", folder / f".Tiny.tmp-{os.getpid()}-def"
    for work in (abandoned, live):
        work.mkdir(parents=True)
        (work / "raw.bin").write_bytes(b"x")
    main(
        [str(reviews), str(meta), "--name", "Tiny", "--out", str(tmp_path / "out"), "--k-core", "0"]
    )
    assert (folder / "Tiny.inter").exists()
    assert not abandoned.exists() and live.exists()


def test_lines_that_break_any_parser_are_skipped_and_counted_recursion_included(tmp_path):
    nested_title = "[" * 900 + "]" * 900
    reviews = write(tmp_path / "r.json", [*REVIEWS_2018, "[" * 100_000], gz=False)
    meta = write(
        tmp_path / "m.json",
        [
            *META_2018,
            "[" * 100_000,
            "{'asin': 'i7', 'title': " + nested_title + "}",  # a literal nested 900 deep
        ],
        gz=False,
    )
    clean = Converter(
        write(tmp_path / "r0.json", REVIEWS_2018, gz=False),
        write(tmp_path / "m0.json", META_2018, gz=False),
        str(tmp_path / "out0"),
        "t",
        k_core=0,
    ).run()
    stats = Converter(reviews, meta, str(tmp_path / "out"), "t", k_core=0).run()
    assert stats["lines malformed (skipped)"] == clean["lines malformed (skipped)"] + 1
    assert stats["meta lines malformed (skipped)"] == clean["meta lines malformed (skipped)"] + 2
    _, rows = read_table(tmp_path / "out" / "t" / "t.inter")
    assert len(rows) > 0
