"""The coverage table: hot spot ledgers as table entries, and which entries to write.

A ledger is stored in parts. Its header, the snapshot without visits
(:meth:`geofences.coverage.HotspotCoverage.to_dict`) with the windows assigned at run time,
lives under the hot spot's id: ``{"ledger": header, "assigned": [window, ...]}``. Each visit
lives under its own key (:func:`visit_key`) as ``[unit_type, end_ms, open, [marks]]``. (Event
mode's pending updates have entries of their own: stream/worker/pending.py.)

Only what changed since the last write is written: a busy hot spot holds a day of visits, and a
write stays proportional to the updates, not to the ledger. A header whose only change is its
clock is not written again: a restore reads the last one, and decides from the current clock on
what the ledger would have (``HotspotCoverage.has_changes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from geofences.coverage import HotspotCoverage
from geofences.hotspots import Window, parse_window
from geofences.windows import window_to_obj
from stream.records import compact_json

#: table keys of visits start with a byte no hot spot id (a JSON string in the file) starts with
VISIT_KEY_PREFIX = b"\x00"

#: table writes: key -> (partition, encoded value, or None to delete)
Writes = dict[bytes, tuple[int, bytes | None]]


def visit_key(hotspot_id: str, unit_id: str, enter_ms: int) -> bytes:
    """The table key of one visit: it lives beside its hot spot's header."""
    return VISIT_KEY_PREFIX + orjson.dumps([hotspot_id, unit_id, enter_ms])


class CoverageCodec:
    """What the table holds of each ledger this worker has read or written since the last
    rebalance, to write only what changed."""

    def __init__(self) -> None:
        #: hot spot -> its header as last written (or read)
        self._headers: dict[str, bytes] = {}
        #: hot spot -> the assignments written with that header
        self._assigned: dict[str, tuple[Window, ...]] = {}
        #: visit rows by hot spot as the table held them when first read after a rebalance,
        #: each taken when its hot spot's ledger is read
        self._visit_rows: dict[str, list[list[Any]]] | None = None

    def forget(self) -> None:
        """A rebalance: the table is read again."""
        self._headers.clear()
        self._assigned.clear()
        self._visit_rows = None

    def read(
        self, hotspot_id: str, store: Mapping[bytes, bytes]
    ) -> tuple[dict[str, Any], tuple[Window, ...]] | None:
        """The hot spot's snapshot (``HotspotCoverage.from_dict`` reads it) and its assigned
        windows, as the table holds them; None if it holds no header."""
        raw = store.get(hotspot_id.encode())
        if raw is None:
            return None
        stored = orjson.loads(raw)
        assigned = tuple(parse_window(w, "stored assignment") for w in stored["assigned"])
        self._headers[hotspot_id] = raw
        self._assigned[hotspot_id] = assigned
        visits = self._stored_visits(store).pop(hotspot_id, [])
        return {**stored["ledger"], "visits": visits}, assigned

    def _stored_visits(self, store: Mapping[bytes, bytes]) -> dict[str, list[list[Any]]]:
        """Visit rows in the table by hot spot (read once after each rebalance)."""
        if self._visit_rows is None:
            self._visit_rows = {}
            for key, raw in store.items():
                if key[:1] == VISIT_KEY_PREFIX:
                    hotspot_id, unit_id, enter_ms = orjson.loads(key[1:])
                    unit_type, end_ms, is_open, marks = orjson.loads(raw)
                    self._visit_rows.setdefault(hotspot_id, []).append(
                        [unit_id, unit_type, enter_ms, end_ms, is_open, marks]
                    )
        return self._visit_rows

    def write(
        self,
        ledger: HotspotCoverage,
        assigned: tuple[Window, ...],
        partition: int,
        out: Writes,
    ) -> None:
        """Add to ``out`` what changed since the last write of the hot spot: its header when
        anything in it but the clock changed, or its assignments did; each visit begun or
        changed; a delete for each visit removed. Nothing when only the clock moved."""
        hotspot_id = ledger.hotspot_id
        if not ledger.has_changes and self._assigned.get(hotspot_id) == assigned:
            return
        header, rows, removed = ledger.take_changes()
        if header or self._assigned.get(hotspot_id) != assigned:
            encoded = compact_json(
                {
                    "ledger": ledger.to_dict(with_visits=False),
                    "assigned": [window_to_obj(w) for w in assigned],
                }
            )
            self._assigned[hotspot_id] = assigned
            if self._headers.get(hotspot_id) != encoded:
                self._headers[hotspot_id] = encoded
                out[hotspot_id.encode()] = (partition, encoded)
        for unit_id, unit_type, enter_ms, end_ms, is_open, marks in rows:
            out[visit_key(hotspot_id, unit_id, enter_ms)] = (
                partition,
                compact_json([unit_type, end_ms, is_open, marks]),
            )
        for unit_id, enter_ms in removed:
            out[visit_key(hotspot_id, unit_id, enter_ms)] = (partition, None)
