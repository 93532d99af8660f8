"""The atomic files of a dataset, checked before RecBole reads them (``check_atomic_files``), so
that a bad file ends in one error naming the file, the line when known, and the problem, not in a
pandas or RecBole traceback after minutes of work: an empty file, a header that is not
``name:type``, an ``.inter`` without its user or item column, a byte that is not in ``encoding``, a
field longer than the limit of the csv module RecBole's loader uses, a row with more (or fewer)
fields than its header (RecBole would shift the row's columns silently: a raw tab in a title).
"""

import csv
import os

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


class AtomicFileError(ValueError):
    """A dataset file RecBole cannot read correctly; the message names the file and the line."""


def _header(path, first_line, separator):
    if not first_line.strip():
        raise AtomicFileError(
            f"{path} is empty: an atomic file starts with a header line of "
            f"name:type fields ({', '.join(FIELD_TYPES)}) separated by tabs."
        )
    columns = first_line.rstrip("\r\n").split(separator)
    for column in columns:
        name, _, kind = column.partition(":")
        if not name or kind not in FIELD_TYPES:
            raise AtomicFileError(
                f"{path}, line 1: header field {column!r} is not name:type with a type "
                f"among {', '.join(FIELD_TYPES)}."
            )
    return [column.partition(":")[0] for column in columns]


def _check_rows(path, lines, fields, separator, limit):
    for number, line in enumerate(lines, 2):
        values = line.rstrip("\r\n").split(separator)
        if len(values) != fields and line.strip():
            raise AtomicFileError(
                f"{path}, line {number}: {len(values)} fields where the header has {fields} (a "
                "value "
                "holding the field separator, e.g. a raw tab in a title?). Remove it from the "
                "value; "
                "RecBole would shift the row's columns."
            )
        longest = max(map(len, values))
        if longest > limit:
            raise AtomicFileError(
                f"{path}, line {number}: a field of {longest} characters, more than the "
                f"{limit} RecBole's loader (the csv module) accepts. Shorten it."
            )


def _check_file(path, config, required):
    separator, encoding = config["field_separator"], config["encoding"] or "utf-8"  # pandas default
    limit = csv.field_size_limit()
    with open(path, encoding=encoding, newline="\n") as lines:
        try:
            columns = _header(path, next(lines, ""), separator)
            missing = [field for field in required if field not in columns]
            if missing:
                raise AtomicFileError(
                    f"{path}, line 1: no {missing[0]} column (the header has "
                    f"{', '.join(columns)}); USER_ID_FIELD/ITEM_ID_FIELD name them."
                )
            _check_rows(path, lines, len(columns), separator, limit)
        except UnicodeDecodeError as error:
            raise AtomicFileError(
                f"{path}: {_decode_error_line(path, encoding)} is not valid {encoding} "
                f"({error.reason} at byte {error.start} of its block); fix the file "
                "or set encoding to the one it is written in."
            ) from None


def _decode_error_line(path, encoding):
    with open(path, "rb") as raw:
        for number, line in enumerate(raw, 1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                return f"line {number}"
    return "a line"


def check_atomic_files(config):
    """Check the ``{data_path}/{dataset}.inter/.item/.user`` files RecBole will read (they exist and
    ``load_col`` names them, or is unset) for the problems above."""
    folder, name = config["data_path"], config["dataset"]
    required = {
        "inter": [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]],
        "item": [config["ITEM_ID_FIELD"]],
        "user": [config["USER_ID_FIELD"]],
    }
    loaded = config["load_col"]
    for suffix in ("inter", "item", "user"):
        path = os.path.join(folder, f"{name}.{suffix}")
        if os.path.isfile(path) and (loaded is None or suffix in loaded):  # the files RecBole reads
            _check_file(path, config, [field for field in required[suffix] if field])
