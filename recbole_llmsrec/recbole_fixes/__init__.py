"""Fixes for RecBole 1.2.1 on today's numpy, torch and pandas, and for the steps of it that made two
models see other data: one module per fix, each saying what RecBole does wrong, since which version
it is targeted and which test shows it fixed (README "RecBole 1.2.1 on today's stack").

``install()`` applies them all, once per process. It is the plugin's only change to other code, and
it is called explicitly: ``Config.__init__`` calls it first (every run, of RecBole's models too,
builds a ``Config`` before anything else). Importing this package changes nothing.
"""

from recbole_llmsrec.recbole_fixes import (
    anomaly_mode,
    checkpoint_loading,
    csv_parser,
    ensure_dir,
    item_rows,
    loader_indices,
    numpy_aliases,
    pickle_caches,
    repeatable_sampler,
    time_precision,
    trainer_ddp,
    warning_filters,
)

FIXES = (
    numpy_aliases,
    anomaly_mode,
    warning_filters,
    pickle_caches,
    checkpoint_loading,
    ensure_dir,
    trainer_ddp,
    item_rows,
    time_precision,
    csv_parser,
    loader_indices,
    repeatable_sampler,
)
_installed = False


def install():
    """Apply every fix of ``FIXES`` (once; later calls do nothing)."""
    global _installed
    if _installed:
        return
    for fix in FIXES:
        fix.install()
    _installed = True
