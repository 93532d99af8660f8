"""recbole-llmsrec: LLM-based sequential recommenders as a RecBole plugin.

Importing the package applies the RecBole 1.2.1 compatibility fixes (``recbole_llmsrec.compat``).
"""

from recbole_llmsrec import compat

compat.apply()

from recbole_llmsrec.config import Config  # noqa: E402
from recbole_llmsrec.quick_start import run_recbole  # noqa: E402
from recbole_llmsrec.utils import get_model, get_trainer  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Config", "get_model", "get_trainer", "run_recbole"]
