"""recbole-llmsrec: LLM-based sequential recommenders as a RecBole plugin.

Importing the package changes nothing and loads nothing heavy: ``Config``, ``run_recbole``,
``get_model`` and ``get_trainer`` are imported on first use. The RecBole 1.2.1 fixes
(``recbole_llmsrec.recbole_fixes``) are installed by one explicit call, ``install()``, which every
``Config`` makes when it is built (docs/architecture.md).
"""

import importlib

__version__ = "0.1.0"
__all__ = ["Config", "get_model", "get_trainer", "install", "run_recbole"]

_PUBLIC = {
    "Config": "recbole_llmsrec.config",
    "get_model": "recbole_llmsrec.registry",
    "get_trainer": "recbole_llmsrec.training.trainer",
    "install": "recbole_llmsrec.recbole_fixes",
    "run_recbole": "recbole_llmsrec.quick_start",
}


def __getattr__(name):
    """The public names, imported when first asked for (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'recbole_llmsrec' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
