"""Moving arrays between processes: the communicator of synchronous data-parallel training.

Every rank holds the whole parameters and computes the gradient of its part of each
global batch, weighted so that the ranks' parts add up to the batch's gradient,
g = sum_r g_r; one allreduce of one flat buffer per step forms that sum on every rank,
and every rank applies the same update (ChainerMN, Horovod).

    comm = connect()                      # None unless launched by mpiexec with > 1 rank
    fit(model, params, X, Y, ..., comm=comm)

Nothing here imports mpi4py until :func:`connect` finds an MPI launch (or is told to
insist). Buffers move by their kind, the transport chosen once per kind and logged:

    numpy             mpi4py on the host memory itself (no copy)
    cupy              NCCL (``cupy.cuda.nccl``) when CuPy has it, else CUDA-aware MPI
                      (mpi4py on device pointers) when the MPI library reports it, else
                      staged through a host copy
    anything else     staged through a host copy (array-api-strict: tests)

The ranks agree on the transport (the least capable rank's choice wins), since a
collective must be the same call on every rank.
"""

from __future__ import annotations

import logging
import math
import os
import sys

import numpy as np
from array_api_compat import array_namespace, device, is_cupy_array, is_numpy_array

from backends import env_device
from backends.errors import ConfigError, DeviceUnavailableError

__all__ = [
    "LAUNCH_VARIABLES",
    "Communicator",
    "active",
    "connect",
    "launched_size",
    "on_root",
    "rank_device",
]

logger = logging.getLogger("handgrad")

# The world size as MPI launchers export it to each rank: MPICH/Intel MPI (and srun with
# PMI), Open MPI, MVAPICH.
LAUNCH_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# The rank's index among the ranks of its node, as the launchers export it.
LOCAL_RANK_VARIABLES = (
    "MPI_LOCALRANKID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MV2_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
)
MPI_EXTRA = "pip install -e '.[mpi]' in the handgrad checkout (mpi4py and an MPICH wheel)"

_world: dict = {}  # the connected Communicator, under "comm"


def on_root(comm, make):
    """``make()`` on rank 0 of ``comm`` (or the only process, ``comm`` None), its result
    sent to every rank: one rank does the work (a folder made, a pass over a file)."""
    if comm is None:
        return make()
    return comm.broadcast_object(make() if comm.rank == 0 else None)


def launched_size() -> int:
    """The world size an MPI launcher announced in the environment; 0 when not launched."""
    for name in LAUNCH_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def active() -> Communicator | None:
    """The communicator :func:`connect` made in this process, or None (never imports MPI)."""
    return _world.get("comm")


def connect(*, required: bool = False) -> Communicator | None:
    """The world communicator when this process was launched by an MPI launcher with more
    than one rank (or with any number when ``required``), else None. Logs the world size
    once. Raises DeviceUnavailableError when mpi4py is missing and ConfigError when
    ``required`` but no launcher started this process."""
    if "comm" in _world:
        return _world["comm"]
    size = launched_size()
    if size <= 1 and not required:
        return None
    if size == 0:
        raise ConfigError(
            "distributed training needs an MPI launcher, but this process was not started by "
            "one; run it as mpiexec -n P python ..., or train in one process",
            setting="distributed",
        )
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DeviceUnavailableError(
            f"distributed training needs mpi4py ({exc}); install it with {MPI_EXTRA}, or "
            "train in one process",
            setting="distributed",
        ) from None
    comm = Communicator(MPI.COMM_WORLD, MPI)
    _world["comm"] = comm
    if comm.rank == 0:
        logger.info(
            "distributed: %d ranks, data-parallel (one gradient allreduce per step); %s",
            comm.size,
            " ".join(MPI.Get_library_version().split()[:3]),
        )
    return comm


def rank_device(spec: str | None, local_rank: int, cuda_count: int) -> str | None:
    """The device string of a rank: ``cuda`` and ``auto`` (with ``cuda_count`` GPUs
    usable) mean ``cuda:<local_rank>``, one GPU per rank of a node; any other string,
    and ``auto`` without a GPU, stays as it is. None: ``$HANDGRAD_DEVICE`` or ``auto``."""
    spec = (spec or env_device() or "auto").strip().lower()
    if spec == "cuda" or (spec == "auto" and cuda_count):
        return f"cuda:{local_rank}"
    return spec


