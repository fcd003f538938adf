"""Reading embedding sets: chunk-aware row gathers through a cache of decoded rows.

A set's ``values`` are row chunks of ``chunk_rows x dim`` float32 (Blosc-LZ4, then a CRC32C),
packed into a few shards (Zarr v3 ``sharding_indexed``: the chunks back to back, then an index of
``(offset, length)`` pairs and its CRC32C). A read of some rows loads the index of each shard it
touches once, then fetches only the chunks holding rows not read before, by byte range
(neighbouring chunks merged into one read), several reads at a time, decodes them on the calling
thread (see :func:`_pipeline`) and copies the wanted rows of each into a per-set buffer, packed in
the order they were decoded (a map gives each row's place; pages of the buffer never written cost
no memory). Rows read before are one ``np.take`` from that dense buffer (a warm gather of 2,000 ids
from 30 sets ran about 20% faster than from a buffer shaped like the whole set, whose scattered rows
each cost a TLB miss). Sets are evicted least-recently-used first when the decoded bytes exceed the
cache budget.
"""

from __future__ import annotations

import json
import logging
import mmap
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from itertools import islice

import numpy as np
import pandas as pd
from pertstore.store._card import SetCard
from pertstore.store._codec import check_layout, decode_at, parse_shard_index, read_entity_ids
from pertstore.store._storage import GROUP_META, Storage

from pertstore.errors import CorruptedSetError

log = logging.getLogger(__name__)
_EMPTY = np.uint64(2**64 - 1)
_MERGE_GAP = {True: 256 * 1024, False: 4 * 1024 * 1024}
"""Largest gap between two wanted chunks still read as one range: locally (by is_local) one read
costs about as much as 256 KiB of transfer, an object-store request as a few MB. 2,000 ids from 30
sets of 16 KiB chunks, fresh process, page cache dropped, 3 runs each: gap 0 3.96-4.24 s, 16 KiB
3.46-3.92 s, 64 KiB 2.52-2.77 s, 256 KiB 2.25-2.32 s, 1 MiB 3.09-3.45 s; with the page cache warm
64 KiB 2.01-2.25 s, 256 KiB 1.69-1.98 s; 50 ids no different (0.26-0.30 s)."""
_Sink = Callable[[int, np.ndarray, int, int, int], None]
"""``sink(j, blob, address, start, length)``: decode chunk ``j`` of a read, ``blob[start:start + length]``."""
_ReadTask = tuple[Callable[[], list[bytes]], Callable[[list[bytes]], None]]
"""A read of some byte ranges of one shard (run on a pool) and the decode of what it read (run by the caller)."""
_TASK_BYTES = 4 * 1024 * 1024
_TASK_RANGES = 8
"""Ranges are grouped into read tasks of about ``_TASK_BYTES`` and at most ``_TASK_RANGES`` ranges,
run concurrently: large reads stream, and scattered small reads (a few ids) wait on the disk or
the network side by side rather than one after another."""


