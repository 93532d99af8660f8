"""RecBole 1.2.1's ``Config`` assigns ``np.float = np.float_`` (and ``complex_``, ``unicode_``),
aliases numpy 2.0 removed: building any config fails with an AttributeError. The removed aliases are
restored (to the types they named). Targets RecBole 1.2.1 with numpy >= 2; tested in
``tests/test_recbole_fixes.py``.
"""

import numpy as np

REMOVED_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}


def install():
    for alias, target in REMOVED_ALIASES.items():
        if alias not in np.__dict__:
            setattr(np, alias, getattr(np, target))
