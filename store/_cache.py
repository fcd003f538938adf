"""The open sets of one process: an LRU budget on the bytes they hold, and the ids of the sets
read more than once mapped to rows in memory (see :meth:`SetCache.positions`)."""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from pertstore.store._reader import OpenSet
from pertstore.store._storage import Storage

from pertstore.errors import CorruptedSetError

log = logging.getLogger(__name__)


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