class Communicator:
    """The ranks of one MPI communicator: ``rank``, ``size``, ``local_rank`` (the rank's
    index on its node, which picks its GPU), sums and broadcasts of arrays in place."""

    def __init__(self, comm, mpi):
        self._comm, self._mpi = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.local_rank = _local_rank(comm, mpi)
        self._transports: dict[str, _Transport] = {}
        self._flat: dict[tuple, _Flat] = {}

    def __repr__(self) -> str:
        return f"Communicator(rank {self.rank} of {self.size})"

    def allreduce_sum(self, buffer):
        """buffer <- sum over ranks of buffer, in place (a 1-D array); returns it."""
        self._transport(buffer).allreduce(buffer)
        return buffer

    def broadcast(self, buffer, root: int = 0):
        """buffer <- rank ``root``'s buffer, in place (a 1-D array); returns it."""
        self._transport(buffer).broadcast(buffer, root)
        return buffer

    def sum_arrays(self, arrays: dict | None, *, like: dict, weight: float = 1.0) -> dict:
        """{k: sum over ranks r of weight_r * arrays_r[k]} for every k of ``like``, by one
        allreduce of one flat buffer (``arrays`` None: this rank adds zeros). The results
        are views of that buffer, valid until the next call with the same layout."""
        flat = self._layout(like)
        flat.pack(arrays, weight)
        self.allreduce_sum(flat.buffer)
        return flat.unpack()

    def broadcast_arrays(self, arrays: dict, root: int = 0) -> dict:
        """arrays[k][...] <- rank ``root``'s arrays[k] for every k, in place, by one
        broadcast of one flat buffer; returns ``arrays``."""
        flat = self._layout(arrays)
        flat.pack(arrays, 1.0)
        self.broadcast(flat.buffer, root)
        for k, v in flat.unpack().items():
            arrays[k][...] = v
        return arrays

    def broadcast_object(self, value, root: int = 0):
        """Rank ``root``'s small picklable Python value (a run folder name), on every rank."""
        return self._comm.bcast(value, root=root)

    def lost_rank(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the MPI library's report that a communication failed because
        another rank is gone (killed, crashed): an MPI error of class ERR_OTHER (MPICH's
        "Other MPI error" of a broken connection) or of the fault-tolerance classes
        (ERR_PROC_FAILED, ...). A misused call (a buffer of the wrong size, type or count)
        has a class of its own, and is a bug."""
        mpi = self._mpi
        if not isinstance(exc, mpi.Exception):
            return False
        names = ("ERR_OTHER", "ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_PROC_ABORTED",
                 "ERR_REVOKED")  # fmt: skip
        lost = {getattr(mpi, n) for n in names if hasattr(mpi, n)}
        try:
            return exc.Get_error_class() in lost
        except Exception:  # the library is past saying
            return False

    def abort(self, status: int) -> None:
        """End every rank now with exit status ``status`` (MPI_Abort): the way out when
        one rank fails while the others wait in a collective."""
        sys.stdout.flush()
        sys.stderr.flush()
        self._comm.Abort(status)

    def _layout(self, like: dict) -> _Flat:
        first = next(iter(like.values()))
        key = (tuple((k, tuple(a.shape)) for k, a in like.items()), str(first.dtype),
               str(device(first)))  # fmt: skip
        if key not in self._flat:
            self._flat[key] = _Flat(like)
        return self._flat[key]

    def _transport(self, buffer) -> _Transport:
        kind = "numpy" if is_numpy_array(buffer) else "cupy" if is_cupy_array(buffer) else "other"
        if kind not in self._transports:
            self._transports[kind] = _choose_transport(kind, self._comm, self._mpi)
            logger.info("allreduce of %s buffers: %s", kind, self._transports[kind].name)
        return self._transports[kind]


def _local_rank(comm, mpi) -> int:
    """The launcher's local-rank variable, else the rank among those sharing its node."""
    for name in LOCAL_RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    node = comm.Split_type(mpi.COMM_TYPE_SHARED)
    try:
        return node.Get_rank()
    finally:
        node.Free()


class _Flat:
    """Arrays of one dtype and device laid end to end in one 1-D buffer."""

    def __init__(self, like: dict):
        first = next(iter(like.values()))
        self.xp = array_namespace(first)
        self.slots, offset = {}, 0
        for k, a in like.items():
            size = math.prod(a.shape)
            self.slots[k] = (offset, offset + size, tuple(a.shape))
            offset += size
        self.buffer = self.xp.empty((offset,), dtype=first.dtype, device=device(first))

    def pack(self, arrays: dict | None, weight: float) -> None:
        """buffer[slot k] <- weight * ravel(arrays[k]); zeros when ``arrays`` is None."""
        xp = self.xp
        if arrays is None:
            self.buffer[...] = 0.0
            return
        for k, (start, stop, _) in self.slots.items():
            flat = xp.reshape(arrays[k], (-1,))
            self.buffer[start:stop] = flat if weight == 1.0 else flat * weight

    def unpack(self) -> dict:
        """{k: slot k of the buffer in its array's shape}."""
        return {k: self.xp.reshape(self.buffer[a:b], s) for k, (a, b, s) in self.slots.items()}


class _Transport:
    """Allreduce (sum) and broadcast of whole 1-D buffers of one kind, in place."""

    name = ""

    def allreduce(self, buffer) -> None:
        raise NotImplementedError

    def broadcast(self, buffer, root: int) -> None:
        raise NotImplementedError


class _MPI(_Transport):
    """mpi4py on the buffer's own memory: host NumPy arrays, or CuPy arrays with a
    CUDA-aware MPI (``before`` then waits for the queued GPU work that writes them)."""

    def __init__(self, comm, mpi, name: str, before=None):
        self.comm, self.mpi, self.name, self.before = comm, mpi, name, before

    def allreduce(self, buffer) -> None:
        if self.before is not None:
            self.before()
        self.comm.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)

    def broadcast(self, buffer, root: int) -> None:
        if self.before is not None:
            self.before()
        self.comm.Bcast(buffer, root=root)