def set_buffer(shape: tuple[int, int]) -> tuple[np.ndarray, mmap.mmap]:
    """The float32 buffer a set's decoded rows are kept in, and its memory: an anonymous mapping
    committed 4 KiB page by page as rows land (see :func:`commit`), without transparent huge pages.

    numpy asks for huge pages on large arrays; then every scattered row would commit and zero
    2 MiB (50 rows from each of 30 sets took 3 GB that way), and where the kernel compacts memory
    for them on demand (THP defrag ``madvise``, with the page cache full) a cold read of 2,000 ids
    spent 8 s more in the kernel. Warm gathers were no faster with them (110-140 ms either way).
    """
    n = shape[0] * shape[1]
    region = mmap.mmap(-1, max(1, 4 * n), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(region, dtype="<f4", count=n).reshape(shape), region


_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux's value; Python 3.11 has no name for it


def commit(region: mmap.mmap, start: int, stop: int) -> None:
    """Commit bytes ``start:stop`` of ``region`` in one call (Linux 5.14's ``MADV_POPULATE_WRITE``)
    before rows are decoded into them, instead of a page fault per 4 KiB page: a cold read of 2,000
    ids from 30 sets decodes into 71,000 fresh pages. A kernel without it faults them in as before."""
    first = start - start % mmap.PAGESIZE
    if stop > first:
        try:
            region.madvise(_MADV_POPULATE_WRITE, first, stop - first)
        except OSError:
            pass


class OpenSet:
    """One published set opened for reading: its card, layout and decoded rows."""

    def __init__(self, storage: Storage, key: str, *, threads: int = 8) -> None:
        self.storage = storage
        self.key = key
        self.threads = threads
        meta = json.loads(storage.read_bytes(f"{key}/{GROUP_META}"))
        self.card = SetCard.from_attrs(meta.get("attributes", {}), where=key)
        arrays = meta.get("consolidated_metadata", {}).get("metadata", {})
        self.shard_chunks = check_layout(arrays.get("values"), arrays.get("entity"), self.card, key)
        self._entity_meta = arrays["entity"]
        self._ids: list[str] | None = None
        self._id_index: pd.Index | None = None
        self._ids_nbytes = 0
        self.reads = 0
        """Row reads of this set so far (see :func:`load_rows` and :meth:`SetCache.positions`)."""
        self.n_chunks = -(-self.card.n_rows // self.card.chunk_rows)
        self.n_shards = -(-self.n_chunks // self.shard_chunks)
        self._buffer: np.ndarray | None = None
        self._region: mmap.mmap | None = None
        """Decoded rows, packed in the order they were decoded, then (last row) a row of NaN."""
        self._slot = np.full(self.card.n_rows + 1, -1, dtype=np.int64)
        """Each row's place in the buffer (-1: not decoded); the last entry (position -1) is the row of NaN."""
        self._slot[-1] = self.card.n_rows
        self._n_have = 0
        self._shard_index: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def chunk_nbytes(self) -> int:
        return self.card.chunk_rows * self.card.dim * 4

    @property
    def nbytes(self) -> int:
        """Estimated memory of what this set holds: decoded rows and, once read, its ids."""
        return self._n_have * self.card.dim * 4 + self._ids_nbytes

    def shard_key(self, shard: int) -> str:
        return f"{self.key}/values/c/{shard}/0"

    @property
    def ids(self) -> list[str]:
        """The set's entity ids in row order, read on first use."""
        ids = self._ids
        if ids is None:
            ids = read_entity_ids(self.storage, self.key, self._entity_meta)
            if len(ids) != self.card.n_rows:
                raise CorruptedSetError(f"{self.key}: {len(ids)} entity ids but the card says {self.card.n_rows} rows")
            self._ids_nbytes = sys.getsizeof(ids) + sum(map(sys.getsizeof, ids))
            self._ids = ids
        return ids

    def positions(self, entity_ids: Sequence[str]) -> np.ndarray:
        """Row of each canonical id in this set, -1 where the set lacks it (hashes the ids on first use)."""
        index = self._id_index
        if index is None:
            index = self._id_index = pd.Index(self.ids)
            self._ids_nbytes += 24 * len(index)  # its hash table, about
        return index.get_indexer(entity_ids)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """``values[positions]`` as a new float32 array, reading only the chunks needed."""
        rows = load_rows([(self, np.asarray(positions, dtype=np.int64))])[0]
        assert rows is not None
        return rows

    def all_rows(self) -> np.ndarray:
        """Every row, in row order (a view of the decoded rows, put in row order once if read piecemeal)."""
        load_rows([(self, None)])
        n = self.card.n_rows
        with self._lock:
            assert self._buffer is not None
            if not np.array_equal(self._slot[:n], np.arange(n)):
                self._buffer[:n] = np.take(self._buffer, self._slot[:n], axis=0)
                self._slot[:n] = np.arange(n)
            return self._buffer[:n]

    def drop(self) -> None:
        """Let go of the decoded rows and the ids (read again when needed)."""
        with self._lock:
            self._buffer, self._region = None, None
            self._slot[:-1] = -1
            self._n_have = 0
            self._ids, self._id_index, self._ids_nbytes = None, None, 0

    # ---- loading (the caller holds self._lock) --------------------------------------------------

    def _missing(self, positions: np.ndarray | None) -> np.ndarray:
        """Sorted rows of ``positions`` (all rows when None) not decoded yet; the first call
        allocates the set's buffer."""
        if self._n_have == self.card.n_rows:
            return np.empty(0, dtype=np.int64)
        if positions is None:
            missing = np.flatnonzero(self._slot[: self.card.n_rows] < 0)
        else:
            missing = positions[self._slot[positions] < 0]
            if missing.size:
                missing = np.unique(missing)
        if self._buffer is None:  # address space only: pages are committed as rows land
            self._buffer, self._region = set_buffer((self.card.n_rows + 1, self.card.dim))
            self._buffer[-1] = np.nan
        return missing

    def _index_of(self, shard: int) -> np.ndarray:
        """The (offset, length) table of ``shard``, read once."""
        table = self._shard_index.get(shard)
        if table is None:
            key = self.shard_key(shard)
            try:
                raw = self.storage.read_range(key, -(16 * self.shard_chunks + 4))
            except FileNotFoundError as e:
                first = shard * self.shard_chunks
                raise CorruptedSetError(
                    f"{self.key}: shard {shard} ({key}) holding chunks {first}.."
                    f"{min(first + self.shard_chunks, self.n_chunks) - 1} is missing"
                ) from e
            table = self._shard_index[shard] = parse_shard_index(raw, self.shard_chunks, key)
        return table

    def _read_tasks(self, chunks: np.ndarray, sink: _Sink) -> list[_ReadTask]:
        """``(read, decode)`` pairs that fetch ``chunks`` (sorted; shard indexes loaded) and pass each
        one's bytes to ``sink(j, raw)``, ``j`` indexing ``chunks``."""
        tasks: list[_ReadTask] = []
        gap = _MERGE_GAP[self.storage.is_local]
        shards = chunks // self.shard_chunks
        for shard in np.unique(shards).tolist():
            mine = np.flatnonzero(shards == shard)
            table = self._index_of(shard)[chunks[mine] - shard * self.shard_chunks]
            if (table[:, 0] == _EMPTY).any():
                c = int(chunks[mine[np.argmax(table[:, 0] == _EMPTY)]])
                raise CorruptedSetError(
                    f"{self.key}: chunk {c} is missing from shard {shard} ({self.shard_key(shard)})"
                )
            ranges = _merge_ranges(table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), gap)
            for group in _group_ranges(ranges, _TASK_BYTES, _TASK_RANGES):
                tasks.append(
                    (
                        partial(self._fetch, shard, [(start, stop) for start, stop, _ in group]),
                        partial(self._decode, shard, group, chunks, mine, table, sink),
                    )
                )
        return tasks

    def _fetch(self, shard: int, ranges: list[tuple[int, int]]) -> list[bytes]:
        key = self.shard_key(shard)
        try:
            return self.storage.read_ranges(key, ranges)
        except FileNotFoundError as e:
            raise CorruptedSetError(f"{self.key}: shard {shard} ({key}) is missing") from e

    def _decode(
        self,
        shard: int,
        ranges: list[tuple[int, int, np.ndarray]],
        chunks: np.ndarray,
        mine: np.ndarray,
        table: np.ndarray,
        sink: _Sink,
        blobs: list[bytes],
    ) -> None:
        key = self.shard_key(shard)
        for (start, stop, members), blob in zip(ranges, blobs):
            if len(blob) != stop - start:
                raise CorruptedSetError(f"{self.key}: shard {shard} ({key}) is truncated at byte {start + len(blob)}")
            data = np.frombuffer(blob, dtype=np.uint8)
            address = data.ctypes.data if data.size else 0
            for i in members.tolist():
                try:
                    sink(int(mine[i]), data, address, int(table[i, 0]) - start, int(table[i, 1]))
                except ValueError as e:
                    raise CorruptedSetError(
                        f"{self.key}: chunk {int(chunks[mine[i]])} in {key} cannot be decoded ({e})"
                    ) from e

    def _rows_sink(self, rows: np.ndarray) -> tuple[np.ndarray, _Sink]:
        """``(chunks, sink)`` for decoding the sorted ``rows`` into the set's buffer after the rows
        decoded so far: the sink decodes ``chunks[j]`` straight into the buffer when all its rows are
        wanted, else into a per-thread scratch array and copies the wanted rows over."""
        n, dim, buffer, base = self.card.chunk_rows, self.card.dim, self._buffer, self._n_have
        assert buffer is not None
        buffer_address, row_bytes = buffer.ctypes.data, 4 * dim
        assert self._region is not None
        commit(self._region, base * row_bytes, (base + len(rows)) * row_bytes)
        of_chunk = rows // n
        chunks, first = np.unique(of_chunk, return_index=True)
        bounds = np.append(first, len(rows)).tolist()
        starts = (chunks * n).tolist()

        def sink(j: int, blob: np.ndarray, address: int, start: int, length: int) -> None:
            lo, hi = bounds[j], bounds[j + 1]
            if hi - lo == n:
                into = buffer[base + lo : base + hi]
                decode_at(blob, address, start, length, into, buffer_address + (base + lo) * row_bytes)
            else:
                scratch, scratch_address = _scratch(n * dim)
                scratch = scratch.reshape(n, dim)
                decode_at(blob, address, start, length, scratch, scratch_address)
                np.take(scratch, rows[lo:hi] - starts[j], axis=0, out=buffer[base + lo : base + hi], mode="clip")

        return chunks, sink


_THREAD = threading.local()


def _scratch(n: int) -> tuple[np.ndarray, int]:
    """This thread's reusable float32 scratch array of ``n`` values (its memory already committed)
    and the address of its data."""
    buf = getattr(_THREAD, "scratch", None)
    if buf is None or buf[0].size < n:
        array = np.empty(n, dtype="<f4")
        buf = _THREAD.scratch = (array, array.ctypes.data)
    return buf[0][:n], buf[1]


def load_rows(
    requests: Sequence[tuple[OpenSet, np.ndarray | None]],
    *,
    threads: int | None = None,
    out: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray | None]:
    """Make sure the rows of each ``(set, positions)`` are decoded, then gather them (a position -1
    gives a row of NaN: the set's buffer ends with one, so a gather of an aligned block is one ``np.take``).

    Only the chunks holding rows not decoded yet are read, and only the wanted rows of each are
    kept (a chunk is decoded into a small per-thread scratch array first): memory is committed
    for the rows read, not for whole chunks. On this project's VMs zeroing freshly touched pages
    led the profile of a cold read (12-42% of its CPU time), and keeping whole chunks of 2,000 ids from 30 sets touched
    1.8 GB where the rows take 0.29 GB. All sets' shard indexes, then all their chunk reads, run
    on one thread pool, so a cold read of many sets overlaps their I/O; the chunks are decoded
    here as their reads complete. ``positions=None`` loads
    the whole set and returns None for it. ``out``: an array per request to gather into.
    """
    if not requests:
        return []
    unique = sorted({id(s): s for s, _ in requests}.values(), key=lambda s: s.key)
    threads = threads or max(s.threads for s in unique)
    with ExitStack() as stack:
        for s in unique:  # one order for every caller: no deadlock between readers of several sets
            stack.enter_context(s._lock)
        need: dict[int, list[np.ndarray]] = {}
        for s, positions in requests:
            s.reads += 1
            missing = s._missing(positions)
            if missing.size:
                need.setdefault(id(s), []).append(missing)
        pending = [
            (s, np.unique(np.concatenate(need[id(s)])) if len(need[id(s)]) > 1 else need[id(s)][0])
            for s in unique
            if id(s) in need
        ]
        jobs = [(s, rows, *s._rows_sink(rows)) for s, rows in pending]
        if jobs:
            with ThreadPoolExecutor(max(1, threads)) as pool:
                index_jobs = {
                    (s.key, shard): s
                    for s, _, chunks, _ in jobs
                    for shard in np.unique(chunks // s.shard_chunks).tolist()
                    if shard not in s._shard_index
                }
                _run(pool, [partial(s._index_of, shard) for (_, shard), s in index_jobs.items()])
                _pipeline(
                    pool, [task for s, _, chunks, sink in jobs for task in s._read_tasks(chunks, sink)], 2 * threads
                )
            for s, rows, _, _ in jobs:
                s._slot[rows] = s._n_have + np.arange(len(rows))
                s._n_have += len(rows)
        return [
            None
            if positions is None or s._buffer is None
            else np.take(s._buffer, s._slot[positions], axis=0, out=None if out is None else out[i], mode="clip")
            for i, (s, positions) in enumerate(requests)
        ]


def _run(pool: ThreadPoolExecutor, tasks: Sequence[Callable[[], object]]) -> None:
    if len(tasks) == 1:
        tasks[0]()
    elif tasks:
        for f in [pool.submit(t) for t in tasks]:
            f.result()


def _pipeline(pool: ThreadPoolExecutor, tasks: Sequence[_ReadTask], ahead: int) -> None:
    """Run each task's read on ``pool``, at most ``ahead`` reads in flight, and its decode on this
    thread, in order.

    Reads wait on the disk or the network side by side. Decoding stays on one thread: through
    numcodecs' wrapper, which holds the GIL for much of a 16 KiB chunk's decode, 8 decoding threads
    were slower than one (2,000 ids from 30 sets: 2.97 s against 1.69 s, on 2 cores); through the
    direct C-Blosc call, which lets go of it, they gained nothing either.
    """
    pending: deque[tuple[Future, Callable[[list[bytes]], None]]] = deque()
    queue = iter(tasks)
    for read, decode in islice(queue, max(1, ahead)):
        pending.append((pool.submit(read), decode))
    while pending:
        future, decode = pending.popleft()
        blobs = future.result()
        for read, following in islice(queue, 1):
            pending.append((pool.submit(read), following))
        decode(blobs)


def _merge_ranges(offsets: np.ndarray, lengths: np.ndarray, gap: int) -> list[tuple[int, int, np.ndarray]]:
    """Byte ranges covering the chunks at ``offsets``, neighbours closer than ``gap`` merged.

    Each item is ``(start, stop, members)``, members indexing into ``offsets``.
    """
    order = np.argsort(offsets, kind="stable")
    starts, stops = offsets[order], offsets[order] + lengths[order]
    breaks = np.flatnonzero(starts[1:] - np.maximum.accumulate(stops)[:-1] > gap) + 1
    out = []
    for members in np.split(order, breaks):
        out.append((int(offsets[members].min()), int((offsets[members] + lengths[members]).max()), members))
    return out


def _group_ranges(
    ranges: list[tuple[int, int, np.ndarray]], task_bytes: int, task_ranges: int
) -> list[list[tuple[int, int, np.ndarray]]]:
    """Split ranges into consecutive groups of about ``task_bytes`` and at most ``task_ranges``
    ranges (a long range alone)."""
    groups: list[list] = [[]]
    size = 0
    for r in ranges:
        if groups[-1] and (size + (r[1] - r[0]) > task_bytes or len(groups[-1]) == task_ranges):
            groups.append([])
            size = 0
        groups[-1].append(r)
        size += r[1] - r[0]
    return groups
