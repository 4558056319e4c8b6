"""values -> yes or no: the questions every argument check asks, answered once (the library's edges raise
their own errors, naming the argument; these only classify).

    >>> is_whole(3), is_whole(True), is_whole(3.0), is_real(2.5), is_real(False)
    (True, False, False, True, False)
"""

from __future__ import annotations

import numpy as np


def is_whole(v) -> bool:
    """An integer, Python's or NumPy's, and not a bool (True is not a count, though Python calls it 1)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(v) -> bool:
    """A real number, Python's or NumPy's, and not a bool (finite or not: the caller says which it needs)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
