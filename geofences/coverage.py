"""The coverage ledger of one hot spot: docs/interface.md, Semantics: windows, coverage and
alerts (when each alert is due: :mod:`geofences.rules`).

``HotspotCoverage`` is a pure stateful step: presence updates in (``visit_started``,
``visit_progress``, ``visit_ended``), ``advance(now_ms)`` decides alerts at a clock value,
``next_wakeup_ms()`` says when to call it again with no further updates, and ``to_dict()`` /
``from_dict()`` snapshot the state as a plain JSON-able dict; ``take_changes()`` says what
changed since it was last asked, for a holder that stores the snapshot in parts. It never reads
a clock: time is integer epoch milliseconds.

The windows are not part of the snapshot; they are passed in (``from_dict``, ``set_windows``). The
snapshot records which window instances already fired which alert, so a restored ledger never
repeats one.
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, cast
from zoneinfo import ZoneInfo

from geofences.hotspots import Window
from geofences.presence import PresenceSettings
from geofences.rules import (
    at_risk_due,
    at_risk_from,
    gap_due,
    judged,
    met_due,
    settled,
    settled_from,
)
from geofences.timefmt import format_ms, parse_rfc3339_ms
from geofences.windows import WindowInstance, instances_between

AlertType = Literal["met", "at_risk", "gap", "co_patrol"]

SNAPSHOT_VERSION = 1
_ALERT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:hotspot:coverage-alert")
_DAY_MS = 86_400_000
_HORIZON_MS = 9 * _DAY_MS
_REFRESH_MS = 8 * _DAY_MS
_FLAG: dict[AlertType, str] = {"met": "m", "at_risk": "r", "gap": "g"}
_FLAGS: tuple[tuple[AlertType, str], ...] = tuple(_FLAG.items())


@dataclass(frozen=True, slots=True)
class CoverageSettings:
    """The settings of coverage and its alerts (docs/interface.md, Semantics: windows, coverage
    and alerts).

    ``presence``: the presence rules the visits follow. An instance settles an exit grace after
    its end (``rules.settled``), since an exit can be decided that long after it is dated, so
    coverage reads the exit grace there and has none of its own. ``separate_services``: groups
    of unit types; units of two different groups must not patrol together. ``co_patrol_minutes``:
    a ``co_patrol`` alert fires when two such units have been present at once for more than
    this. ``visit_retention_minutes``: how long an ended visit is kept after its exit (beyond
    what any unsettled window instance needs), for windows added late by assignments and for
    presence updates arriving out of order across units.
    """

    at_risk_lead_minutes: float = 15.0
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    separate_services: tuple[frozenset[str], ...] = (
        frozenset({"police", "pcso"}),
        frozenset({"outreach"}),
    )
    co_patrol_minutes: float = 5.0
    visit_retention_minutes: float = 24 * 60.0
    #: the same in integer ms, made once (read at every look at the rules)
    lead_ms: int = field(init=False, repr=False, compare=False)
    grace_ms: int = field(init=False, repr=False, compare=False)
    co_patrol_ms: int = field(init=False, repr=False, compare=False)
    retention_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lead_ms", round(self.at_risk_lead_minutes * 60_000))
        object.__setattr__(self, "grace_ms", self.presence.exit_grace_ms)
        object.__setattr__(self, "co_patrol_ms", round(self.co_patrol_minutes * 60_000))
        object.__setattr__(self, "retention_ms", round(self.visit_retention_minutes * 60_000))

    def service_of(self, unit_type: str) -> int | None:
        """Index of the first group of ``separate_services`` holding ``unit_type``, else None."""
        for index, group in enumerate(self.separate_services):
            if unit_type in group:
                return index
        return None


@dataclass(frozen=True, slots=True)
class Alert:
    """A coverage alert (docs/interface.md, Messages: CoverageAlert); ``to_json_dict`` is its
    topic value.

    Window alerts carry the instance bounds, ``required_minutes`` and the coverage in ms when
    decided; ``co_patrol`` alerts carry ``unit_ids`` (sorted) and their ``unit_types`` instead.
    """

    alert_id: str
    type: AlertType
    hotspot_id: str
    ts_ms: int
    window_start_ms: int | None = None
    window_end_ms: int | None = None
    required_minutes: float | None = None
    covered_ms: int | None = None
    unit_ids: tuple[str, ...] = ()
    unit_types: tuple[str, ...] = ()

    @property
    def covered_minutes(self) -> float | None:
        """Coverage in minutes rounded to 2 decimals, as published."""
        return None if self.covered_ms is None else round(self.covered_ms / 60_000, 2)

    def to_json_dict(self) -> dict[str, Any]:
        """Exactly the CoverageAlert message (timestamps RFC 3339 UTC with ms)."""
        out: dict[str, Any] = {
            "alert_id": self.alert_id,
            "type": self.type,
            "hotspot_id": self.hotspot_id,
            "window_start": None
            if self.window_start_ms is None
            else format_ms(self.window_start_ms),
            "window_end": None if self.window_end_ms is None else format_ms(self.window_end_ms),
            "required_minutes": self.required_minutes,
            "covered_minutes": self.covered_minutes,
            "ts": format_ms(self.ts_ms),
        }
        if self.type == "co_patrol":
            out["unit_ids"] = list(self.unit_ids)
            out["unit_types"] = list(self.unit_types)
        return out

    @classmethod
    def from_json_dict(cls, obj: Mapping[str, Any]) -> Alert:
        """The alert of a ``to_json_dict`` value (e.g. read back from an outbox)."""

        def ms(key: str) -> int | None:
            value = obj.get(key)
            return None if value is None else parse_rfc3339_ms(str(value))

        covered = obj.get("covered_minutes")
        required = obj.get("required_minutes")
        ts_ms = ms("ts")
        if ts_ms is None:
            raise ValueError('alert has no "ts"')
        return cls(
            alert_id=str(obj["alert_id"]),
            type=cast(AlertType, obj["type"]),
            hotspot_id=str(obj["hotspot_id"]),
            ts_ms=ts_ms,
            window_start_ms=ms("window_start"),
            window_end_ms=ms("window_end"),
            required_minutes=None if required is None else float(required),
            covered_ms=None if covered is None else round(float(covered) * 60_000),
            unit_ids=tuple(obj.get("unit_ids") or ()),
            unit_types=tuple(obj.get("unit_types") or ()),
        )


def window_alert_id(alert_type: AlertType, instance_key: str) -> str:
    """Deterministic id of a met/at_risk/gap alert: uuid5 of type and instance key
    (docs/interface.md, Ids and duplicates)."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"{alert_type}|{instance_key}"))