class _Staged(_Transport):
    """Through a host copy: device -> host, MPI on the host, host -> device."""

    def __init__(self, host: _MPI, name: str):
        self.host, self.name = host, name

    def _through_host(self, buffer, move) -> None:
        from backends import to_numpy

        host = to_numpy(buffer)
        move(host)
        xp = array_namespace(buffer)
        buffer[...] = xp.asarray(host, dtype=buffer.dtype, device=device(buffer))

    def allreduce(self, buffer) -> None:
        self._through_host(buffer, self.host.allreduce)

    def broadcast(self, buffer, root: int) -> None:
        self._through_host(buffer, lambda host: self.host.broadcast(host, root))


class _NCCL(_Transport):
    """NCCL on the current CUDA stream (``cupy.cuda.nccl``); its id is broadcast by MPI."""

    name = "NCCL (cupy.cuda.nccl) on the GPU"

    def __init__(self, comm):
        import cupy
        from cupy.cuda import nccl

        self.cupy, self.nccl = cupy, nccl
        uid = comm.bcast(nccl.get_unique_id() if comm.Get_rank() == 0 else None, root=0)
        self.nc = nccl.NcclCommunicator(comm.Get_size(), uid, comm.Get_rank())

    def _args(self, buffer):
        dtype = self.nccl.NCCL_FLOAT64 if buffer.dtype == np.float64 else self.nccl.NCCL_FLOAT32
        return buffer.data.ptr, buffer.size, dtype, self.cupy.cuda.get_current_stream().ptr

    def allreduce(self, buffer) -> None:
        ptr, count, dtype, stream = self._args(buffer)
        self.nc.allReduce(ptr, ptr, count, dtype, self.nccl.NCCL_SUM, stream)

    def broadcast(self, buffer, root: int) -> None:
        ptr, count, dtype, stream = self._args(buffer)
        self.nc.bcast(ptr, count, dtype, root, stream)


CUPY_PREFERENCE = ("nccl", "cuda-aware MPI", "staged")


def _cupy_choice(mpi) -> int:
    """This rank's best CuPy transport, as an index into :data:`CUPY_PREFERENCE`."""
    try:
        from cupy.cuda import nccl

        if getattr(nccl, "available", True) and hasattr(nccl, "NcclCommunicator"):
            return 0
    except ImportError:
        pass
    return 1 if _cuda_aware(mpi) else 2


def _cuda_aware(mpi) -> bool:
    """Whether the MPI library says it takes device pointers."""
    query = getattr(mpi, "Query_cuda_support", None)
    return bool(query is not None and query())


def _gpu_placement() -> tuple[str, str]:
    """(host name, PCI bus id of the current CUDA device): where this rank computes."""
    import socket

    import cupy

    return socket.gethostname(), cupy.cuda.Device().pci_bus_id


def shares_a_gpu(placements: list) -> bool:
    """Whether two ranks' placements (:func:`_gpu_placement`, one per rank) name the same
    GPU: NCCL refuses that ("Duplicate GPU detected"), so the ranks use MPI instead."""
    return len(set(placements)) < len(placements)


def _choose_transport(kind: str, comm, mpi) -> _Transport:
    """The transport for buffers of ``kind``, the same on every rank (a collective call)."""
    host = _MPI(comm, mpi, "MPI on host memory")
    if kind == "numpy":
        return host
    if kind == "other":
        return _Staged(host, "staged through host memory (MPI on a host copy)")
    choice = comm.allreduce(_cupy_choice(mpi), op=mpi.MAX)
    if choice == 0 and shares_a_gpu(comm.allgather(_gpu_placement())):
        choice = 1 if _cuda_aware(mpi) else 2  # NCCL refuses two ranks on one GPU
    if choice == 0:
        return _NCCL(comm)
    if choice == 1:
        import cupy

        def sync():
            cupy.cuda.get_current_stream().synchronize()

        return _MPI(comm, mpi, "CUDA-aware MPI on device memory", before=sync)
    return _Staged(host, "staged through host memory (no NCCL, no CUDA-aware MPI)")
