"""Amazon Reviews (2018 or 2023 release) to RecBole atomic files with item text.

    python -m recbole_llmsrec.tools.amazon REVIEWS META --out dataset --name Movies_and_TV

Formats, steps, options and guarantees (all-or-nothing output, skipped lines counted): README
"Amazon Reviews datasets". Memory is bounded by users and items (reviews streamed to per-user
buckets).
"""

from recbole_llmsrec.tools.amazon.cli import main
from recbole_llmsrec.tools.amazon.converter import Converter
from recbole_llmsrec.tools.amazon.parsing import ConversionError, user_draw

__all__ = ["ConversionError", "Converter", "main", "user_draw"]
