"""Worker settings: contract §1 options, each also settable by its environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from geofences.presence import PresenceSettings


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

    @classmethod
    def from_env(cls) -> TopicNames:
        return cls(
            pings=_env("HOTSPOT_TOPIC_PINGS", cls.pings),
            assignments=_env("HOTSPOT_TOPIC_ASSIGNMENTS", cls.assignments),
            geofence_events=_env("HOTSPOT_TOPIC_GEOFENCE_EVENTS", cls.geofence_events),
            dwell_events=_env("HOTSPOT_TOPIC_DWELL_EVENTS", cls.dwell_events),
            coverage_alerts=_env("HOTSPOT_TOPIC_COVERAGE_ALERTS", cls.coverage_alerts),
            pings_dlq=_env("HOTSPOT_TOPIC_PINGS_DLQ", cls.pings_dlq),
        )


@dataclass(frozen=True)
class Settings:
    broker: str = "kafka://localhost:9092"
    geofences: Path | None = None
    clock: str = "live"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    data_dir: Path = Path("./hotspot-data")
    app_id: str = "hotspot"
    partitions: int = 8
    replication_factor: int = 1
    topics: TopicNames = field(default_factory=TopicNames)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    batch_size: int = 2000
    batch_within_s: float = 0.02
    tick_interval_s: float = 1.0
    session_timeout_s: float = 30.0
    log_level: str = "warning"

    @property
    def bootstrap_servers(self) -> list[str]:
        from stream.topics import bootstrap_servers

        return bootstrap_servers(self.broker)


def presence_from_env() -> PresenceSettings:
    defaults = PresenceSettings()
    return PresenceSettings(
        max_accuracy_m=float(_env("HOTSPOT_MAX_ACCURACY_M", str(defaults.max_accuracy_m))),
        exit_buffer_m=float(_env("HOTSPOT_EXIT_BUFFER_M", str(defaults.exit_buffer_m))),
        exit_grace_s=float(_env("HOTSPOT_EXIT_GRACE_S", str(defaults.exit_grace_s))),
        signal_timeout_s=float(_env("HOTSPOT_SIGNAL_TIMEOUT_S", str(defaults.signal_timeout_s))),
    )
