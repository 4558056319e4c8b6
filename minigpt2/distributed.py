"""N processes -> one training step: data parallelism over MPI (`mpiexec -n N python -m minigpt2.train ...`).

Every rank draws the step's whole batch exactly as one process would (the same seeded generator, the same
task-file order) and computes the gradient of its share of the rows, already divided by the step's scored
tokens n. Then, as llm.c does it (ZeRO stage 1), each rank owns a share of every tensor's rows:

    rank r:  g_r = sum over its rows' scored tokens of d(-log P)/d params / n
    rank r:  its rows of g = g_0 + ... + g_{N-1}              (MPI_Reduce_scatter, SUM, per tensor)
    rank r:  clip by the global norm (the ranks' sums of squares added), AdamW on its rows alone: it keeps
             the moments m, v of those rows only
    all:     every rank's updated rows to every rank          (MPI_Allgatherv, in place, per tensor)

so the step is the one-process step up to the order of float32 additions, the ranks' weights stay identical,
each rank does 1/N of the optimizer's work and holds 1/N of its state, and 4 bytes per parameter cross the
wire per step (2 x 4 x (N-1)/N: 498 MB at 124M for two ranks, as an all-reduce would). Rank 0 alone
prints, logs and writes checkpoints (the moments gathered to it first, so the files are a one-process run's).

mpi4py is imported only when a run is launched under an MPI launcher (the launcher sets PMI_SIZE, or
OMPI_COMM_WORLD_SIZE for Open MPI); otherwise, and for `import minigpt2`, there is one process and nothing
here touches MPI.
"""

from __future__ import annotations

import os

import numpy as np

SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def share_of(n: int, rank: int, size: int) -> slice:
    """Rank `rank`'s contiguous share of n rows among `size` ranks: sizes differ by at most one, earlier ranks
    take the extra."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class World:
    """The processes of a run: `rank` of `size`; one process unless launched under MPI."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.local_size = self.size if comm is None else on_this_machine(comm)  # this machine's ranks

    @property
    def is_main(self) -> bool:
        """Whether this process prints, logs and writes (rank 0)."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n rows (`share_of`)."""
        return share_of(n, self.rank, self.size)

    def rows(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This rank's share of the rows (leading axis) of every array, as views: the part of the model whose
        optimizer state this rank keeps and updates (ZeRO stage 1). All of every array in one process."""
        return {k: a[self.share(len(a))] for k, a in arrays.items()}

    def sum_rows(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each array summed over the ranks, this rank's rows of the sum only (one MPI_Reduce_scatter per array:
        half the traffic of an all-reduce; `share_rows_` is the other half)."""
        if self.comm is None:
            return arrays
        from mpi4py import MPI

        mine = {}
        for k, a in arrays.items():
            assert a.flags.c_contiguous, f"{k}: a reduce-scatter needs a contiguous array, got strides {a.strides}"
            mine[k] = np.empty_like(a[self.share(len(a))])
            self.comm.Reduce_scatter(a, mine[k], recvcounts=self.row_counts(a.shape)[0], op=MPI.SUM)
        return mine

    def share_rows_(self, arrays: dict[str, np.ndarray]) -> None:
        """Every rank's rows of every array to every rank, in place (one all-gather per array)."""
        if self.comm is None:
            return
        from mpi4py import MPI

        for a in arrays.values():
            counts, offsets = self.row_counts(a.shape)
            if len(set(counts)) == 1:
                self.comm.Allgather(MPI.IN_PLACE, a)  # equal shares: MPICH's faster regular all-gather
            else:
                self.comm.Allgatherv(MPI.IN_PLACE, [a, (counts, offsets)])

    def gather_rows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
        """The whole array of `shape` whose rows the ranks hold, on rank 0 (MPI_Gatherv); None on the others."""
        if self.comm is None:
            return rows
        whole = np.empty(shape, dtype=rows.dtype) if self.is_main else None
        self.comm.Gatherv(np.ascontiguousarray(rows), [whole, self.row_counts(shape)] if self.is_main else None, root=0)
        return whole

    def row_counts(self, shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """(elements, offsets) of each rank's rows of an array of `shape`, in rank order."""
        per_row = int(np.prod(shape[1:], dtype=np.int64))
        shares = [share_of(shape[0], r, self.size) for r in range(self.size)]
        return [(s.stop - s.start) * per_row for s in shares], [s.start * per_row for s in shares]

    def sum_float(self, x: float) -> float:
        """`x` summed over the ranks (every rank gets the sum)."""
        if self.comm is None:
            return x
        from mpi4py import MPI

        return float(self.comm.allreduce(x, op=MPI.SUM))

    def largest(self, n: int) -> int:
        """The largest of the ranks' `n` (every rank gets it)."""
        if self.comm is None:
            return n
        from mpi4py import MPI

        return int(self.comm.allreduce(int(n), op=MPI.MAX))

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (every rank gets the same answer)."""
        return bool(self.largest(int(flag)))

    def abort(self, code: int) -> None:
        """End every rank of the job (a rank that failed must not leave the others waiting in an all-reduce)."""
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)


def on_this_machine(comm) -> int:
    """How many of `comm`'s ranks share this machine's memory (MPI_COMM_TYPE_SHARED)."""
    from mpi4py import MPI

    return comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()


def launched_size() -> int:
    """The number of processes the MPI launcher started (1 when not launched under MPI)."""
    return launcher_says(SIZE_VARIABLES, 1)


def launched_rank() -> int:
    """This process's rank as the MPI launcher numbered it (0 when not launched under MPI)."""
    return launcher_says(RANK_VARIABLES, 0)


def launcher_says(names: tuple[str, ...], default: int) -> int:
    """The first of the environment variables `names` that holds a number (MPICH, Open MPI, MVAPICH set them)."""
    for name in names:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return default


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
