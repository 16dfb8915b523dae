"""Worker settings: contract §1 options, each also settable by its environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from geofences.coverage import CoverageSettings
from geofences.presence import PresenceSettings
from stream.kafka import bootstrap_servers


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class TopicNames:
    """Every topic of contract §2, by its role; names are configurable."""

    pings: str = "pings"
    assignments: str = "assignments"
    geofence_events: str = "geofence-events"
    dwell_events: str = "dwell-events"
    coverage_alerts: str = "coverage-alerts"
    pings_dlq: str = "pings-dlq"
    assignments_dlq: str = "assignments-dlq"

    @classmethod
    def from_env(cls) -> TopicNames:
        return cls(
            pings=_env("HOTSPOT_TOPIC_PINGS", cls.pings),
            assignments=_env("HOTSPOT_TOPIC_ASSIGNMENTS", cls.assignments),
            geofence_events=_env("HOTSPOT_TOPIC_GEOFENCE_EVENTS", cls.geofence_events),
            dwell_events=_env("HOTSPOT_TOPIC_DWELL_EVENTS", cls.dwell_events),
            coverage_alerts=_env("HOTSPOT_TOPIC_COVERAGE_ALERTS", cls.coverage_alerts),
            pings_dlq=_env("HOTSPOT_TOPIC_PINGS_DLQ", cls.pings_dlq),
            assignments_dlq=_env("HOTSPOT_TOPIC_ASSIGNMENTS_DLQ", cls.assignments_dlq),
        )


@dataclass(frozen=True)
class Settings:
    broker: str = "kafka://localhost:9092"
    geofences: Path | None = None
    clock: str = "live"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    #: the URL other workers reach this one's web server at (default http://web_host:web_port)
    web_url: str | None = None
    #: base-map tiles for the control room's map, e.g. ``https://tile.example/{z}/{x}/{y}.png``;
    #: None draws no base map (control rooms are often offline)
    tile_url: str | None = None
    tile_attribution: str = ""
    data_dir: Path = Path("./hotspot-data")
    app_id: str = "hotspot"
    partitions: int = 8
    replication_factor: int = 1
    topics: TopicNames = field(default_factory=TopicNames)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    #: its presence rules are always ``presence`` (made so in ``__post_init__``): coverage has
    #: no exit grace of its own, it reads the presence rules' one
    coverage: CoverageSettings = field(default_factory=CoverageSettings)
    #: pings a presence batch takes at most (when that many are waiting): each batch costs a
    #: produce request, a message per coverage partition and Faust's handling of those, so a
    #: backlog goes through quicker in larger ones; a batch arriving slowly is closed by
    #: ``batch_within_s`` whatever its size (README: Performance)
    batch_size: int = 8000
    batch_within_s: float = 0.005
    #: how long the coverage agent gathers visit updates into one batch: its cost is mostly
    #: per hot spot and batch, so a batch of many presence batches costs far less per ping;
    #: alerts are decided at the same times whatever the batches (README: Performance)
    coverage_within_s: float = 2.0
    #: how often the presence stage's changed unit states are written to the changelog (each
    #: unit once, however often it pinged since), and the pings read before acked
    state_flush_s: float = 3.0
    tick_interval_s: float = 1.0
    session_timeout_s: float = 30.0
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if self.coverage.presence != self.presence:
            object.__setattr__(self, "coverage", replace(self.coverage, presence=self.presence))

    @property
    def bootstrap_servers(self) -> list[str]:
        return bootstrap_servers(self.broker)


def presence_from_env() -> PresenceSettings:
    defaults = PresenceSettings()
    return PresenceSettings(
        max_accuracy_m=float(_env("HOTSPOT_MAX_ACCURACY_M", str(defaults.max_accuracy_m))),
        exit_buffer_m=float(_env("HOTSPOT_EXIT_BUFFER_M", str(defaults.exit_buffer_m))),
        exit_grace_s=float(_env("HOTSPOT_EXIT_GRACE_S", str(defaults.exit_grace_s))),
        signal_timeout_s=float(_env("HOTSPOT_SIGNAL_TIMEOUT_S", str(defaults.signal_timeout_s))),
    )


def coverage_from_env(presence: PresenceSettings) -> CoverageSettings:
    """``HOTSPOT_SEPARATE_SERVICES`` is groups of unit types that must not patrol together,
    ``/``-separated, types within a group ``+``-separated: ``police+pcso/outreach``."""
    defaults = CoverageSettings()
    groups = defaults.separate_services
    spec = os.environ.get("HOTSPOT_SEPARATE_SERVICES")
    if spec is not None:
        groups = tuple(frozenset(t for t in g.split("+") if t) for g in spec.split("/") if g)
    return CoverageSettings(
        at_risk_lead_minutes=float(
            _env("HOTSPOT_AT_RISK_LEAD_MINUTES", str(defaults.at_risk_lead_minutes))
        ),
        presence=presence,
        separate_services=groups,
        co_patrol_minutes=float(_env("HOTSPOT_CO_PATROL_MINUTES", str(defaults.co_patrol_minutes))),
    )
