"""Data-parallel runs under ``torchrun``: latents and images sharded by batch over the ranks.

``torchrun --nproc-per-node K -m gan_probe loglik ...`` starts K processes with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`setup` joins them in one
process group (gloo for CPU work; on CUDA, NCCL for tensors and gloo for the
small Python objects exchanged here) and gives each rank its own GPU,
``cuda:LOCAL_RANK``. Without those variables (or with one process) nothing
changes: world size 1, no process group.

Sharding (docs/design.md §8.8): the work is cut into the same ``--batch-size``
chunks a single process runs, and chunk i goes to rank i mod K
(:func:`map_batches`). Every chunk is computed exactly as in one process (its
random streams are seeded by latent index), and the chunks are gathered back
in order on every rank, so every figure is bit-identical for any world size.
A chunk function that itself calls :func:`map_batches` runs it locally: only
the outermost level is sharded.

Failures (docs/design.md §8.8): every exchange is an all-gather of a tagged
message. A rank that fails sends one ``fail`` message in its next exchange
(:func:`announce_failure`) instead of its data; every rank that receives it
stops with :class:`RankFailure` and exchanges nothing more, so all ranks agree
on who failed and exit 1 (128 + N when every failure was a signal), rank 0
printing the one line and nothing being written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from gan_probe import interrupt
from gan_probe.errors import GanProbeError, first_line

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: ``rank`` of ``size``, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    group: Any = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the report and files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> dict[str, Any]:
        """The report's ``world`` block."""
        return {"size": self.size, "backend": self.backend}


SINGLE = World()
_world = SINGLE
_local_depth = 0
#: whether this process joined a torchrun group (it then ends by os._exit, see :func:`joined`)
_joined = False
#: (items, chunk size) of the sharded calls that left a rank without a chunk (a note on rank 0)
_idle: list[tuple[int, int]] = []


def current() -> World:
    """The world this process runs in (world size 1 unless :func:`setup` joined a torchrun group)."""
    return _world


class RankFailure(GanProbeError):
    """A rank failed: every rank stops with this (and exchanges nothing more), exit ``code``."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def launched() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from the variables torchrun sets; None outside torchrun."""
    names = ("RANK", "WORLD_SIZE")
    if not all(n in os.environ for n in names):
        return None
    try:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise GanProbeError(
            f"RANK={os.environ['RANK']!r}, WORLD_SIZE={os.environ['WORLD_SIZE']!r}: not integers "
            "(launch with torchrun, or unset them)"
        ) from None
    if size < 1 or not 0 <= rank < size:
        raise GanProbeError(f"RANK={rank} is not in 0..WORLD_SIZE-1 = {size - 1} (launch with torchrun)")
    return rank, size, local


