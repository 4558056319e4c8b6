"""Textbook or tuned: the one place where the choice is made.

Every equation is written once, in its textbook form, in ops, model, backward and optim. A few of them have a
tuned form in fast.py that computes the same numbers faster (tested equal in tests/test_fast.py). The textbook
function is marked `@tunable`; fast.py registers its replacement with `@tunes(ops.gelu)`. A call runs the
tuned form when one is registered, unless inside `with minigpt2.reference_mode():`, which runs the textbook
forms everywhere, so that a debugger steps through the code a learner reads.

The textbook modules import this one and never fast.py; fast.py imports them (and calls `f.textbook` where
it runs a textbook piece itself). The package imports fast.py first thing, so the tuned forms are in place
whatever module a user imports.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

_tuned_forms: dict[str, Callable] = {}  # "ops.gelu" -> its tuned form
_reference = False


def tunable(textbook: Callable) -> Callable:
    """Mark `textbook` as having a tuned form: calls to it run the tuned form if one is registered and
    reference mode is off. The textbook function stays reachable as `.textbook`."""
    key = f"{textbook.__module__.rsplit('.', 1)[-1]}.{textbook.__qualname__}"

    @functools.wraps(textbook)
    def choose(*args, **kwargs):
        form = textbook if _reference else _tuned_forms.get(key, textbook)
        return form(*args, **kwargs)

    choose.textbook, choose.key = textbook, key
    return choose


def tunes(textbook: Callable) -> Callable[[Callable], Callable]:
    """`@tunes(ops.gelu)` above a function of fast.py registers it as ops.gelu's tuned form."""

    def register(tuned: Callable) -> Callable:
        _tuned_forms[textbook.key] = tuned
        return tuned

    return register


def tuned() -> bool:
    """Whether tuned forms run (the default), rather than the textbook ones."""
    return not _reference


@contextlib.contextmanager
def reference_mode():
    """Run the textbook forms of every equation inside this block (slower; the same numbers within float32
    rounding). `with minigpt2.reference_mode(): logits = model(ids)`."""
    global _reference
    before, _reference = _reference, True
    try:
        yield
    finally:
        _reference = before
