"""N processes -> one training step: data parallelism over MPI (`mpiexec -n N python -m minigpt2.train ...`).

Every rank draws the step's whole batch exactly as one process would (the same seeded generator, the same
task-file order), computes the gradient of its share of the rows, and an all-reduce sums the shares:

    rank r:  g_r = sum over its rows' scored tokens of d(-log P)/d params / n,   n = the step's scored tokens
    all:     g = g_0 + ... + g_{N-1}                                  (MPI_Allreduce, SUM, in place)

so the step's gradient is the mean over all its scored tokens, as in one process, up to the order of float32
additions; then every rank takes the same AdamW step and the ranks' weights stay identical. 4 bytes per
parameter cross the wire per step (498 MB at 124M). Rank 0 alone prints, logs and writes checkpoints.

mpi4py is imported only when a run is launched under an MPI launcher (the launcher sets PMI_SIZE, or
OMPI_COMM_WORLD_SIZE for Open MPI); otherwise, and for `import minigpt2`, there is one process and nothing
here touches MPI.
"""

from __future__ import annotations

import os

import numpy as np

SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


class World:
    """The processes of a run: `rank` of `size`; one process unless launched under MPI."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1

    @property
    def is_main(self) -> bool:
        """Whether this process prints, logs and writes (rank 0)."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n rows: sizes differ by at most one, earlier ranks take the extra."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum_(self, arrays: list[np.ndarray]) -> None:
        """Replace each (contiguous) array by its sum over the ranks, in place: no copy of the gradient."""
        if self.comm is None:
            return
        from mpi4py import MPI

        for a in arrays:
            assert a.flags.c_contiguous, f"an all-reduce needs a contiguous array, got strides {a.strides}"
            self.comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (every rank gets the same answer)."""
        if self.comm is None:
            return flag
        from mpi4py import MPI

        return bool(self.comm.allreduce(int(flag), op=MPI.MAX))

    def broadcast(self, value):
        """Rank 0's `value`, on every rank."""
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def abort(self, code: int) -> None:
        """End every rank of the job (a rank that failed must not leave the others waiting in an all-reduce)."""
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)


def launched_size() -> int:
    """The number of processes the MPI launcher started (1 when not launched under MPI)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def world() -> World:
    """The run's World: MPI's COMM_WORLD when launched under mpiexec with more than one process, else one."""
    if launched_size() <= 1:
        return World()
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError("this run was started by an MPI launcher but mpi4py is not installed: "
                           "pip install 'minigpt2[mpi]'") from None
    return World(MPI.COMM_WORLD)
