"""signals -> a clean stop: Ctrl-C or SIGTERM drops the work in flight, the run checkpoints every completed step and
stops; under MPI every rank agrees on when."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from ..distributed import World

class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the run after it saved a checkpoint; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StepAbandoned(Exception):
    """Raised inside a step's gradient (or a validation) when a stop is requested: that work is dropped."""


class StopRequest:
    """Ctrl-C or SIGTERM during training: drop the step in flight (its gradient, or a validation, is abandoned
    at once; an optimizer update or a checkpoint being written is finished first), checkpoint every completed
    step, then stop. A second signal stops at once (the last checkpoint stays). Under MPI every rank gets the
    signal; only the one that `announces` (rank 0) says so."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announces: bool = True):
        self.requested, self.signum, self.in_step, self.announces = False, None, False, announces
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in self.SIGNALS}
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        if self.announces:
            print(f"\nstopping ({signal.Signals(signum).name}): saving a checkpoint (again to stop at once)",
                  file=sys.stderr)
        if self.in_step:
            self.in_step = False
            raise StepAbandoned

    def agree(self, world: World) -> bool:
        """Whether any rank was asked to stop; every rank gets the same answer and, if so, the same signal (the
        highest-numbered one any rank got), so that all of them stop at the same point and exit alike."""
        signum = world.largest(self.signum or 0)  # a signal arriving after this is seen at the next agreement
        if signum:
            self.requested, self.signum = True, signum
        return bool(signum)

    @contextlib.contextmanager
    def abandonable(self):
        """Work in this block may be dropped half-way by a stop request (it changes nothing it cannot redo)."""
        self.in_step = not self.requested
        try:
            if self.requested:
                raise StepAbandoned
            yield
        finally:
            self.in_step = False

    def __exit__(self, *exc):
        for s, previous in self.previous.items():
            signal.signal(s, previous)


def agreed_rounds(items: list, rounds: int, go_on: Callable[[], bool] | None = None) -> Iterator:
    """`items` one at a time over `rounds` rounds (the most any rank has: under MPI the ranks' shares differ
    by one at most), asking `go_on` before every round after the first, so that every rank asks it as often
    (it is a collective under MPI); a False drops the work (StepAbandoned)."""
    assert rounds >= len(items), f"{len(items)} items in {rounds} rounds"
    for i in range(rounds):
        if i > 0 and go_on is not None and not go_on():
            raise StepAbandoned
        if i < len(items):
            yield items[i]
