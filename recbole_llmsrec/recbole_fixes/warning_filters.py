"""RecBole 1.2.1 warns on every run under pandas 2.x and torch >= 2.4 (chained assignment,
``Series.agg(len)``, ``torch.cuda.amp``): noise that hides the plugin's own warnings. Exactly these
messages, from RecBole's modules only, are ignored (``setup.cfg`` lists the same for pytest, which
resets filters per test). Targets RecBole 1.2.1 with pandas 2.x and torch >= 2.4; tested in
``tests/test_recbole_fixes.py``.
"""

import warnings

RECBOLE_NOISE = (
    "A value is trying to be set on a copy",
    r"`torch\.cuda\.amp\.",
    r"using <built-in function len> in Series\.agg",
)


def install():
    for message in RECBOLE_NOISE:
        warnings.filterwarnings(
            "ignore", message=message, category=FutureWarning, module=r"recbole\."
        )
