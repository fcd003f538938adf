"""Reading embedding sets: chunk-aware row gathers through a cache of decoded rows.

A set's ``values`` are row chunks of ``chunk_rows x dim`` float32 (Blosc-LZ4, then a CRC32C),
packed into a few shards (Zarr v3 ``sharding_indexed``: the chunks back to back, then an index of
``(offset, length)`` pairs and its CRC32C). A read of some rows loads the index of each shard it
touches once, then fetches only the chunks holding rows not read before, by byte range
(neighbouring chunks merged into one read), concurrently, and copies the wanted rows of each into
a per-set buffer shaped like the whole set (pages of the buffer never written cost no memory).
Rows read before are plain numpy fancy indexing. Sets are evicted least-recently-used first when
the decoded bytes exceed the cache budget.
"""

from __future__ import annotations

import json
import logging
import mmap
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial

import google_crc32c
import numcodecs
import numpy as np
import pandas as pd
from numcodecs import blosc
from pertstore.store._card import SetCard
from pertstore.store._storage import GROUP_META, Storage

from pertstore.errors import CorruptedSetError

log = logging.getLogger(__name__)
blosc.use_threads = False  # decode in our own threads, with Blosc's GIL-free contextual API
_ZSTD = numcodecs.Zstd()
_VLEN = numcodecs.VLenUTF8()
_EMPTY = np.uint64(2**64 - 1)
_MERGE_GAP = {True: 64 * 1024, False: 4 * 1024 * 1024}
"""Largest gap between two wanted chunks still read as one range: a local read (by is_local) costs
about as much as 64 KiB of transfer (2,000 ids from 30 sets of 16 KiB chunks, cold, three runs
each: 1.14 GB in 11,188 reads took 4.1-5.0 s, 0.57 GB in 26,450 reads with a 16 KiB gap
4.4-5.9 s), an object-store request about as much as a few MB."""
_TASK_BYTES = 4 * 1024 * 1024
_TASK_RANGES = 8
"""Ranges are grouped into read tasks of about ``_TASK_BYTES`` and at most ``_TASK_RANGES`` ranges,
run concurrently: large reads stream, and scattered small reads (a few ids) wait on the disk or
the network side by side rather than one after another."""