def co_patrol_alert_id(hotspot_id: str, unit_a: str, unit_b: str, overlap_start_ms: int) -> str:
    """Deterministic id of a co_patrol alert: uuid5 of hot spot, sorted unit pair, overlap start."""
    first, second = sorted((unit_a, unit_b))
    text = f"co_patrol|{hotspot_id}|{first}|{second}|{overlap_start_ms}"
    return str(uuid.uuid5(_ALERT_NAMESPACE, text))


def union_length(intervals: Iterable[tuple[int, int]], lo: int, hi: int) -> int:
    """Length of the union of closed intervals ``(a, b)``, clipped to ``[lo, hi]``."""
    total = run_start = 0
    run_end: int | None = None
    for a, b in sorted(intervals):  # clipping keeps the order of the starts
        if a < lo:
            a = lo
        if b > hi:
            b = hi
        if b <= a:
            continue
        if run_end is not None and a <= run_end:
            if b > run_end:
                run_end = b
            continue
        if run_end is not None:
            total += run_end - run_start
        run_start, run_end = a, b
    if run_end is not None:
        total += run_end - run_start
    return total


class VisitSpan(Protocol):
    """What coverage reads of a visit: its unit type and span (``end_ms``: the exit, or the
    latest inside ping of an ongoing visit)."""

    @property
    def unit_type(self) -> str: ...
    @property
    def enter_ms(self) -> int: ...
    @property
    def end_ms(self) -> int: ...


def instance_covered_ms(instance: WindowInstance, visits: Iterable[VisitSpan]) -> int:
    """Coverage of ``instance`` in ms: the union of the eligible visits' spans, clipped to it.

    A visit is eligible when its unit type is (``WindowInstance.eligible``) and its whole span
    is at least ``min_visit_minutes``. The one rule behind the live ``met``/``gap`` alerts and
    the evaluation's patrol days (``geofences.evaluation``), so that both agree.
    """
    min_visit = instance.min_visit_ms
    start_ms, end_ms = instance.start_ms, instance.end_ms
    intervals = [
        (v.enter_ms, v.end_ms)
        for v in visits
        if v.end_ms > start_ms
        and v.enter_ms < end_ms
        and v.end_ms - v.enter_ms >= min_visit
        and instance.eligible(v.unit_type)
    ]
    return union_length(intervals, start_ms, end_ms)


@dataclass(slots=True)
class _Visit:
    """One visit of a unit: open until ended; ``end_ms`` is the latest inside ping while open and
    the exit ts once ended. ``marks`` holds the co_patrol keys already alerted for this visit."""

    unit_id: str
    unit_type: str
    enter_ms: int
    end_ms: int
    open: bool
    #: a shared empty frozenset until the first mark: most visits never get one, and an empty
    #: set of each visit's own would be most of its memory
    marks: frozenset[str] | set[str] = frozenset()
    #: ``(unit_id, enter_ms)``, made once: the one key object of every map and set of visits
    key: tuple[str, int] = field(init=False)
    #: the unit type's ``separate_services`` group (set by the ledger that holds the visit)
    service: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.unit_type = sys.intern(self.unit_type)
        self.key = (self.unit_id, self.enter_ms)

    def row(self) -> list[Any]:
        """The visit as a row of the snapshot (``HotspotCoverage.to_dict``)."""
        return [
            self.unit_id,
            self.unit_type,
            self.enter_ms,
            self.end_ms,
            self.open,
            sorted(self.marks),
        ]


