"""Amazon Reviews (2018 or 2023 release) to RecBole atomic files with item text.

    python -m recbole_llmsrec.tools.amazon REVIEWS META --out dataset --name Movies_and_TV

Formats, steps, options and guarantees (all-or-nothing output, skipped lines counted): README
"Amazon Reviews datasets". Memory is bounded by users and items (reviews streamed to per-user
buckets).
"""

import argparse
import os
import sys

from recbole_llmsrec.tools.amazon.converter import Converter
from recbole_llmsrec.tools.amazon.parsing import ConversionError, check_name


def fraction(text):
    """argparse type of ``--user-fraction``: a float in (0, 1] (0 would keep nobody, NaN fails
    too)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def dataset_name(text):
    """argparse type of ``--name``: a plain file name (no path separators, not '.' or '..')."""
    try:
        return check_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m recbole_llmsrec.tools.amazon",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("reviews", help="reviews file ({Category}.json[l][.gz])")
    parser.add_argument("meta", help="metadata file (meta_{Category}.json[l][.gz])")
    parser.add_argument("--out", default="dataset", help="RecBole data_path (default: dataset)")
    parser.add_argument(
        "--name", required=True, type=dataset_name, help="dataset name, e.g. Movies_and_TV"
    )
    parser.add_argument("--min-rating", type=float, default=None, help="drop reviews rated below")
    parser.add_argument("--k-core", type=int, default=5, help="iterative k-core (0: off)")
    parser.add_argument("--drop-untitled", action="store_true", help="drop items without a title")
    parser.add_argument(
        "--max-description",
        type=int,
        default=None,
        metavar="CHARS",
        help="cut descriptions to this many characters",
    )
    parser.add_argument(
        "--bucket-records",
        type=int,
        default=4_000_000,
        help="records held in memory at once (bounds the peak memory)",
    )
    parser.add_argument(
        "--user-fraction",
        type=fraction,
        default=1.0,
        metavar="F",
        help="keep this seeded share of users, before the k-core (default 1: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --user-fraction (default 0)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing {name}.inter/.item (once the new ones are complete)",
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        stats = Converter(
            args.reviews,
            args.meta,
            args.out,
            args.name,
            args.min_rating,
            args.k_core,
            args.drop_untitled,
            args.max_description,
            args.bucket_records,
            args.user_fraction,
            args.seed,
            args.overwrite,
        ).run()
    except (ConversionError, OSError) as error:  # expected failures: one line, output untouched
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print_summary(stats)
    print(f"written: {os.path.join(args.out, args.name)}/{args.name}.inter and .item")
    return stats


def print_summary(stats):
    width = max(map(len, stats))
    for key, value in stats.items():
        shown = (
            f"{value:.6f}"
            if isinstance(value, float) and value < 1
            else (f"{value:,.0f}" if isinstance(value, float) else f"{value:,}")
        )
        print(f"{key:<{width}}  {shown}")