def decode_chunk(raw, chunk_rows: int, dim: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode one stored ``values`` chunk (any bytes-like: Blosc, then its CRC32C) into a
    ``[chunk_rows, dim]`` float32 array; ValueError when the CRC32C does not match."""
    if not crc32c_ok(raw):
        raise ValueError("its CRC32C does not match its bytes")
    if out is None:
        out = np.empty((chunk_rows, dim), dtype="<f4")
    blosc.decompress(memoryview(raw)[:-4], out)
    return out


def crc32c_ok(raw) -> bool:
    """Whether the last 4 bytes of ``raw`` (a stored chunk or shard index) are the CRC32C of the rest."""
    data = np.frombuffer(raw, dtype=np.uint8)  # google_crc32c takes arrays, not memoryviews
    return len(data) > 4 and google_crc32c.value(data[:-4]) == int.from_bytes(data[-4:].tobytes(), "little")


def set_buffer(shape: tuple[int, int]) -> np.ndarray:
    """The float32 buffer a set's decoded rows are kept in: an anonymous mapping committed 4 KiB
    page by page as rows land, without transparent huge pages.

    numpy asks for huge pages on large arrays; then every scattered row would commit and zero
    2 MiB (50 rows from each of 30 sets took 3 GB that way), and where the kernel compacts memory
    for them on demand (THP defrag ``madvise``, with the page cache full) a cold read of 2,000 ids
    spent 8 s more in the kernel. Warm gathers were no faster with them (110-140 ms either way).
    """
    n = shape[0] * shape[1]
    region = mmap.mmap(-1, max(1, 4 * n), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(region, dtype="<f4", count=n).reshape(shape)


def parse_shard_index(raw: bytes, n_chunks: int, where: str) -> np.ndarray:
    """The ``[n_chunks, 2]`` (offset, length) table of a shard index, its CRC32C checked."""
    if len(raw) != 16 * n_chunks + 4:
        raise CorruptedSetError(f"{where}: the shard index is truncated ({len(raw)} bytes)")
    if not crc32c_ok(raw):
        raise CorruptedSetError(f"{where}: the shard index fails its CRC32C check")
    return np.frombuffer(raw, dtype="<u8", count=2 * n_chunks).reshape(n_chunks, 2)


class OpenSet:
    """One published set opened for reading: its card, layout and decoded rows."""

    def __init__(self, storage: Storage, key: str, *, threads: int = 8) -> None:
        self.storage = storage
        self.key = key
        self.threads = threads
        meta = json.loads(storage.read_bytes(f"{key}/{GROUP_META}"))
        self.card = SetCard.from_attrs(meta.get("attributes", {}), where=key)
        arrays = meta.get("consolidated_metadata", {}).get("metadata", {})
        self.shard_chunks = _check_layout(arrays.get("values"), arrays.get("entity"), self.card, key)
        self._entity_meta = arrays["entity"]
        self._ids: list[str] | None = None
        self._id_index: pd.Index | None = None
        self._ids_nbytes = 0
        self.reads = 0
        """Row reads of this set so far (see :func:`load_rows` and :meth:`SetCache.positions`)."""
        self.n_chunks = -(-self.card.n_rows // self.card.chunk_rows)
        self.n_shards = -(-self.n_chunks // self.shard_chunks)
        self._buffer: np.ndarray | None = None
        self._have = np.zeros(self.n_chunks * self.card.chunk_rows, dtype=bool)
        """Rows decoded into the buffer."""
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
            ids = _read_entity_ids(self.storage, self.key, self._entity_meta)
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
        load_rows([(self, None)])
        assert self._buffer is not None
        return self._buffer[: self.card.n_rows]

    def drop(self) -> None:
        """Let go of the decoded rows and the ids (read again when needed)."""
        with self._lock:
            self._buffer = None
            self._have[:] = False
            self._n_have = 0
            self._ids, self._id_index, self._ids_nbytes = None, None, 0

    # ---- loading (the caller holds self._lock) --------------------------------------------------

    def _missing(self, positions: np.ndarray | None) -> np.ndarray:
        """Sorted rows of ``positions`` (all rows when None) not decoded yet; the first call
        allocates the set's buffer."""
        if self._n_have == self.card.n_rows:
            return np.empty(0, dtype=np.int64)
        if positions is None:
            missing = np.flatnonzero(~self._have[: self.card.n_rows])
        else:
            missing = positions[~self._have[positions]]
            if missing.size:
                missing = np.unique(missing)
        if self._buffer is None:  # address space only: pages are committed as rows land
            self._buffer = set_buffer((len(self._have), self.card.dim))
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

    def _read_tasks(self, chunks: np.ndarray, sink: Callable[[int, memoryview], None]) -> list[Callable[[], None]]:
        """Callables that fetch ``chunks`` (sorted; shard indexes loaded) and pass each one's bytes
        to ``sink(j, raw)``, ``j`` indexing ``chunks``."""
        tasks: list[Callable[[], None]] = []
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
                tasks.append(partial(self._fetch, shard, group, chunks, mine, table, sink))
        return tasks

    def _fetch(
        self,
        shard: int,
        ranges: list[tuple[int, int, np.ndarray]],
        chunks: np.ndarray,
        mine: np.ndarray,
        table: np.ndarray,
        sink: Callable[[int, memoryview], None],
    ) -> None:
        key = self.shard_key(shard)
        try:
            blobs = self.storage.read_ranges(key, [(start, stop) for start, stop, _ in ranges])
        except FileNotFoundError as e:
            raise CorruptedSetError(f"{self.key}: shard {shard} ({key}) is missing") from e
        for (start, stop, members), blob in zip(ranges, blobs):
            if len(blob) != stop - start:
                raise CorruptedSetError(f"{self.key}: shard {shard} ({key}) is truncated at byte {start + len(blob)}")
            view = memoryview(blob)
            for i in members.tolist():
                lo = int(table[i, 0]) - start
                try:
                    sink(int(mine[i]), view[lo : lo + int(table[i, 1])])
                except (RuntimeError, ValueError) as e:
                    raise CorruptedSetError(
                        f"{self.key}: chunk {int(chunks[mine[i]])} in {key} cannot be decoded ({e})"
                    ) from e

    def _rows_sink(self, rows: np.ndarray) -> tuple[np.ndarray, Callable[[int, memoryview], None]]:
        """``(chunks, sink)`` for decoding the sorted ``rows`` into the set's buffer: the sink
        decodes ``chunks[j]`` straight into the buffer when all its rows are wanted, else into a
        per-thread scratch array and copies the wanted rows over."""
        n, dim, buffer = self.card.chunk_rows, self.card.dim, self._buffer
        assert buffer is not None
        of_chunk = rows // n
        chunks, first = np.unique(of_chunk, return_index=True)
        bounds = np.append(first, len(rows))

        def sink(j: int, raw: memoryview) -> None:
            c, lo, hi = int(chunks[j]), int(bounds[j]), int(bounds[j + 1])
            if hi - lo == n:
                decode_chunk(raw, n, dim, out=buffer[c * n : (c + 1) * n])
            else:
                scratch = _scratch(n * dim).reshape(n, dim)
                decode_chunk(raw, n, dim, out=scratch)
                buffer[rows[lo:hi]] = scratch[rows[lo:hi] - c * n]

        return chunks, sink


_THREAD = threading.local()


def _scratch(n: int) -> np.ndarray:
    """This thread's reusable float32 scratch array of ``n`` values (its memory already committed)."""
    buf = getattr(_THREAD, "scratch", None)
    if buf is None or buf.size < n:
        buf = _THREAD.scratch = np.empty(n, dtype="<f4")
    return buf[:n]


def load_rows(
    requests: Sequence[tuple[OpenSet, np.ndarray | None]], *, threads: int | None = None
) -> list[np.ndarray | None]:
    """Make sure the rows of each ``(set, positions)`` are decoded, then gather them.

    Only the chunks holding rows not decoded yet are read, and only the wanted rows of each are
    kept (a chunk is decoded into a small per-thread scratch array first): memory is committed
    for the rows read, not for whole chunks. On this project's VMs zeroing freshly touched pages
    led the profile of a cold read (12-42% of its CPU time), and keeping whole chunks of 2,000 ids from 30 sets touched
    1.8 GB where the rows take 0.29 GB. All sets' shard indexes, then all their chunk reads, run
    on one thread pool, so a cold read of many sets overlaps their I/O. ``positions=None`` loads
    the whole set and returns None for it.
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
                _run(pool, [task for s, _, chunks, sink in jobs for task in s._read_tasks(chunks, sink)])
            for s, rows, _, _ in jobs:
                s._have[rows] = True
                s._n_have += len(rows)
        return [None if positions is None or s._buffer is None else s._buffer[positions] for s, positions in requests]


def _run(pool: ThreadPoolExecutor, tasks: Sequence[Callable[[], object]]) -> None:
    if len(tasks) == 1:
        tasks[0]()
    elif tasks:
        for f in [pool.submit(t) for t in tasks]:
            f.result()


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


def _check_layout(values_meta: dict | None, entity_meta: dict | None, card: SetCard, key: str) -> int:
    """Check the ``values`` metadata is the sharded layout this reader knows; returns chunks per shard."""
    if values_meta is None or entity_meta is None:
        raise CorruptedSetError(f"{key}: consolidated metadata lacks the 'values' or 'entity' array")
    codecs = values_meta.get("codecs", [])
    names = [c.get("name") for c in codecs]
    conf = codecs[0].get("configuration", {}) if names == ["sharding_indexed"] else {}
    inner = [c.get("name") for c in conf.get("codecs", [])]
    index = [c.get("name") for c in conf.get("index_codecs", [])]
    endian = {
        c.get("configuration", {}).get("endian", "little")
        for c in conf.get("codecs", []) + conf.get("index_codecs", [])
        if c.get("name") == "bytes"
    }
    key_encoding = values_meta.get("chunk_key_encoding", {})
    if (
        inner != ["bytes", "blosc", "crc32c"]
        or index != ["bytes", "crc32c"]
        or conf.get("index_location") != "end"
        or endian != {"little"}
        or values_meta.get("data_type") != "float32"
        or key_encoding.get("name") != "default"
        or key_encoding.get("configuration", {}).get("separator", "/") != "/"
    ):
        raise CorruptedSetError(
            f"{key}: 'values' uses codecs {names} {inner} / {values_meta.get('data_type')}, which this "
            "pertstore does not read (sets written before sharding must be written again)"
        )
    shape = values_meta.get("shape")
    shards = values_meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    chunks = conf.get("chunk_shape")
    if (
        shape != [card.n_rows, card.dim]
        or chunks != [card.chunk_rows, card.dim]
        or not shards
        or shards[1] != card.dim
        or shards[0] % card.chunk_rows
    ):
        raise CorruptedSetError(
            f"{key}: 'values' shape {shape} / chunks {chunks} / shards {shards} disagree with the card"
        )
    return shards[0] // card.chunk_rows


def _read_entity_ids(storage: Storage, key: str, entity_meta: dict) -> list[str]:
    codecs = [c["name"] for c in entity_meta.get("codecs", [])]
    n = entity_meta["shape"][0]
    chunk = entity_meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    if codecs not in (["vlen-utf8", "zstd", "crc32c"], ["vlen-utf8", "zstd"]) or chunk < n:
        raise CorruptedSetError(
            f"{key}: 'entity' uses codecs {codecs} / chunk {chunk}, which this pertstore does not read"
        )
    try:
        raw = storage.read_bytes(f"{key}/entity/c/0")
    except FileNotFoundError as e:
        raise CorruptedSetError(f"{key}: the entity ids are missing") from e
    if codecs[-1] == "crc32c":  # sets written since the ids carry a checksum: a flipped bit is an error, not NaN
        raw, stored = raw[:-4], raw[-4:]
        if google_crc32c.value(raw).to_bytes(4, "little") != stored:
            raise CorruptedSetError(f"{key}: the entity ids fail their CRC32C (entity/c/0 is corrupted)")
    try:
        ids = _VLEN.decode(_ZSTD.decode(raw))
    except (RuntimeError, ValueError) as e:
        raise CorruptedSetError(f"{key}: the entity ids cannot be decoded ({e})") from e
    return [str(x) for x in ids[:n]]


class SetCache:
    """Open sets of one process, with an LRU budget on the bytes they hold (see :meth:`trim`)."""

    def __init__(self, storage: Storage, *, max_bytes: int, threads: int = 8) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self.threads = threads
        self._sets: OrderedDict[str, OpenSet] = OrderedDict()
        self._lock = threading.Lock()
        self._to_map: list[OpenSet] = []
        self._mapper: threading.Thread | None = None
        self._universes: dict[str, pd.Index] = {}
        """Per entity kind: every id of the sets whose rows are mapped, in the order first seen."""
        self._row_maps: dict[str, np.ndarray] = {}
        """Per set key: the row of each id of its kind's universe (-1 where absent)."""
        self._map_nbytes = 0
        """Estimated memory of the universes and row maps."""

    def get(self, key: str) -> OpenSet:
        with self._lock:
            s = self._sets.get(key)
            if s is not None:
                self._sets.move_to_end(key)
                return s
        s = OpenSet(self.storage, key, threads=self.threads)
        with self._lock:
            self._sets[key] = s
        return s

    def get_many(self, keys: Sequence[str]) -> list[OpenSet]:
        """:meth:`get` for several sets; those not open yet are opened concurrently (their metadata
        are small reads, which a cold disk or an object store answers faster together)."""
        with self._lock:
            missing = list(dict.fromkeys(k for k in keys if k not in self._sets))
        if len(missing) > 1:
            with ThreadPoolExecutor(min(self.threads, len(missing))) as pool:
                opened = list(pool.map(lambda k: OpenSet(self.storage, k, threads=self.threads), missing))
            with self._lock:
                for k, s in zip(missing, opened):
                    self._sets.setdefault(k, s)
        return [self.get(k) for k in keys]

    def positions(
        self,
        sets: Sequence[OpenSet],
        entity_ids: Sequence[str | None],
        lookup: Callable[[Sequence[OpenSet]], np.ndarray],
    ) -> np.ndarray:
        """Rows of ``entity_ids`` in each of ``sets`` (``[n_sets, n_ids]``, -1 where absent).

        Sets whose rows are mapped in memory answer at once: the query is hashed once against the
        ids of every mapped set of its kind, then each set is a numpy lookup (2,000 ids x 30 sets:
        about 2 ms, where a hash lookup per set and id took 17-20 ms). The others are answered
        together by ``lookup`` (the catalog's join: 10-30 ms, where reading and hashing 30 sets'
        ids costs a fresh process 0.2-0.3 s). A set read a second time gets its rows mapped in a
        background thread, so a long-lived process soon answers from memory and a one-shot
        process never pays for it.
        """
        keys = np.asarray([e if e is not None else "\0missing" for e in entity_ids], dtype=object)
        out = np.empty((len(sets), len(keys)), dtype=np.int64)
        with self._lock:  # row maps, then a universe at least as new as each of them
            maps = [self._row_maps.get(s.key) for s in sets]
            universes = dict(self._universes)
        codes: dict[str, np.ndarray] = {}
        rest = []
        for i, (s, row_map) in enumerate(zip(sets, maps)):
            if row_map is None:
                rest.append(i)
                continue
            kind = s.card.kind
            if kind not in codes:
                codes[kind] = universes[kind].get_indexer(keys)
            mine = codes[kind]
            known = (mine >= 0) & (mine < len(row_map))  # ids added after this set was mapped are not in it
            out[i] = np.where(known, row_map[np.where(known, mine, 0)], -1)
        if rest:
            out[rest] = lookup([sets[i] for i in rest])
            self._map_later([sets[i] for i in rest if sets[i].reads >= 1])
        return out

    def _map_later(self, sets: list[OpenSet]) -> None:
        with self._lock:
            self._to_map.extend(s for s in sets if s not in self._to_map)
            if self._to_map and (self._mapper is None or not self._mapper.is_alive()):
                self._mapper = threading.Thread(target=self._map_queued, name="pertstore-row-maps", daemon=True)
                self._mapper.start()

    def _map_queued(self) -> None:
        while True:
            with self._lock:
                if not self._to_map:
                    return
                s = self._to_map.pop(0)
                if s.key in self._row_maps:
                    continue
            try:
                self._map_rows(s)
            except CorruptedSetError as e:  # reported to whoever reads the ids; the catalog keeps answering
                log.warning("rows of %s not mapped: %s", s.key, e)

    def _map_rows(self, s: OpenSet) -> None:
        """Add ``s``'s ids to its kind's universe and record the row of each universe id in ``s``."""
        ids = pd.Index(s.ids, dtype=object)
        with self._lock:
            universe = self._universes.get(s.card.kind, pd.Index([], dtype=object))
            codes = universe.get_indexer(ids)
            new = codes < 0
            if new.any():  # appended: the codes of earlier ids stay valid in earlier row maps
                codes[new] = len(universe) + np.arange(int(new.sum()))
                added = ids[new]
                universe = self._universes[s.card.kind] = universe.append(added)
                # the index's pointers and hash table, and strings not shared with an open set's ids
                self._map_nbytes += 32 * len(added) + sum(map(sys.getsizeof, added))
            row_map = np.full(len(universe), -1, dtype=np.int32)
            row_map[codes] = np.arange(len(ids), dtype=np.int32)
            self._row_maps[s.key] = row_map
            self._map_nbytes += row_map.nbytes

    def settle(self) -> None:
        """Wait for sets' rows being mapped in the background."""
        mapper = self._mapper
        if mapper is not None:
            mapper.join()

    @property
    def nbytes(self) -> int:
        """Estimated memory held: decoded rows, ids, universes and row maps."""
        with self._lock:
            return self._map_nbytes + sum(s.nbytes for s in self._sets.values())

    def trim(self, extra: int = 0) -> None:
        """Keep this cache plus ``extra`` (the catalog's alias indexes) within the budget: drop the
        decoded rows and ids of the least recently used sets (never the last one read), then, if
        that is not enough, the row maps (rebuilt for sets read again)."""
        with self._lock:
            total = extra + self._map_nbytes + sum(s.nbytes for s in self._sets.values())
            for s in list(self._sets.values())[:-1]:
                if total <= self.max_bytes:
                    break
                total -= s.nbytes
                s.drop()
            if total > self.max_bytes and self._row_maps:
                self._universes.clear()
                self._row_maps.clear()
                self._map_nbytes = 0

    def clear(self) -> None:
        self.settle()
        with self._lock:
            self._sets.clear()
            self._universes.clear()
            self._row_maps.clear()
            self._map_nbytes = 0