#: what changed in a ledger since its last ``take_changes``, clock aside: whether the header did
#: (``to_dict`` without visits), the rows of the visits begun or changed, by (enter ms, unit id),
#: and the (unit id, enter ms) of those removed, sorted
Changes = tuple[bool, list[list[Any]], list[tuple[str, int]]]


def _row_order(key: tuple[str, int]) -> tuple[int, str]:
    return key[1], key[0]


def _pair_mark(visit: _Visit, other: _Visit, overlap_start_ms: int) -> str | None:
    """The co_patrol mark of a pair of visits (the alert fires once per pair), or None if
    either already holds it."""
    first, second = sorted((visit.unit_id, other.unit_id))
    mark = f"{first}|{second}|{overlap_start_ms}"
    return None if mark in visit.marks or mark in other.marks else mark


class HotspotCoverage:
    """Coverage ledger of one hot spot: coverage, ``met``, ``at_risk``, ``gap`` and
    ``co_patrol`` (docs/interface.md, Semantics: windows, coverage and alerts).

    Window instances are judged from the first clock value the ledger sees (``rules.judged``):
    one already settled then is never alerted on; one under way, or not yet settled, counts
    with whatever visits the ledger holds.
    """

    def __init__(
        self,
        hotspot_id: str,
        windows: Sequence[Window],
        tz_name: str,
        settings: CoverageSettings | None = None,
    ) -> None:
        self.hotspot_id = hotspot_id
        self.tz_name = tz_name
        self.settings = settings or CoverageSettings()
        self._windows: tuple[Window, ...] = tuple(windows)
        self._now: int | None = None
        self._since: int | None = None
        self._visits: dict[tuple[str, int], _Visit] = {}
        self._open: dict[str, _Visit] = {}
        self._fired: dict[str, tuple[int, str]] = {}
        self._instances: dict[str, WindowInstance] = {}
        self._ordered: list[WindowInstance] = []
        self._gen_to_ms: int | None = None
        self._dirty = True
        #: everything visits gained since the last full evaluation lies within this span of
        #: time (``_grow``); while it is shorter than ``_quiet_span``, nothing can fire sooner
        #: than ``_wake`` and ``advance`` need not look
        self._grown: tuple[int, int] | None = None
        self._quiet_span = 0
        self._min_visit_max = 0
        self._changed: set[tuple[str, int]] = set()
        self._services: dict[str, int | None] = {}
        #: ``separate_services`` group -> the visits of it the ledger holds: co_patrol needs
        #: two groups, most hot spots hold one at a time, and a visit's rivals are the others'
        self._visits_of_service: dict[int, dict[tuple[str, int], _Visit]] = {}
        self._wake: int | None = None
        #: covered ms by window instance, cached during one look at the rules (empty between)
        self._covered: dict[str, int] = {}
        #: what changed since ``take_changes``: the keys of the visits begun, changed or
        #: removed, each with whether the ledger held the visit then, and whether the header
        #: did (a new ledger's header is new)
        self._visit_changes: dict[tuple[str, int], bool] = {}
        self._header_change = True

    # -- presence updates -------------------------------------------------------------------

    @property
    def now_ms(self) -> int | None:
        """The latest clock value seen by ``advance``."""
        return self._now

    @property
    def since_ms(self) -> int | None:
        """The first clock value seen by ``advance``: when the ledger began to watch."""
        return self._since

    def _too_old(self, enter_ms: int) -> bool:
        return self._now is not None and enter_ms < self._now - self.settings.retention_ms

    def _note_changed(self, visit: _Visit) -> None:
        key = visit.key
        self._changed.add(key)
        changes = self._visit_changes
        if key not in changes:
            changes[key] = True

    def _header_changed(self) -> None:
        """Something the header holds changed (fired alerts, ``since_ms``), or something a
        restore with the header's older clock would read differently: visits pruned (an old
        visit's redelivery is ignored by the clock) or the windows."""
        self._header_change = True

    def _admit(self, visit: _Visit) -> _Visit:
        """Hold a new visit, knowing its service group."""
        key = visit.key
        self._visits[key] = visit
        if key not in self._visit_changes:
            self._visit_changes[key] = False
        service = visit.service = self._service_of(visit.unit_type)
        if service is not None:
            self._visits_of_service.setdefault(service, {})[visit.key] = visit
        return visit

    def _drop(self, visit: _Visit) -> None:
        del self._visits[visit.key]
        service = visit.service
        if service is not None:
            of_service = self._visits_of_service[service]
            del of_service[visit.key]
            if not of_service:
                del self._visits_of_service[service]

    def _touch(self, visit: _Visit) -> None:
        self._note_changed(visit)
        self._dirty = True

    def _grow(self, visit: _Visit, from_ms: int, to_ms: int) -> None:
        """A visit began or got longer, adding at most ``from_ms..to_ms`` to any coverage or
        co-patrol overlap. Unlike other changes this can only make ``met`` or ``co_patrol``
        fire, and only once enough has been added (``_quiet_span``)."""
        self._note_changed(visit)
        grown = self._grown
        if grown is not None:
            if grown[0] < from_ms:
                from_ms = grown[0]
            if grown[1] > to_ms:
                to_ms = grown[1]
        self._grown = (from_ms, to_ms)

    def visit_started(self, unit_id: str, unit_type: str, enter_ms: int) -> None:
        """A unit entered the hot spot at ``enter_ms``. Repeats are ignored.

        An open visit of the same unit that started earlier is closed at its latest inside ping
        (its end was lost); a start older than that visit, or older than the retention before
        the clock, is a redelivery and ignored.
        """
        if (unit_id, enter_ms) in self._visits or self._too_old(enter_ms):
            return
        current = self._open.get(unit_id)
        if current is not None:
            if enter_ms < current.enter_ms:
                return
            current.open = False
            self._touch(current)
        visit = self._admit(_Visit(unit_id, unit_type, enter_ms, enter_ms, True))
        self._open[unit_id] = visit
        if current is None:
            self._grow(visit, enter_ms, enter_ms)
        else:
            self._touch(visit)

    def visit_progress(self, unit_id: str, inside_ms: int) -> None:
        """The unit's latest usable ping inside the hot spot while present: an open visit
        counts up to it.

        Ignored without an open visit, or when not later than what the visit already has.
        """
        visit = self._open.get(unit_id)
        if visit is None or inside_ms <= visit.end_ms:
            return
        self._extend(visit, inside_ms)

    def _extend(self, visit: _Visit, end_ms: int) -> None:
        """The visit's end moves on to ``end_ms`` (not before its current end)."""
        # a visit too short to count yet may count whole once longer
        counted = visit.end_ms - visit.enter_ms >= self._min_visit_max
        self._grow(visit, visit.end_ms if counted else visit.enter_ms, end_ms)
        visit.end_ms = end_ms

    def _unit_left(self) -> None:
        """A unit is no longer present. That alone can only make ``at_risk`` fire (it needs no
        eligible unit present), and only from when it is due: the wake time is looked for
        again, not every rule (an exit that also lengthened its visit has grown it, ``_grow``).
        """
        now = self._now
        assert now is not None
        self._wake = self._compute_wake(now, self._latest_visit_ms())
        self._covered = {}

    def visit_ended(
        self,
        unit_id: str,
        exit_ms: int,
        enter_ms: int | None = None,
        unit_type: str | None = None,
    ) -> None:
        """The unit exited at ``exit_ms``; the whole visit is enter..exit.

        With ``enter_ms`` and ``unit_type`` (as a DwellEvent carries them) a visit whose start
        was never seen is recorded whole. Repeats and stale redeliveries are ignored.
        """
        if enter_ms is not None and (unit_id, enter_ms) in self._visits:
            known = self._visits[(unit_id, enter_ms)]
            if not known.open:
                return
        visit = self._open.get(unit_id)
        if visit is not None and (enter_ms is None or enter_ms == visit.enter_ms):
            end_ms = max(exit_ms, visit.enter_ms)
            visit.open = False
            del self._open[unit_id]
            if end_ms < visit.end_ms or self._now is None or self._dirty:
                visit.end_ms = end_ms
                self._touch(visit)
            else:
                self._extend(visit, end_ms)
                self._unit_left()
            return
        if enter_ms is None or unit_type is None or self._too_old(enter_ms):
            return
        if visit is not None:
            if enter_ms < visit.enter_ms:
                return
            visit.open = False
            del self._open[unit_id]
            self._touch(visit)
        whole = self._admit(_Visit(unit_id, unit_type, enter_ms, max(exit_ms, enter_ms), False))
        self._touch(whole)

    def set_windows(self, windows: Sequence[Window]) -> None:
        """Replace the hot spot's windows (file plus assignments); alerts already fired stay fired.

        New instances are considered from the latest clock value seen, as at start-up.
        """
        windows = tuple(windows)
        if windows == self._windows:
            return
        self._windows = windows
        self._header_changed()
        self._instances = {}
        self._ordered = []
        self._gen_to_ms = None
        self._dirty = True

    # -- queries ----------------------------------------------------------------------------

    @property
    def windows(self) -> tuple[Window, ...]:
        """The hot spot's windows: the file's plus those assigned at run time."""
        return self._windows

    def open_visits(self) -> list[tuple[str, str, int, int]]:
        """Visits still open: (unit id, unit type, enter ms, latest inside ms), by unit id."""
        return [(u, v.unit_type, v.enter_ms, v.end_ms) for u, v in sorted(self._open.items())]

    def present_units(self) -> dict[str, str]:
        """Units with an open visit, unit id to unit type."""
        return {unit_id: visit.unit_type for unit_id, visit in sorted(self._open.items())}

    def covered_ms(self, instance: WindowInstance) -> int:
        """Coverage of ``instance`` in ms (:func:`instance_covered_ms` of the ledger's visits):
        an ended visit counts enter..exit, an open one enter..latest inside ping."""
        return instance_covered_ms(instance, self._visits.values())

    def eligible_present(self, instance: WindowInstance) -> bool:
        """Whether a unit of an eligible type has an open visit (``at_risk`` needs none)."""
        return any(instance.eligible(v.unit_type) for v in self._open.values())

    def instances(self) -> list[WindowInstance]:
        """The unsettled window instances known to the ledger, by start (after an ``advance``)."""
        return list(self._ordered)

    def fired(self, instance_key: str) -> frozenset[AlertType]:
        """The alerts already fired for an instance (while it is unsettled)."""
        flags = self._fired.get(instance_key, (0, ""))[1]
        return frozenset(t for t, f in _FLAGS if f in flags)

    # -- the clock --------------------------------------------------------------------------

    def next_wakeup_ms(self) -> int | None:
        """A clock value before which ``advance`` emits nothing unless updates come: no later
        than the earliest at which it could.

        Its current clock value when updates wait to be decided (or no clock was seen yet:
        then 0); ``None`` when nothing can ever fire without updates. Updates that cannot make
        anything fire yet (a visit beginning or growing by less than ``_quiet_span``) leave it
        as it was.
        """
        grown = self._grown  # visits grew by ``_quiet_span`` or more: met or co_patrol may fire
        if self._dirty or (grown is not None and grown[1] - grown[0] >= self._quiet_span):
            return 0 if self._now is None else self._now
        return self._wake

    def advance(self, now_ms: int) -> list[Alert]:
        """Decide alerts at clock value ``now_ms``: ``co_patrol``, and per window instance
        ``met``, ``at_risk`` (with no eligible unit present) and ``gap``, each when its rule in
        :mod:`geofences.rules` says it is due.

        A ``now_ms`` below the latest seen is ignored. Each alert fires at most once; an instance
        ends with exactly one of met or gap. Alerts come out co_patrol first, then by instance
        start.
        """
        previous = self._now
        if previous is not None and now_ms < previous:
            return []
        self._now = now_ms
        if self._since is None:
            self._since = now_ms
            self._header_changed()
        grown = self._grown
        if (
            not self._dirty
            and (self._wake is None or now_ms < self._wake)
            and (grown is None or grown[1] - grown[0] < self._quiet_span)
        ):
            return []
        self._covered = {}
        self._ensure_instances(now_ms if previous is None else previous, now_ms)
        alerts = self._co_patrol(now_ms)
        alerts.extend(self._decide(now_ms))
        self._settle(now_ms)
        self._prune(now_ms)
        latest = self._latest_visit_ms()
        self._wake = self._compute_wake(now_ms, latest)
        self._min_visit_max = max((i.min_visit_ms for i in self._ordered), default=0)
        self._quiet_span = self._compute_quiet_span(latest)
        self._grown = None
        self._covered = {}
        self._dirty = False
        return alerts

    def _ensure_instances(self, from_ms: int, now_ms: int) -> None:
        """Know the instances judged from ``from_ms`` on (``rules.judged``) up to a horizon
        past ``now_ms``, generated again as the clock nears it."""
        grace = self.settings.grace_ms
        if self._gen_to_ms is None:
            low = from_ms - grace - 1  # instances_between keeps the ends after it: all judged
        elif self._gen_to_ms - now_ms < _REFRESH_MS:
            low = self._gen_to_ms
        else:
            return
        high = now_ms + _HORIZON_MS
        for instance in instances_between(self.hotspot_id, self._windows, self.tz_name, low, high):
            if judged(instance.end_ms, from_ms, grace):
                self._instances.setdefault(instance.key, instance)
        self._gen_to_ms = high
        self._ordered = sorted(
            self._instances.values(), key=lambda i: (i.start_ms, i.end_ms, i.key)
        )

    def _fire(
        self, alert_type: AlertType, instance: WindowInstance, now_ms: int, covered: int
    ) -> Alert:
        end, flags = self._fired.get(instance.key, (instance.end_ms, ""))
        self._fired[instance.key] = (end, flags + _FLAG[alert_type])
        self._header_changed()
        return Alert(
            alert_id=window_alert_id(alert_type, instance.key),
            type=alert_type,
            hotspot_id=self.hotspot_id,
            ts_ms=now_ms,
            window_start_ms=instance.start_ms,
            window_end_ms=instance.end_ms,
            required_minutes=instance.required_minutes,
            covered_ms=covered,
        )

    def _latest_visit_ms(self) -> int | None:
        return max((v.end_ms for v in self._visits.values()), default=None)

    def _coverage(self, instance: WindowInstance, latest: int | None) -> int:
        if latest is None or latest <= instance.start_ms:
            return 0
        covered = self._covered.get(instance.key)
        if covered is None:
            covered = self._covered[instance.key] = self.covered_ms(instance)
        return covered

    def _decide(self, now_ms: int) -> list[Alert]:
        grace = self.settings.grace_ms
        lead = self.settings.lead_ms
        latest = self._latest_visit_ms()
        alerts: list[Alert] = []
        for instance in self._ordered:
            start = instance.start_ms
            if start > now_ms and (latest is None or start >= latest) and instance.required_ms:
                continue  # not begun, nothing in it yet: nothing can fire
            flags = self._fired.get(instance.key, (0, ""))[1]
            if "m" in flags or "g" in flags:
                continue
            covered = self._coverage(instance, latest)
            if met_due(instance, covered):
                alerts.append(self._fire("met", instance, now_ms, covered))
            elif gap_due(instance, now_ms, covered, grace):
                alerts.append(self._fire("gap", instance, now_ms, covered))
            elif (
                "r" not in flags
                and at_risk_due(instance, now_ms, covered, lead)
                and not self.eligible_present(instance)
            ):
                alerts.append(self._fire("at_risk", instance, now_ms, covered))
        return alerts

    def _settle(self, now_ms: int) -> None:
        grace = self.settings.grace_ms
        if any(settled(i.end_ms, now_ms, grace) for i in self._ordered):
            self._ordered = [i for i in self._ordered if not settled(i.end_ms, now_ms, grace)]
            self._instances = {i.key: i for i in self._ordered}
        stale = [key for key, (end, _) in self._fired.items() if settled(end, now_ms, grace)]
        for key in stale:
            del self._fired[key]
            self._header_changed()

    def _prune(self, now_ms: int) -> None:
        horizon = now_ms - self.settings.retention_ms
        for instance in self._ordered:
            flags = self._fired.get(instance.key, (0, ""))[1]
            if "m" not in flags and "g" not in flags:
                horizon = min(horizon, instance.start_ms)
                break
        stale = [v for v in self._visits.values() if not v.open and v.end_ms < horizon]
        for visit in stale:
            key = visit.key
            self._drop(visit)
            self._header_changed()
            self._changed.discard(key)
            if self._visit_changes.pop(key, True):  # else it came and went since take_changes
                self._visit_changes[key] = True

    def _compute_wake(self, now_ms: int, latest: int | None) -> int | None:
        """The next clock value at which at_risk or gap could fire without updates (``latest``:
        the latest ``end_ms`` of the ledger's visits)."""
        grace = self.settings.grace_ms
        lead = self.settings.lead_ms
        wake: int | None = None
        if self._windows and self._gen_to_ms is not None:
            wake = self._gen_to_ms - _DAY_MS
        for instance in self._ordered:
            if wake is not None and instance.start_ms >= wake:
                break  # an instance is due no sooner than its start, and they come by start
            flags = self._fired.get(instance.key, (0, ""))[1]
            if "m" in flags or "g" in flags:
                continue
            due = settled_from(instance.end_ms, grace)  # gap, if still short
            if (
                "r" not in flags
                and now_ms < instance.end_ms
                and not self.eligible_present(instance)
            ):
                trigger = at_risk_from(instance, self._coverage(instance, latest), lead)
                if trigger is not None:
                    # already passed: after a full look only if a unit has left since
                    due = min(due, max(trigger, now_ms))
            if wake is None or due < wake:
                wake = due
        return wake

    def _compute_quiet_span(self, latest: int | None) -> int:
        """How long a span visits may gain before ``met`` or ``co_patrol`` could fire.

        Growing visits add at most the span they grew over (``_grow``) to an instance's
        coverage (a union of visits) and to the overlap of any pair of visits: ``met`` needs
        ``required - covered`` more of an unfired instance, ``co_patrol`` an unmarked pair of
        different services (one of them open: only open visits grow, or a new one) to pass
        ``co_patrol_ms``. The clock alone decides at_risk and gap (``_wake``); visits ending,
        windows changing or a unit re-entering make the next ``advance`` look again."""
        span = 1 << 62
        for instance in self._ordered:
            flags = self._fired.get(instance.key, (0, ""))[1]
            if "m" not in flags and "g" not in flags:
                short = instance.required_ms - self._coverage(instance, latest)
                if short < span:
                    span = short
        limit = self.settings.co_patrol_ms
        if len(self.settings.separate_services) > 1:
            span = min(span, limit + 1)  # a pair with a visit yet to begin
        if len(self._visits_of_service) < 2:
            return max(span, 0)
        for visit in self._open.values():
            # only a pair overlapping by more than this can shorten the span
            more_than = max(0, limit + 1 - span)
            for other, overlap_start, overlap in self._rivals(visit, more_than, ordered=False):
                if (not visit.marks and not other.marks) or _pair_mark(
                    visit, other, overlap_start
                ) is not None:
                    shorter = limit + 1 - overlap
                    if shorter < span:
                        span = shorter
        return max(span, 0)

    def _rivals(
        self, visit: _Visit, more_than_ms: int, ordered: bool = True
    ) -> list[tuple[_Visit, int, int]]:
        """Visits of units of another ``separate_services`` group than ``visit``'s unit (none
        if it has none) that overlap it by more than ``more_than_ms``: (visit, overlap start,
        overlap), by (enter, unit id) if ``ordered``."""
        service = visit.service
        if service is None or len(self._visits_of_service) < 2:
            return []
        found = []
        enter_ms, end_ms, unit_id = visit.enter_ms, visit.end_ms, visit.unit_id
        for other_service, visits in self._visits_of_service.items():
            if other_service == service:
                continue
            for other in visits.values():
                other_enter = other.enter_ms
                start = enter_ms if enter_ms > other_enter else other_enter
                other_end = other.end_ms
                overlap = (end_ms if end_ms < other_end else other_end) - start
                if overlap > more_than_ms and other.unit_id != unit_id:
                    found.append((other, start, overlap))
        if ordered and len(found) > 1:
            found.sort(key=lambda f: (f[0].enter_ms, f[0].unit_id))
        return found

    def _service_of(self, unit_type: str) -> int | None:
        try:
            return self._services[unit_type]
        except KeyError:
            service = self._services[unit_type] = self.settings.service_of(unit_type)
            return service

    def _co_patrol(self, now_ms: int) -> list[Alert]:
        """``co_patrol``: two units of different ``separate_services`` groups whose presence
        intervals (ended: enter..exit, open: enter..latest inside ping) overlap by more than
        ``co_patrol_minutes``. Once per pair of visits, in the order of (overlap start, unit
        pair): which visits changed since the last look differs after a restart (a restored
        ledger looks at all of them), and must not change the order of the alerts."""
        if not self._changed:
            return []
        limit = self.settings.co_patrol_ms
        found: list[tuple[int, str, str, Alert]] = []
        for key in sorted(self._changed):
            visit = self._visits.get(key)
            if visit is None:
                continue
            for other, overlap_start, _ in self._rivals(visit, limit):
                mark = _pair_mark(visit, other, overlap_start)
                if mark is None:
                    continue
                first, second = sorted((visit, other), key=lambda v: v.unit_id)
                visit.marks = {*visit.marks, mark}
                other.marks = {*other.marks, mark}
                self._note_changed(visit)
                self._note_changed(other)
                alert = Alert(
                    alert_id=co_patrol_alert_id(
                        self.hotspot_id, first.unit_id, second.unit_id, overlap_start
                    ),
                    type="co_patrol",
                    hotspot_id=self.hotspot_id,
                    ts_ms=now_ms,
                    unit_ids=(first.unit_id, second.unit_id),
                    unit_types=(first.unit_type, second.unit_type),
                )
                found.append((overlap_start, first.unit_id, second.unit_id, alert))
        self._changed.clear()
        found.sort(key=lambda f: f[:3])
        return [f[3] for f in found]

    # -- snapshot ---------------------------------------------------------------------------

    def to_dict(self, with_visits: bool = True) -> dict[str, Any]:
        """The ledger's state as a plain JSON-able dict, stable and round-tripping exactly::

            {"v": 1, "hotspot_id": str, "now_ms": int | None, "since_ms": int | None,
             "visits": [[unit_id, unit_type, enter_ms, end_ms, open, [co_patrol marks]], ...],
             "fired": {instance_key: [instance_end_ms, flags], ...}}

        ``visits`` are sorted by (enter_ms, unit_id); ``end_ms`` is the latest inside ping of an
        open visit and the exit ts of an ended one. ``flags`` holds ``m`` (met), ``r`` (at_risk),
        ``g`` (gap) in firing order; ``fired`` is sorted by key. Windows are not included.
        """
        snapshot: dict[str, Any] = {
            "v": SNAPSHOT_VERSION,
            "hotspot_id": self.hotspot_id,
            "now_ms": self._now,
            "since_ms": self._since,
        }
        if with_visits:
            visits = sorted(self._visits.values(), key=lambda v: (v.enter_ms, v.unit_id))
            snapshot["visits"] = [v.row() for v in visits]
        snapshot["fired"] = {key: [end, flags] for key, (end, flags) in sorted(self._fired.items())}
        return snapshot

    @property
    def has_changes(self) -> bool:
        """Whether ``take_changes`` has anything to report. A clock that merely moved on is no
        change: every instance that fires or settles meanwhile changes the header, so a ledger
        restored with an older clock decides nothing twice."""
        return self._header_change or bool(self._visit_changes)

    def take_changes(self) -> Changes:
        """What changed since the last call (or since ``from_dict``; for a new ledger, its
        header), for a holder that keeps the snapshot in parts and writes only what changed. A
        visit begun and removed in between is in neither list.

        The latest header (``to_dict(with_visits=False)`` when reported changed) and the rows
        kept by key restore the ledger through ``from_dict``, with the header's clock: every
        decision changes the header, so from the current clock on the restored ledger decides
        what this one would (a visit past retention may be pruned sooner)."""
        header, self._header_change = self._header_change, False
        changes = self._visit_changes
        if not changes:
            return header, [], []
        rows: list[list[Any]] = []
        removed: list[tuple[str, int]] = []
        visits = self._visits
        for key in sorted(changes, key=_row_order) if len(changes) > 1 else changes:
            visit = visits.get(key)
            if visit is None:
                removed.append(key)
            else:
                rows.append(visit.row())
        self._visit_changes = {}
        removed.sort()
        return header, rows, removed

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        windows: Sequence[Window],
        tz_name: str,
        settings: CoverageSettings | None = None,
    ) -> HotspotCoverage:
        """A ledger restored from ``to_dict`` output, with the hot spot's current windows.

        Raises ``ValueError`` for a snapshot of another shape or version.
        """
        try:
            if data["v"] != SNAPSHOT_VERSION:
                raise ValueError(f"coverage snapshot version {data['v']!r} is not supported")
            ledger = cls(str(data["hotspot_id"]), windows, tz_name, settings)
            now = data["now_ms"]
            ledger._now = None if now is None else int(now)
            since = data["since_ms"]
            ledger._since = None if since is None else int(since)
            for unit_id, unit_type, enter, end, is_open, marks in data["visits"]:
                visit = _Visit(str(unit_id), str(unit_type), int(enter), int(end), bool(is_open))
                if marks:
                    visit.marks = {str(m) for m in marks}
                ledger._admit(visit)
                if visit.open:
                    ledger._open[visit.unit_id] = visit
            for key, (end, flags) in data["fired"].items():
                ledger._fired[str(key)] = (int(end), str(flags))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed coverage snapshot: {exc}") from exc
        ledger._changed = set(ledger._visits)
        ledger._visit_changes = {}
        ledger._header_change = False
        return ledger