def local_device(device: torch.device, local_rank: int) -> torch.device:
    """A rank's device: ``cuda`` (or ``auto`` resolved to it) becomes ``cuda:LOCAL_RANK``; an explicit index stays."""
    if device.type != "cuda" or device.index not in (None, 0):
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise GanProbeError(
            f"local rank {local_rank} has no GPU of its own: this machine has {count}; start at most {count} "
            "processes per machine (--nproc-per-node)"
        )
    return torch.device("cuda", local_rank)


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the torchrun process group (when launched with more than one process); the rank's device."""
    global _world
    where = launched()
    if where is None or where[1] == 1:
        _world = SINGLE
        return SINGLE, device
    rank, size, local = where
    import torch.distributed as dist

    if not dist.is_available():
        raise GanProbeError("this torch build has no torch.distributed: run without torchrun")
    device = local_device(device, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"  # object exchanges go through gloo (on the CPU), tensors through NCCL
    else:
        backend = "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, rank=rank, world_size=size)
        except Exception as exc:  # noqa: BLE001 - a rendezvous failure is a one-line error
            first = first_line(exc)
            raise GanProbeError(f"rank {rank}: cannot join the torchrun process group ({backend}): {first}") from None
    global _joined
    _world = World(rank, size, local, backend, dist.group.WORLD)
    _joined = True
    return _world, device


def joined() -> bool:
    """Whether this process took part in a torchrun group. Such a process ends by ``os._exit`` after
    flushing its output (``gan_probe.__main__``): gloo's worker threads can otherwise abort the interpreter's
    teardown ("terminate called without an active exception", SIGABRT; seen in about 1 of 6 two-rank runs
    here even after destroy_process_group), and torchrun would report a failure."""
    return _joined


def shutdown() -> None:
    """Leave the process group (a no-op in one process)."""
    global _world
    if _world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _world = SINGLE
    _idle.clear()


def _all_gather(message: tuple[str, Any]) -> list[tuple[str, Any]]:
    import torch.distributed as dist

    out: list[Any] = [None] * _world.size
    dist.all_gather_object(out, message, group=_world.group)
    return out


def _failure(messages: list[tuple[str, Any]]) -> RankFailure | None:
    failed = [(rank, m[1]) for rank, m in enumerate(messages) if m[0] == "fail"]
    if not failed:
        return None
    causes = {cause for _, (cause, _code) in failed}
    codes = [c for _, (_cause, c) in failed]
    code = codes[0] if all(c in interrupt.EXIT_CODES for c in codes) else 1  # interrupted: 130, 143 or 129
    if len(failed) == len(messages) and len(causes) == 1:
        return RankFailure(failed[0][1][0], code=code)  # the same error on every rank: no rank to name
    rank, (cause, _) = failed[0]
    return RankFailure(f"rank {rank}: {cause}", code=code)


def exchange(payload: T) -> list[T]:
    """Every rank's ``payload``, in rank order, on every rank; :class:`RankFailure` if a rank failed instead."""
    if not _world.distributed or _nested():
        return [payload]
    messages = _all_gather(("ok", payload))
    failure = _failure(messages)
    if failure is not None:
        raise failure
    return [m[1] for m in messages]


def announce_failure(message: str, code: int = 1) -> RankFailure:
    """Tell the other ranks this one failed (one exchange); the failure every rank reports."""
    if not _world.distributed:
        return RankFailure(message, code=code)
    failure = _failure(_all_gather(("fail", (message, code))))
    assert failure is not None
    return failure


def _nested() -> bool:
    """Inside a rank's own chunk (where nothing is sharded or exchanged)."""
    return _local_depth > 0


@contextmanager
def local() -> Iterator[None]:
    """Every rank on its own: :func:`map_batches` and :func:`exchange` calls inside stay local (a rank's own
    chunk, or a warm-up that every rank runs in full)."""
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


def chunks(num: int, size: int) -> list[slice]:
    """The ``size`` chunks of ``num`` items (the last one shorter), as a single process cuts them."""
    return [slice(start, min(num, start + size)) for start in range(0, num, size)]


def owned(num_chunks: int, world: World | None = None) -> list[int]:
    """The chunk indices a rank computes: i mod world size == rank."""
    w = world or _world
    if not w.distributed or _nested():
        return list(range(num_chunks))
    return [i for i in range(num_chunks) if i % w.size == w.rank]


def local_count(num: int, size: int) -> int:
    """How many of ``num`` items (in chunks of ``size``) this rank computes: its progress bar's total."""
    parts = chunks(num, size)
    return sum(parts[i].stop - parts[i].start for i in owned(len(parts)))


def map_batches(
    num: int,
    size: int,
    fn: Callable[[slice], T],
    *,
    advance: Callable[[int], None] | None = None,
    keep_on_interrupt: bool = False,
    main_work: bool = False,
) -> tuple[list[T], bool]:
    """``fn`` over the ``size`` chunks of ``num`` items, sharded over the ranks; (every chunk's result in
    order, on every rank; interrupted).

    ``advance(n)`` is called after each of this rank's chunks with its length. With ``keep_on_interrupt``
    in one process, Ctrl-C keeps the chunks already done (a prefix) and returns interrupted=True; under
    torchrun an interrupt is a failure of that rank like any other (nothing partial is written).
    ``main_work``: the command's heavy loop, whose idle ranks get a note (:func:`idle_note`).
    """
    parts = chunks(num, size)
    mine = owned(len(parts))
    if main_work:
        record_idle(num, size)
    done: dict[int, T] = {}
    interrupted = False
    try:
        with local():
            for i in mine:
                done[i] = fn(parts[i])
                if advance is not None:
                    advance(parts[i].stop - parts[i].start)
    except KeyboardInterrupt:
        if not keep_on_interrupt or (_world.distributed and not _nested()):
            raise
        interrupted = True
    if not _world.distributed or _nested():  # one process, or inside a chunk: nothing to gather
        return [done[i] for i in sorted(done)], interrupted
    return gather_chunks(done, len(parts)), False


def gather_chunks(local: dict[int, T], num_chunks: int) -> list[T]:
    """Every rank's ``{chunk index: result}`` merged into the list of all ``num_chunks`` results, in order."""
    merged: dict[int, T] = {}
    for part in exchange(local):
        merged.update(part)
    return [merged[i] for i in range(num_chunks)]


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 alone (nothing inside it sharded) while the other ranks wait; its result on
    every rank. In one process, just ``fn()``."""
    if not _world.distributed or _nested():
        return fn()
    result: T | None = None
    if _world.is_main:
        with local():
            result = fn()
    return exchange(result)[0]  # type: ignore[return-value]


def record_idle(num: int, size: int) -> None:
    """Remember a command's main loop over ``num`` items in chunks of ``size`` if it leaves ranks idle."""
    if _world.distributed and not _nested() and idle_ranks(num, size):
        _idle.append((num, size))


def idle_note() -> str | None:
    """A note when some sharded work left ranks without a chunk (fewer batches than ranks); None otherwise."""
    if not _idle:
        return None
    num, size = max(_idle, key=lambda x: idle_ranks(*x))
    idle = idle_ranks(num, size)
    return (
        f"{idle} of {_world.size} ranks had nothing to do for {num} items in batches of {size}: work is shared "
        f"out by batch, so give at least {_world.size} batches (a larger --num or a smaller --batch-size)"
    )


def idle_ranks(num: int, size: int) -> int:
    """How many ranks get no chunk of ``num`` items in chunks of ``size``."""
    return max(0, _world.size - len(chunks(num, size)))


__all__ = [
    "SINGLE",
    "RankFailure",
    "World",
    "announce_failure",
    "chunks",
    "current",
    "exchange",
    "gather_chunks",
    "idle_note",
    "joined",
    "record_idle",
    "idle_ranks",
    "launched",
    "local",
    "local_count",
    "local_device",
    "map_batches",
    "on_main",
    "owned",
    "setup",
    "shutdown",
]
