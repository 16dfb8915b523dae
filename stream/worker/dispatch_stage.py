"""Dispatch suggestions: who to send to a hot spot at risk (docs/architecture.md, Dispatch).

The shell around :mod:`geofences.dispatch`. A :class:`DispatchDesk` holds every unit's last
fix (a :class:`geofences.positions.PositionView`, filled from the positions topic by
stream/worker/positions_feed.py) and, per hot spot, until when its open window is short (from
the short-windows topic, which each hot spot's owner writes: :meth:`DispatchDesk.review`). When
the coverage stage fires ``at_risk``, the owner writes a suggestion at once
(:meth:`DispatchDesk.on_alerts`); while the hot spot stays at risk it writes a new one when the
ranking changes, at most once per ``refresh_ms`` (:meth:`DispatchDesk.review`).

Suggestions are advisory and never touch the coverage ledgers: alerts stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import shapely

from geofences.coverage import Alert, HotspotCoverage, window_alert_id
from geofences.dispatch import (
    DispatchSettings,
    SuggestedUnit,
    Suggestion,
    at_risk_instance,
    is_busy,
    rank,
    ranking,
    short_until_ms,
)
from geofences.hotspots import HotSpotCollection
from geofences.positions import PositionView
from geofences.projection import LocalProjection
from geofences.windows import WindowInstance
from stream.records import Message, compact_json


@dataclass
class Watch:
    """A hot spot at risk: the alert its suggestions answer, and the last one written."""

    alert_id: str
    instance: WindowInstance
    ranking: tuple[tuple[str, bool], ...]
    sent_ms: int


def short_message(hotspot_id: str, until_ms: int | None) -> bytes:
    """A short-windows record's value: until when the hot spot's open window is short."""
    return orjson.dumps({"hotspot_id": hotspot_id, "short_until": until_ms})


class DispatchDesk:
    """Positions, short windows and the hot spots at risk this worker owns."""

    def __init__(
        self,
        collection: HotSpotCollection,
        settings: DispatchSettings,
        signal_timeout_ms: int,
    ) -> None:
        self.settings = settings
        self.signal_timeout_ms = signal_timeout_ms
        geometries = [h.geometry for h in collection.hotspots]
        projection = (
            LocalProjection.centred_on(shapely.GeometryCollection(geometries))
            if geometries
            else LocalProjection(0.0, 0.0)
        )
        self.view = PositionView(projection)
        self.polygons = {h.id: projection.project_geometry(h.geometry) for h in collection.hotspots}
        #: hot spot -> until when its open window is short (from the short-windows topic)
        self.short_until: dict[str, int] = {}
        #: hot spots at risk this worker owns, by id
        self.watches: dict[str, Watch] = {}
        #: hot spot -> the short-until this worker last wrote for it (hot spots it owns)
        self._short_written: dict[str, int | None] = {}
        #: whether the view has read the positions topic up to its end once (set by the
        #: positions feed): until then no suggestion is written, since an empty or partial
        #: view would name the wrong units; the first review after writes the due ones
        self.caught_up = False

    # -- the views ---------------------------------------------------------------------------

    def take_short(self, hotspot_id: str, value: Mapping[str, Any] | None) -> None:
        """A short-windows record (None: a tombstone)."""
        until = None if value is None else value.get("short_until")
        if isinstance(until, int) and not isinstance(until, bool):
            self.short_until[hotspot_id] = until
        else:
            self.short_until.pop(hotspot_id, None)

    # -- suggestions -------------------------------------------------------------------------

    def suggest(
        self, hotspot_id: str, instance: WindowInstance, now_ms: int
    ) -> tuple[SuggestedUnit, ...]:
        short = self.short_until
        return rank(
            self.view,
            self.polygons[hotspot_id],
            instance.unit_types,
            now_ms,
            self.signal_timeout_ms,
            lambda fix: is_busy(fix, hotspot_id, short, now_ms),
            self.settings,
        )

    def _write(
        self,
        hotspot_id: str,
        alert_id: str,
        instance: WindowInstance,
        now_ms: int,
        units: tuple[SuggestedUnit, ...] | None = None,
    ) -> Message:
        if units is None:
            units = self.suggest(hotspot_id, instance, now_ms)
        self.watches[hotspot_id] = Watch(alert_id, instance, ranking(units), now_ms)
        suggestion = Suggestion(alert_id, hotspot_id, now_ms, units)
        return hotspot_id.encode(), compact_json(suggestion.to_json_dict())

    def on_alerts(
        self, alerts: Iterable[Alert], ledgers: Mapping[str, HotspotCoverage], now_ms: int
    ) -> list[Message]:
        """Suggestions for the ``at_risk`` alerts just fired; ``met`` and ``gap`` end a watch."""
        out: list[Message] = []
        if not self.caught_up:
            return out
        for alert in alerts:
            hotspot_id = alert.hotspot_id
            if alert.type in ("met", "gap"):
                watch = self.watches.get(hotspot_id)
                if watch is not None and watch.instance.start_ms == alert.window_start_ms:
                    del self.watches[hotspot_id]
                continue
            if alert.type != "at_risk" or hotspot_id not in self.polygons:
                continue
            ledger = ledgers.get(hotspot_id)
            instance = next(
                (
                    i
                    for i in (ledger.instances() if ledger is not None else ())
                    if i.start_ms == alert.window_start_ms and i.end_ms == alert.window_end_ms
                ),
                None,
            )
            if instance is not None:
                out.append(self._write(hotspot_id, alert.alert_id, instance, now_ms))
        return out

    def review(
        self, ledgers: Mapping[str, HotspotCoverage], now_ms: int
    ) -> tuple[list[Message], list[Message]]:
        """For the owned hot spots' ``ledgers``: (suggestions due, short-windows changes).

        A hot spot still at risk gets a new suggestion when its ranking changed and the last
        was written ``refresh_ms`` ago or more; one at risk without a watch (after a restart or
        a rebalance) gets one at once. A watch ends with the risk, or with the hot spot's
        ownership."""
        suggestions: list[Message] = []
        shorts: list[Message] = []
        for hotspot_id in [h for h in self.watches if h not in ledgers]:
            del self.watches[hotspot_id]
        for hotspot_id in [h for h in self._short_written if h not in ledgers]:
            del self._short_written[hotspot_id]
        for hotspot_id in sorted(ledgers):
            ledger = ledgers[hotspot_id]
            until = short_until_ms(ledger, now_ms)
            if hotspot_id not in self._short_written or self._short_written[hotspot_id] != until:
                self._short_written[hotspot_id] = until
                shorts.append((hotspot_id.encode(), short_message(hotspot_id, until)))
            if hotspot_id not in self.polygons or not self.caught_up:
                continue
            instance = at_risk_instance(ledger, now_ms)
            if instance is None:
                self.watches.pop(hotspot_id, None)
                continue
            alert_id = window_alert_id("at_risk", instance.key)
            watch = self.watches.get(hotspot_id)
            if watch is None or watch.alert_id != alert_id:
                suggestions.append(self._write(hotspot_id, alert_id, instance, now_ms))
            elif now_ms - watch.sent_ms >= self.settings.refresh_ms:
                units = self.suggest(hotspot_id, instance, now_ms)
                if ranking(units) != watch.ranking:
                    suggestions.append(self._write(hotspot_id, alert_id, instance, now_ms, units))
        return suggestions, shorts
