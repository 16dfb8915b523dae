"""Every unit's last usable fix, for dispatch suggestions (docs/architecture.md, Dispatch).

Units are partitioned by unit and hot spots by hot spot, so the worker that owns a hot spot does
not hold the units near it. The presence stage therefore publishes each unit's last usable fix
(:class:`Fix`) to a compacted topic when :func:`publish_due` says so, and every worker keeps the
whole topic in a :class:`PositionView`: the latest fix per unit, by ts (a replayed or late fix
never replaces a newer one), in a uniform grid of projected metres for the nearest-unit search.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from geofences.errors import InvalidPosition
from geofences.presence import UnitState
from geofences.projection import LocalProjection, metres_per_degree


@dataclass(frozen=True, slots=True)
class Fix:
    """A unit's last usable fix: where and when, its type, and the hot spots it is inside
    (the presence stage's open visits), which tell a reader whether the unit is busy."""

    unit_id: str
    unit_type: str
    lon: float
    lat: float
    ts_ms: int
    inside: tuple[str, ...] = ()

    def to_json_dict(self) -> dict[str, Any]:
        """The position record's value (internal; ``ts`` in epoch ms)."""
        return {
            "unit_id": self.unit_id,
            "unit_type": self.unit_type,
            "lon": self.lon,
            "lat": self.lat,
            "ts": self.ts_ms,
            "inside": list(self.inside),
        }

    @classmethod
    def from_json_dict(cls, obj: Any) -> Fix:
        """The fix of a position record's value, or :class:`InvalidPosition` naming the field."""
        if not isinstance(obj, Mapping):
            raise InvalidPosition("position: not an object")
        unit_id, unit_type = obj.get("unit_id"), obj.get("unit_type")
        lon, lat, ts = obj.get("lon"), obj.get("lat"), obj.get("ts")
        inside = obj.get("inside", [])
        if not isinstance(unit_id, str) or not unit_id:
            raise InvalidPosition("position: unit_id must be a non-empty string")
        if not isinstance(unit_type, str) or not unit_type:
            raise InvalidPosition("position: unit_type must be a non-empty string")
        for name, value, limit in (("lon", lon, 180.0), ("lat", lat, 90.0)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or abs(value) > limit
            ):
                raise InvalidPosition(f"position: {name} must be a number within ±{limit:g}")
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise InvalidPosition("position: ts must be integer epoch ms")
        if not isinstance(inside, list) or not all(isinstance(h, str) for h in inside):
            raise InvalidPosition("position: inside must be a list of hot spot ids")
        return cls(unit_id, unit_type, float(lon), float(lat), ts, tuple(inside))  # type: ignore[arg-type]


def fix_of(unit_id: str, state: UnitState) -> Fix | None:
    """The unit's last usable fix as its state holds it (None before its first)."""
    if state.last_ms is None:
        return None
    return Fix(
        unit_id, state.unit_type, state.last_lon, state.last_lat, state.last_ms, state.hotspot_ids
    )


@dataclass(frozen=True, slots=True)
class PublishRule:
    """When a unit's fix is published again: ``interval_ms`` since the last one published, or
    moved more than ``move_m`` from it. A change of type or of hot spots inside is published at
    once: it changes whether the unit is offered, and whether it is busy."""

    interval_ms: int = 30_000
    move_m: float = 50.0


def distance_m(a: Fix, b: Fix) -> float:
    """Straight-line metres between two fixes, projected about their mean latitude."""
    kx, ky = metres_per_degree((a.lat + b.lat) / 2.0)
    return math.hypot((a.lon - b.lon) * kx, (a.lat - b.lat) * ky)


def publish_due(last: Fix | None, fix: Fix, rule: PublishRule) -> bool:
    """Whether ``fix`` is to be published, ``last`` being the unit's last published fix."""
    if last is None:
        return True
    if fix.ts_ms <= last.ts_ms:
        return False
    if fix.unit_type != last.unit_type or fix.inside != last.inside:
        return True
    return fix.ts_ms - last.ts_ms >= rule.interval_ms or distance_m(last, fix) > rule.move_m


def state_due(last: Fix | None, state: UnitState, rule: PublishRule) -> bool:
    """:func:`publish_due` of the fix ``state`` holds (:func:`fix_of`), without making it:
    asked of every unit a batch touched, and most are not due."""
    if state.last_ms is None:
        return False
    if last is None:
        return True
    if state.last_ms <= last.ts_ms:
        return False
    if state.last_ms - last.ts_ms >= rule.interval_ms or state.unit_type != last.unit_type:
        return True
    visits, inside = state.visits, last.inside
    if len(visits) != len(inside):
        return True
    for visit, hotspot_id in zip(visits, inside, strict=True):  # none or one, mostly
        if visit.hotspot_id != hotspot_id:
            return True
    kx, ky = metres_per_degree((state.last_lat + last.lat) / 2.0)
    dx, dy = (state.last_lon - last.lon) * kx, (state.last_lat - last.lat) * ky
    return dx * dx + dy * dy > rule.move_m * rule.move_m


#: the grid cell of the view, in metres: hot spots and walking distances are a few hundred
#: metres, so a search looks at a few cells
CELL_M = 250.0

Cell = tuple[int, int]


class PositionView:
    """The latest fix of every unit, indexed by a uniform grid in projected metres."""

    def __init__(self, projection: LocalProjection, cell_m: float = CELL_M) -> None:
        self.projection = projection
        self.cell_m = cell_m
        self.fixes: dict[str, Fix] = {}
        self._xy: dict[str, tuple[float, float]] = {}
        self._cell_of: dict[str, Cell] = {}
        self._cells: dict[Cell, set[str]] = {}
        #: the occupied cells' extent (only grows): a search that covered it has seen every unit
        self._extent: tuple[int, int, int, int] | None = None

    def __len__(self) -> int:
        return len(self.fixes)

    def cell(self, x: float, y: float) -> Cell:
        return (math.floor(x / self.cell_m), math.floor(y / self.cell_m))

    def put(self, fix: Fix) -> bool:
        """Keep ``fix`` unless the unit has one at least as new; returns whether it was kept."""
        held = self.fixes.get(fix.unit_id)
        if held is not None and held.ts_ms >= fix.ts_ms:
            return False
        x, y = self.projection.point_to_metres(fix.lon, fix.lat)
        cell = self.cell(x, y)
        before = self._cell_of.get(fix.unit_id)
        if before != cell:
            if before is not None:
                self._leave(fix.unit_id, before)
            self._cells.setdefault(cell, set()).add(fix.unit_id)
            self._cell_of[fix.unit_id] = cell
            i, j = cell
            e = self._extent
            self._extent = (
                (i, j, i, j)
                if e is None
                else (min(e[0], i), min(e[1], j), max(e[2], i), max(e[3], j))
            )
        self.fixes[fix.unit_id] = fix
        self._xy[fix.unit_id] = (x, y)
        return True

    def remove(self, unit_id: str) -> None:
        """Forget a unit (a tombstone on the topic)."""
        cell = self._cell_of.pop(unit_id, None)
        if cell is not None:
            self._leave(unit_id, cell)
        self.fixes.pop(unit_id, None)
        self._xy.pop(unit_id, None)

    def _leave(self, unit_id: str, cell: Cell) -> None:
        members = self._cells.get(cell)
        if members is not None:
            members.discard(unit_id)
            if not members:
                del self._cells[cell]

    def xy(self, unit_id: str) -> tuple[float, float]:
        """The unit's projected position in metres."""
        return self._xy[unit_id]

    def rings(self, bounds: tuple[float, float, float, float]) -> Iterator[tuple[float, list[str]]]:
        """The units ring by ring of cells around ``bounds`` (projected ``xmin, ymin, xmax,
        ymax``), each ring with the least distance any unit of a later ring can have from
        ``bounds``; ends once every occupied cell was covered."""
        if self._extent is None:
            return
        i0, j0 = self.cell(bounds[0], bounds[1])
        i1, j1 = self.cell(bounds[2], bounds[3])
        ei0, ej0, ei1, ej1 = self._extent
        r = 0
        while True:
            units: list[str] = []
            for cell in _ring(i0 - r, j0 - r, i1 + r, j1 + r, r):
                members = self._cells.get(cell)
                if members:
                    units.extend(members)
            yield r * self.cell_m, units
            if i0 - r <= ei0 and j0 - r <= ej0 and i1 + r >= ei1 and j1 + r >= ej1:
                return
            r += 1


def _ring(i0: int, j0: int, i1: int, j1: int, r: int) -> Iterator[Cell]:
    """The cells on the border of the rectangle ``[i0, i1] x [j0, j1]`` (all of it at r 0)."""
    if r == 0:
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                yield (i, j)
        return
    for i in range(i0, i1 + 1):
        yield (i, j0)
        yield (i, j1)
    for j in range(j0 + 1, j1):
        yield (i0, j)
        yield (i1, j)
