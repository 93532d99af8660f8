"""RecBole 1.2.1's ``sequential_recommender/sine.py`` calls
``torch.autograd.set_detect_anomaly(True)`` when imported, which slows every backward of every model
in the process several-fold. The package is imported once here, then anomaly detection is switched
off. Targets RecBole 1.2.1 (any torch); tested in ``tests/test_recbole_fixes.py``.
"""

import importlib

import torch


def install():
    importlib.import_module("recbole.model.sequential_recommender")  # runs sine.py's switch once
    torch.autograd.set_detect_anomaly(False)
