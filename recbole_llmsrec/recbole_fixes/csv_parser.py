"""RecBole 1.2.1 reads every atomic file with pandas' pure-Python parser (``engine="python"``): at
Amazon Books' 10 million interactions it holds every line as Python objects while it parses, about
0.3 GiB and 3 s per million rows, and keeps one Python string per token cell. pandas' C parser
reads the same files into the same DataFrame (cell for cell: token cells as the same strings,
floats through the same pandas number parser, whose default precision the Python parser uses too)
in a fifth of the time, and shares one string object among a column's repeated tokens. It is used
whenever ``field_separator`` is one character (the C parser's condition); other separators keep
RecBole's call. Targets RecBole 1.2.1;
tested in ``tests/test_recbole_fixes.py`` (both parsers give equal frames on every shipped file and
on files with quotes, empty cells, CRLF line ends and exponent floats).
"""

import pandas
import recbole.data.dataset.dataset as recbole_dataset_module


class PandasWithCParser:
    """The ``pandas`` module as RecBole's dataset module sees it, with ``read_csv`` on the C
    parser."""

    def __getattr__(self, name):
        return getattr(pandas, name)

    @staticmethod
    def read_csv(path, delimiter=None, engine=None, **options):
        if engine == "python" and isinstance(delimiter, str) and len(delimiter) == 1:
            engine = "c"
        return pandas.read_csv(path, delimiter=delimiter, engine=engine, **options)


def install():
    recbole_dataset_module.pd = PandasWithCParser()
