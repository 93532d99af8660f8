"""Amazon Reviews conversion safety: all-or-nothing output, --overwrite, undecodable lines,
truncated gz, Python-literal meta, empty results, odd lines."""

import gzip
import json
import os
import zlib

import pytest
from amazon_lines import META_2018, REVIEWS_2018, read_table, review_2018, write

from recbole_llmsrec.tools.amazon import ConversionError, Converter, main


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
