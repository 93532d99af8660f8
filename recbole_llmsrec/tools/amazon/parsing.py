"""Reading Amazon Reviews lines: reviews and metadata of both releases, cleaned and validated
(a line that does not parse is skipped and counted, whatever its parser raises)."""

import ast
import gzip
import hashlib
import html
import json
import math
import os
import re
import warnings
import zlib

import numpy as np

RECORD = np.dtype(
    [("user", "<i4"), ("item", "<i4"), ("rating", "<f4"), ("time", "<f8"), ("line", "<i8")]
)
CHUNK_RECORDS = 1 << 16
TAGS = re.compile(r"<[^>]+>")
HASH_BYTES = 8  # 64-bit user hashes: uniform enough for any fraction, collisions irrelevant


class ConversionError(Exception):
    """An expected failure: one line for the user, no traceback; raised before the renames (output
    kept)."""


def user_draw(seed, user):
    """A user's uniform draw in [0, 1) from ``(seed, raw id)``: stable across runs, files and
    processes."""
    digest = hashlib.blake2b(f"{seed}:{user}".encode("utf-8"), digest_size=HASH_BYTES).digest()
    return int.from_bytes(digest, "big") / 2 ** (8 * HASH_BYTES)


def read_lines(path, counts):
    """The decoded lines of a gzipped or plain file (by magic bytes), counted in ``counts``: a
    non-UTF-8 byte costs its line only. A truncated gzip raises ConversionError (converting part
    silently is wrong)."""
    try:
        with open(path, "rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"
        stream = gzip.open(path, "rb") if gzipped else open(path, "rb")
    except OSError as error:
        raise ConversionError(f"cannot read {path}: {error.strerror or error}") from None
    read = undecodable = 0
    with stream:
        try:
            for read, raw in enumerate(stream, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    undecodable += 1
                    continue
                yield text[1:] if read == 1 and text.startswith("\ufeff") else text  # a BOM
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise ConversionError(
                f"{path}: truncated or corrupt gzip stream after {read:,} lines read ({error})"
            ) from None
        finally:
            counts.update(read=read, undecodable=undecodable)


def valid_id(value):
    """A non-empty printable string (no tab, line break, lone surrogate): it cannot shift a
    column."""
    return isinstance(value, str) and value != "" and value.isprintable()


def clean_text(value, max_chars=None):
    """Plain one-line text: lists joined, HTML tags and entities removed, whitespace collapsed."""
    if isinstance(value, list):
        value = " ".join(clean_text(v) for v in value if v)
    if value is None:
        return ""
    text = " ".join(html.unescape(TAGS.sub(" ", str(value))).split())
    return text[:max_chars].rstrip() if max_chars else text


def parse_review(line):
    """``(user, item, rating, seconds)`` of a review line of either release, or None if
    malformed."""
    try:
        review = json.loads(line)
        if not isinstance(review, dict):
            return None
        if "reviewerID" in review:  # 2018
            user, item = review["reviewerID"], review["asin"]
            rating, seconds = float(review["overall"]), float(review["unixReviewTime"])
        else:
            user, item = review["user_id"], review.get("parent_asin") or review["asin"]
            rating, seconds = float(review["rating"]), float(review["timestamp"]) / 1000.0
    except (ValueError, KeyError, TypeError, OverflowError):
        return None
    if valid_id(user) and valid_id(item) and math.isfinite(rating) and math.isfinite(seconds):
        return user, item, rating, seconds
    return None


def load_meta(line):
    """``(object, literal)``: the line as JSON, else (a dict-like line) as a Python literal, or
    None. ``ast.literal_eval`` never runs code; its warnings (odd escapes) are silenced."""
    try:
        return json.loads(line), False
    except ValueError:
        pass
    if not line.lstrip().startswith("{"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.literal_eval(line.strip()), True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def skipping_failures(parse, *args):
    """``parse(*args)``, or None (a malformed line, skipped and counted) whatever it raises: a line
    is untrusted input, and one exception type missed (a RecursionError from 100,000 nested ``[``,
    from ``json`` or from ``str`` of a title nested 900 deep) must not end the whole conversion."""
    try:
        return parse(*args)
    except Exception:  # noqa: BLE001 -- any failure to parse one line only skips that line
        return None


def parse_meta(line, max_description):
    """``(item, fields, literal)`` of a metadata line of either release, or None if malformed."""
    loaded = load_meta(line)
    if loaded is None or not isinstance(loaded[0], dict):
        return None
    meta, literal = loaded
    item = meta.get("parent_asin") or meta.get("asin")
    if not valid_id(item):
        return None
    categories = meta.get("categories") or meta.get("category") or []
    if isinstance(categories, str):
        categories = [categories]
    elif not isinstance(categories, (list, tuple)):
        categories = []
    if categories and isinstance(
        categories[0], (list, tuple)
    ):  # 2018 'categories': a list of paths
        categories = [c for path in categories if isinstance(path, (list, tuple)) for c in path]
    price = meta.get("price")
    try:
        price = (
            float(str(price).replace("$", "").replace(",", "")) if price not in (None, "") else None
        )
    except ValueError:
        price = None  # "None", ranges like "$5 - $9"
    if price is not None and not math.isfinite(price):
        price = None
    return (
        item,
        {
            "title": clean_text(meta.get("title")),
            "description": clean_text(meta.get("description"), max_description),
            "categories": " ".join(
                dict.fromkeys(clean_text(c).replace(" ", "_") for c in categories if clean_text(c))
            ),
            "price": price,
            "brand": clean_text(meta.get("brand") or meta.get("store")),
        },
        literal,
    )


def check_name(name):
    """A dataset name must be a plain file name: it names a folder under ``--out`` and the files in
    it."""
    separators = {"/", os.sep, os.altsep} - {None}
    if name in ("", ".", "..") or not name.isprintable() or any(sep in name for sep in separators):
        raise ValueError(f"dataset name must be a plain file name, got {name!r}")
    return name


def open_output(path):
    """An output table's file: a lone surrogate becomes '?', not an encoding error mid-run."""
    return open(path, "w", encoding="utf-8", errors="replace")


def sync(out):
    """Flush and fsync, so the rename never publishes a file whose data is not yet on disk."""
    out.flush()
    os.fsync(out.fileno())
