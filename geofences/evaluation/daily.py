"""One row per hot spot and local date: minutes, visits, whether it was a patrol day, cost,
crime and harm (docs/interface.md, Evaluation: daily.csv).

Local dates are the hot spot file's (``HotSpotCollection.timezone``), clock changes included: a
date is local midnight to local midnight, 23 or 25 hours on the days the clocks change. A visit
across midnight counts on each date with the part of it that falls there.

A patrol day is decided by the rule of the live ``met`` alert, not a copy of it: every window
instance starting on that date must have ``geofences.rules.met_due`` of
``geofences.coverage.instance_covered_ms`` over the ledger's visits (eligible unit types,
``min_visit_minutes``, required minutes). On a date with no instance the hot spot's union of
visits must reach a threshold (``--patrol-day-minutes``) instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from geofences.coverage import instance_covered_ms, union_length
from geofences.evaluation.inputs import Crime, LedgerVisit, local_day_ms
from geofences.hotspots import HotSpot, HotSpotCollection
from geofences.index import HotSpotIndex
from geofences.rules import met_due
from geofences.windows import WindowInstance, window_instance

_MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class DailyRow:
    """A hot spot on one local date. Minutes are kept in ms (exact); ``cost_gbp`` is the minutes
    of the unit types with a rate times that rate, ``uncosted_ms`` the minutes of the others."""

    hotspot_id: str
    date: date
    unit_ms: int
    covered_ms: int
    ms_by_type: Mapping[str, int]
    visits: int
    units: int
    windows: int
    windows_met: int
    patrol_day: bool
    cost_gbp: float
    uncosted_ms: int
    crimes: int
    harm: float
    harm_unknown: int


@dataclass(frozen=True, slots=True)
class Daily:
    """The daily rows (by hot spot in file order, then date) and what did not fit in them."""

    rows: list[DailyRow]
    unit_types: list[str]
    #: ledger visits of hot spots the file does not hold, by hot spot id
    unknown_hotspots: Mapping[str, int] = field(default_factory=dict)
    #: crimes on the dates in no hot spot, and crimes on other dates
    crimes_outside: int = 0
    crimes_off_dates: int = 0


def dates_between(first: date, last: date) -> list[date]:
    """Every date of ``[first, last]``."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def instances_on(hotspot: HotSpot, day: date, tz_name: str) -> list[WindowInstance]:
    """The hot spot's window instances starting on local date ``day`` (identical ones once)."""
    found: dict[str, WindowInstance] = {}
    for window in hotspot.windows:
        instance = window_instance(hotspot.id, window, day, tz_name)
        if instance is not None:
            found.setdefault(instance.key, instance)
    return sorted(found.values(), key=lambda i: (i.start_ms, i.end_ms, i.key))


def windows_met(
    hotspot: HotSpot, day: date, tz_name: str, visits: Sequence[LedgerVisit]
) -> tuple[int, int]:
    """(instances starting on ``day``, how many of them are met by ``visits``), by the live
    ``met`` rule."""
    instances = instances_on(hotspot, day, tz_name)
    met = sum(1 for i in instances if met_due(i, instance_covered_ms(i, visits)))
    return len(instances), met


def day_parts(visit: LedgerVisit, lo: int, hi: int) -> tuple[int, int] | None:
    """The part ``(start, end)`` of a visit within ``[lo, hi)``, or None when it has none; a
    visit of no length is in the date it happens on."""
    if visit.exit_ms == visit.enter_ms:
        return (visit.enter_ms, visit.enter_ms) if lo <= visit.enter_ms < hi else None
    start, end = max(visit.enter_ms, lo), min(visit.exit_ms, hi)
    return (start, end) if end > start else None


def daily(
    collection: HotSpotCollection,
    visits: Iterable[LedgerVisit],
    crimes: Iterable[Crime],
    first: date,
    last: date,
    costs: Mapping[str, float],
    patrol_day_minutes: float = 15.0,
) -> Daily:
    """The daily rows of ``[first, last]`` for every hot spot of ``collection``.

    A crime counts for every hot spot containing it, boundary included (``HotSpotIndex``, the
    rule pings follow), on its local date.
    """
    if last < first:
        raise ValueError("the last date is before the first")
    tz = collection.timezone
    days = dates_between(first, last)
    bounds = {day: local_day_ms(day, tz) for day in days}
    by_hotspot: dict[str, list[LedgerVisit]] = defaultdict(list)
    unit_types: set[str] = set()
    for visit in visits:
        by_hotspot[visit.hotspot_id].append(visit)
        unit_types.add(visit.unit_type)
    known = collection.by_id()
    unknown = {h: len(v) for h, v in sorted(by_hotspot.items()) if h not in known}

    index = HotSpotIndex(collection.hotspots)
    crime_counts: dict[tuple[str, date], list[Crime]] = defaultdict(list)
    lo_all, hi_all = bounds[first][0], bounds[last][1]
    outside = off_dates = 0
    for crime in crimes:
        if not lo_all <= crime.occurred_ms < hi_all:
            off_dates += 1
            continue
        day = next(d for d in days if bounds[d][0] <= crime.occurred_ms < bounds[d][1])
        inside = index.containing(crime.lon, crime.lat)
        if not inside:
            outside += 1
        for hotspot_id in inside:
            crime_counts[(hotspot_id, day)].append(crime)

    threshold_ms = round(patrol_day_minutes * _MINUTE_MS)
    rows: list[DailyRow] = []
    for hotspot in collection.hotspots:
        mine = by_hotspot.get(hotspot.id, [])
        for day in days:
            lo, hi = bounds[day]
            parts: list[tuple[int, int]] = []
            by_type: dict[str, int] = dict.fromkeys(sorted(unit_types), 0)
            units: set[str] = set()
            for visit in mine:
                part = day_parts(visit, lo, hi)
                if part is None:
                    continue
                parts.append(part)
                by_type[visit.unit_type] += part[1] - part[0]
                units.add(visit.unit_id)
            unit_ms = sum(b - a for a, b in parts)
            covered = union_length(parts, lo, hi)
            windows, met = windows_met(hotspot, day, tz, mine)
            patrol = met == windows if windows else covered >= threshold_ms
            cost = sum(ms / _MINUTE_MS * costs[t] for t, ms in by_type.items() if t in costs)
            uncosted = sum(ms for t, ms in by_type.items() if t not in costs)
            day_crimes = crime_counts.get((hotspot.id, day), [])
            rows.append(
                DailyRow(
                    hotspot_id=hotspot.id,
                    date=day,
                    unit_ms=unit_ms,
                    covered_ms=covered,
                    ms_by_type=by_type,
                    visits=len(parts),
                    units=len(units),
                    windows=windows,
                    windows_met=met,
                    patrol_day=patrol,
                    cost_gbp=cost,
                    uncosted_ms=uncosted,
                    crimes=len(day_crimes),
                    harm=sum(c.harm for c in day_crimes if c.harm is not None),
                    harm_unknown=sum(1 for c in day_crimes if c.harm is None),
                )
            )
    return Daily(rows, sorted(unit_types), unknown, outside, off_dates)
