"""Amazon converter: lines/s and peak memory on synthetic 2018-format review files of two sizes.

    python benchmarks/amazon_convert.py [--lines 1000000 2000000] [--bucket-records 500000]

Each file draws users and items from the same pools (200k users, 50k items), so the only thing that
grows is the number of lines: a streaming converter's peak RSS must stay flat. Each conversion runs
in its own process, which reports its own peak RSS.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

CHILD = """
import resource, sys, time
from recbole_llmsrec.tools.amazon import Converter
start = time.perf_counter()
stats = Converter(sys.argv[1], sys.argv[2], sys.argv[3], "bench", bucket_records=int(sys.argv[4]),
                  overwrite=True).run()
print(stats["lines read"], time.perf_counter() - start,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, stats["interactions"])
"""


def write_reviews(path, lines, seed=0, users=200_000, items=50_000):
    """``lines`` seeded 2018-format reviews, users and items drawn from fixed pools."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(lines):
            f.write(
                json.dumps(
                    {
                        "reviewerID": f"U{rng.randrange(users)}",
                        "asin": f"B{int(rng.paretovariate(0.8)) % items:09d}",
                        "overall": float(rng.randint(1, 5)),
                        "unixReviewTime": rng.randrange(1_000_000_000, 1_600_000_000),
                        "reviewText": "a perfectly ordinary review text",
                    }
                )
                + "\n"
            )


def write_meta(path, items=50_000):
    """A metadata file with a title and a description for each of ``items`` items."""
    with open(path, "w") as f:
        for item in range(items):
            f.write(
                json.dumps(
                    {
                        "asin": f"B{item:09d}",
                        "title": f"Item {item}",
                        "description": ["<p>Some description</p>"],
                    }
                )
                + "\n"
            )


def convert(work, meta, lines, bucket_records):
    """One table row: convert a synthetic file of ``lines`` reviews in a child process."""
    reviews = os.path.join(work, f"reviews_{lines}.json")
    write_reviews(reviews, lines)
    size_mb = os.path.getsize(reviews) / 2**20
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            reviews,
            meta,
            os.path.join(work, "out"),
            str(bucket_records),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    read, seconds, peak_mb, kept = out.stdout.split()[-4:]
    os.remove(reviews)
    return lines, size_mb, float(read) / float(seconds), float(peak_mb), int(kept)


def print_table(rows, bucket_records):
    print(
        f"\nAmazon 2018-format reviews -> RecBole atomic files, 5-core, bucket-records "
        f"{bucket_records:,}, {os.cpu_count()} CPUs\n"
    )
    print("| review lines | file size | lines/s | peak RSS | interactions kept |")
    print("| --- | --- | --- | --- | --- |")
    for lines, size_mb, rate, peak_mb, kept in rows:
        print(f"| {lines:,} | {size_mb:,.0f} MB | {rate:,.0f} | {peak_mb:,.0f} MB | {kept:,} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000_000, 2_000_000])
    parser.add_argument("--bucket-records", type=int, default=500_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        meta = os.path.join(work, "meta.json")
        write_meta(meta)
        rows = [convert(work, meta, lines, args.bucket_records) for lines in args.lines]
    print_table(rows, args.bucket_records)


if __name__ == "__main__":
    main()
