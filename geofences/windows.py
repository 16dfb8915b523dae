"""Window instances: a hot spot's patrol windows on concrete dates, in UTC ms (docs/interface.md,
Semantics: windows, coverage and alerts).

A window's ``start`` and ``end`` are wall times in the collection's timezone, read per local date
with ``zoneinfo`` so that the clock changes move the UTC bounds. A local time that does not exist
(the hour skipped in spring) or exists twice (the hour repeated in autumn) is read with
``fold=0`` (PEP 495): in Europe/London a skipped ``01:30`` is read with the winter offset and
lands on 02:30 BST (01:30Z), and a repeated ``01:30`` is its first occurrence, 01:30 BST (00:30Z).
An instance whose end so read is not after its start (one starting in the skipped hour and ending
less than an hour of wall time later) does not exist.

Windows added at run time arrive on the ``assignments`` topic (docs/interface.md, Messages:
Assignment): a window's fields plus ``hotspot_id``. They join the file's windows of that hot spot
(``merge_windows``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from geofences.errors import InvalidAssignment
from geofences.hotspots import WEEKDAYS, Window, parse_window

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class WindowInstance:
    """A window on one start date, in UTC epoch ms: the half-open interval ``[start_ms, end_ms)``.

    ``key`` identifies the instance across restarts and across identical windows: two windows
    that give the same bounds, ``required_minutes``, ``min_visit_minutes`` and ``unit_types`` give
    the same key (and count as one instance). Alert ids derive from it (docs/interface.md, Ids
    and duplicates).
    """

    hotspot_id: str
    start_ms: int
    end_ms: int
    required_minutes: float
    min_visit_minutes: float
    unit_types: frozenset[str] | None
    key: str
    #: ``required_minutes`` and ``min_visit_minutes`` in ms, made once (read at every look)
    required_ms: int = field(init=False, repr=False, compare=False)
    min_visit_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "required_ms", round(self.required_minutes * 60_000))
        object.__setattr__(self, "min_visit_ms", round(self.min_visit_minutes * 60_000))

    def eligible(self, unit_type: str) -> bool:
        """Whether a unit of ``unit_type`` counts for this instance (``unit_types`` None: any)."""
        return self.unit_types is None or unit_type in self.unit_types


def _fingerprint(required_minutes: float, min_visit_minutes: float, types: str) -> str:
    text = f"{float(required_minutes)!r}|{float(min_visit_minutes)!r}|{types}"
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _epoch_ms(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@lru_cache(maxsize=64)
def _zone(tz_name: str) -> ZoneInfo:
    return ZoneInfo(tz_name)


def _local_ms(day: date, at: time, zone: ZoneInfo) -> int:
    """UTC epoch ms of wall time ``at`` on ``day`` in ``zone``, nonexistent/ambiguous by fold=0."""
    return _epoch_ms(datetime.combine(day, at.replace(fold=0), tzinfo=zone))


def _local_date(epoch_ms: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(epoch_ms // 1000, tz=zone).date()


def window_instance(
    hotspot_id: str, window: Window, day: date, tz_name: str
) -> WindowInstance | None:
    """The instance of ``window`` starting on local date ``day``.

    ``None`` when ``window.days`` excludes ``day`` (days apply to the start date; ``end <= start``
    ends on the next date) or when the instance has no length (see the module docstring).
    """
    if day.weekday() not in window.days:
        return None
    zone = _zone(tz_name)
    start_ms = _local_ms(day, window.start, zone)
    end_day = day if window.end > window.start else day + timedelta(days=1)
    end_ms = _local_ms(end_day, window.end, zone)
    if end_ms <= start_ms:
        return None
    types = "*" if window.unit_types is None else ",".join(sorted(window.unit_types))
    fingerprint = _fingerprint(window.required_minutes, window.min_visit_minutes, types)
    return WindowInstance(
        hotspot_id=hotspot_id,
        start_ms=start_ms,
        end_ms=end_ms,
        required_minutes=float(window.required_minutes),
        min_visit_minutes=float(window.min_visit_minutes),
        unit_types=window.unit_types,
        key=f"{hotspot_id}|{start_ms}|{end_ms}|{fingerprint}",
    )


def instances_between(
    hotspot_id: str, windows: Iterable[Window], tz_name: str, from_ms: int, to_ms: int
) -> list[WindowInstance]:
    """Every instance of ``windows`` overlapping ``[from_ms, to_ms)``, ordered by start, end, key.

    One instance per window and local start date in ``tz_name``. Identical instances (same key)
    are returned once.
    """
    if to_ms <= from_ms:
        return []
    window_list = list(windows)
    if not window_list:
        return []
    zone = _zone(tz_name)
    day = _local_date(from_ms, zone) - timedelta(days=1)
    last = _local_date(to_ms, zone)
    found: dict[str, WindowInstance] = {}
    while day <= last:
        for window in window_list:
            instance = window_instance(hotspot_id, window, day, tz_name)
            if instance is not None and instance.start_ms < to_ms and instance.end_ms > from_ms:
                found.setdefault(instance.key, instance)
        day += timedelta(days=1)
    return sorted(found.values(), key=lambda i: (i.start_ms, i.end_ms, i.key))


def parse_assignment(
    obj: object, known_hotspots: Collection[str] | None = None
) -> tuple[str, Window]:
    """The hot spot id and window of an ``assignments`` topic value (docs/interface.md, Messages:
    Assignment).

    Raises ``InvalidAssignment`` with a one-line reason; with ``known_hotspots`` given, an id not
    in it is refused too.
    """
    if not isinstance(obj, dict):
        raise InvalidAssignment("assignment: not a JSON object")
    hotspot_id = obj.get("hotspot_id")
    if not isinstance(hotspot_id, str) or not hotspot_id.strip():
        raise InvalidAssignment('assignment: "hotspot_id" missing or not a non-empty string')
    if known_hotspots is not None and hotspot_id not in known_hotspots:
        raise InvalidAssignment(f"assignment: unknown hotspot_id {hotspot_id[:64]!r}")
    fields = {k: v for k, v in obj.items() if k != "hotspot_id"}
    try:
        window = parse_window(fields, f"assignment for {hotspot_id[:64]!r}")
    except ValueError as exc:
        raise InvalidAssignment(str(exc)) from exc
    return hotspot_id, window


def add_window(windows: tuple[Window, ...], window: Window) -> tuple[Window, ...]:
    """``windows`` with ``window`` appended, or ``windows`` itself when an equal one is there."""
    return windows if window in windows else (*windows, window)


def merge_windows(
    file_windows: Mapping[str, Iterable[Window]], assignments: Iterable[tuple[str, Window]]
) -> dict[str, tuple[Window, ...]]:
    """Windows per hot spot id: the file's, then each assignment's, equal windows kept once.

    Assignment ids missing from ``file_windows`` get their own entry; refuse them beforehand
    (``parse_assignment(..., known_hotspots=...)``) if that is not wanted.
    """
    merged: dict[str, tuple[Window, ...]] = {}
    for hotspot_id, windows in file_windows.items():
        merged[hotspot_id] = ()
        for window in windows:
            merged[hotspot_id] = add_window(merged[hotspot_id], window)
    for hotspot_id, window in assignments:
        merged[hotspot_id] = add_window(merged.get(hotspot_id, ()), window)
    return merged


def window_to_obj(window: Window) -> dict[str, Any]:
    """The JSON form of a window in the hot spot file; ``parse_window`` reads it back to an
    equal ``Window``."""
    return {
        "days": "daily" if len(window.days) == 7 else [WEEKDAYS[d] for d in sorted(window.days)],
        "start": window.start.strftime("%H:%M"),
        "end": window.end.strftime("%H:%M"),
        "required_minutes": window.required_minutes,
        "min_visit_minutes": window.min_visit_minutes,
        "unit_types": None if window.unit_types is None else sorted(window.unit_types),
    }