# -- plain text for chat tools ----------------------------------------------------------------


def _minutes(value: float | None) -> str:
    if value is None:
        return "?"
    text = f"{math.floor(value * 10 + 1e-9) / 10:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _local(epoch_ms: int | None, tz_name: str, fmt: str) -> str:
    if epoch_ms is None:
        return "?"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=ZoneInfo(tz_name)).strftime(fmt)


def render_text(alert: Alert, hotspot_name: str, tz_name: str) -> str:
    """One plain-text line for chat tools, times local to ``tz_name``, e.g.
    ``HS-03 Clock Tower: at risk — 12 of 40 min done, window ends 20:00``."""
    label = alert.hotspot_id
    if hotspot_name and hotspot_name != alert.hotspot_id:
        label = f"{alert.hotspot_id} {hotspot_name}"
    done = f"{_minutes(alert.covered_minutes)} of {_minutes(alert.required_minutes)} min done"
    start = _local(alert.window_start_ms, tz_name, "%H:%M")
    end = _local(alert.window_end_ms, tz_name, "%H:%M")
    if alert.type == "at_risk":
        return f"{label}: at risk — {done}, window ends {end}"
    if alert.type == "met":
        return f"{label}: met — {done}, window {start}-{end}"
    if alert.type == "gap":
        day = _local(alert.window_start_ms, tz_name, "%a %d %b")
        return f"{label}: gap — only {done}, window {start}-{end} on {day} missed"
    units = " and ".join(
        f"{unit_id} ({unit_type})"
        for unit_id, unit_type in zip(alert.unit_ids, alert.unit_types, strict=False)
    )
    at = _local(alert.ts_ms, tz_name, "%H:%M")
    return f"{label}: co-patrol — {units} patrolling together at {at}"
