"""RecBole 1.2.1's ``ensure_dir`` checks ``os.path.exists`` and then calls ``os.makedirs``: two
processes starting together (``torchrun``, two runs sharing ``saved/``) race, and the second fails
with FileExistsError. Each module that imported it gets ``os.makedirs(path, exist_ok=True)``
instead. Targets RecBole 1.2.1; tested in ``tests/test_distributed.py`` (``os.path.exists`` always
False).
"""

import importlib
import os

MODULES = (
    "recbole.utils.utils",
    "recbole.utils",
    "recbole.utils.logger",
    "recbole.data.utils",
    "recbole.trainer.trainer",
    "recbole.data.dataset.dataset",
)


def _ensure_dir(path):
    os.makedirs(path, exist_ok=True)


def install():
    for module in MODULES:
        importlib.import_module(module).ensure_dir = _ensure_dir
