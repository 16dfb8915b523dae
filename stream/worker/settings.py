"""Worker settings: the options of docs/interface.md, each also settable by its environment
variable.

Every setting the worker reads from its options or the environment is parsed here, once, when
it starts: :func:`worker_settings` gives the :class:`Settings`, or raises :class:`SettingError`
naming the option or variable and what is wrong with it (``hotspot worker`` prints that one
line and exits 2).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from geofences.coverage import CoverageSettings
from geofences.dispatch import DispatchSettings
from geofences.presence import PresenceSettings
from stream.kafka import PLAINTEXT, KafkaSecurity, bootstrap_servers, kafka_security
from stream.options import Option, SettingError, read


@dataclass(frozen=True)
class TopicNames:
    """Every topic of docs/interface.md (Topics), by its role; names are configurable."""

    pings: str = "pings"
    assignments: str = "assignments"
    geofence_events: str = "geofence-events"
    dwell_events: str = "dwell-events"
    coverage_alerts: str = "coverage-alerts"
    pings_dlq: str = "pings-dlq"
    assignments_dlq: str = "assignments-dlq"
    dispatch_suggestions: str = "dispatch-suggestions"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TopicNames:
        env = os.environ if environ is None else environ
        return cls(**{role: read(TOPIC_OPTIONS[role], {}, env) for role in TOPIC_OPTIONS})


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
    #: the dispatch suggestions' rules (geofences/dispatch.py)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    #: whether the worker publishes positions and writes dispatch suggestions at all
    dispatch_enabled: bool = True
    #: pings a presence batch takes at most (when that many are waiting): each batch costs a
    #: produce request, a message per coverage partition and Faust's handling of those, so a
    #: backlog goes through quicker in larger ones; a batch arriving slowly is closed by
    #: ``batch_within_s`` whatever its size
    batch_size: int = 8000
    batch_within_s: float = 0.005
    #: how long the coverage agent gathers visit updates into one batch: its cost is mostly
    #: per hot spot and batch, so a batch of many presence batches costs far less per ping;
    #: alerts are decided at the same times whatever the batches
    coverage_within_s: float = 2.0
    #: how often the changed unit states and ledgers are written to the changelogs (each once,
    #: however often it changed since), and the records read before committed
    state_flush_s: float = 3.0
    tick_interval_s: float = 1.0
    #: the consumer group session timeout; None: by broker (:func:`resolve_session_timeout`)
    session_timeout_s: float | None = None
    log_level: str = "warning"
    #: ``text`` or ``json`` (one object a line)
    log_format: str = "text"
    #: the work-arounds for the embedded broker (stream/broker/tansu.py), when it is Tansu
    broker_workarounds: bool = True
    #: TLS and SASL of every Kafka client the worker makes (``SECURITY_OPTIONS``)
    kafka: KafkaSecurity = PLAINTEXT

    def __post_init__(self) -> None:
        if self.coverage.presence != self.presence:
            object.__setattr__(self, "coverage", replace(self.coverage, presence=self.presence))

    @property
    def bootstrap_servers(self) -> list[str]:
        return bootstrap_servers(self.broker)


#: the session timeout on Kafka (its own default is 45 s)
SESSION_TIMEOUT_S = 30.0
#: the session timeout on the embedded broker: Tansu holds a JoinGroup for half the member's
#: session timeout, so a worker sees its first assignment that much later
TANSU_SESSION_TIMEOUT_S = 6.0


def resolve_session_timeout(settings: Settings, tansu: bool) -> Settings:
    """``settings`` with the session timeout by broker, unless one was given."""
    if settings.session_timeout_s is not None:
        return settings
    return replace(
        settings, session_timeout_s=TANSU_SESSION_TIMEOUT_S if tansu else SESSION_TIMEOUT_S
    )


# -- parsing --------------------------------------------------------------------------------
# Each parser takes the text given and returns the value, or raises ValueError saying why not.


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def positive(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise ValueError(f"must be more than 0, not {text}")
    return value


def non_negative(text: str) -> float:
    value = number(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, not {text}")
    return value


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None


def count(text: str) -> int:
    value = whole(text)
    if value < 1:
        raise ValueError(f"must be 1 or more, not {value}")
    return value


def port(text: str) -> int:
    value = whole(text)
    if not 1 <= value <= 65535:
        raise ValueError(f"not a port number (1-65535): {value}")
    return value


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {text!r}")
        return text.lower()

    return parse


def text(value: str) -> str:
    return value


def nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def optional(value: str) -> str | None:
    """Empty means unset."""
    return value or None


def optional_path(value: str) -> Path | None:
    return Path(value) if value else None


def path(value: str) -> Path:
    return Path(nonempty(value))


_KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def kafka_name(value: str) -> str:
    """A topic name, or a prefix of one (Kafka's legal characters)."""
    if not _KAFKA_NAME.fullmatch(value):
        raise ValueError(f"not a Kafka topic name (letters, digits, '.', '_', '-'): {value!r}")
    return value


def broker_url(value: str) -> str:
    servers = bootstrap_servers(value)
    if not servers:
        raise ValueError(f"no host:port in {value!r}")
    for server in servers:
        host, _, number_text = server.rpartition(":")
        if not host:
            raise ValueError(f"{server!r} is not host:port")
        port(number_text)
    return value


def http_url(value: str) -> str | None:
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {value!r}")
    return value


def services(value: str) -> tuple[frozenset[str], ...]:
    """Groups of unit types that must not patrol together, ``/``-separated, types within a
    group ``+``-separated: ``police+pcso/outreach``."""
    return tuple(frozenset(t for t in g.split("+") if t) for g in value.split("/") if g)


def switch(value: str) -> bool:
    return one_of("auto", "off")(value) == "auto"


def on_off(value: str) -> bool:
    return one_of("on", "off")(value) == "on"


_DEFAULT = Settings()
_PRESENCE = PresenceSettings()
_COVERAGE = CoverageSettings()
_DISPATCH = DispatchSettings()

#: the options of ``hotspot worker`` that are also flags, by Settings field
WORKER_OPTIONS: dict[str, Option] = {
    "broker": Option("HOTSPOT_BROKER", _DEFAULT.broker, broker_url, "--broker"),
    "geofences": Option(
        "HOTSPOT_GEOFENCES", None, optional_path, "--geofences", "hot spot file (default: demo)"
    ),
    "clock": Option(
        "HOTSPOT_CLOCK", _DEFAULT.clock, one_of("live", "event"), "--clock", "live or event"
    ),
    "web_port": Option("HOTSPOT_WEB_PORT", str(_DEFAULT.web_port), port, "--web-port"),
    "web_host": Option("HOTSPOT_WEB_HOST", _DEFAULT.web_host, nonempty, "--web-host"),
    "web_url": Option(
        "HOTSPOT_WEB_URL",
        None,
        http_url,
        "--web-url",
        "URL other workers reach this one at (default http://WEB_HOST:WEB_PORT)",
    ),
    "tile_url": Option(
        "HOTSPOT_TILE_URL",
        None,
        optional,
        "--tile-url",
        "base-map tile URL template for the control room (default: no base map)",
    ),
    "data_dir": Option("HOTSPOT_DATA_DIR", str(_DEFAULT.data_dir), path, "--data-dir"),
    "app_id": Option("HOTSPOT_APP_ID", _DEFAULT.app_id, kafka_name, "--app-id"),
    "partitions": Option(
        "HOTSPOT_PARTITIONS",
        str(_DEFAULT.partitions),
        count,
        "--partitions",
        "partitions of topics the worker creates (an existing pings topic wins)",
    ),
    "session_timeout_s": Option(
        "HOTSPOT_SESSION_TIMEOUT_S",
        None,
        positive,
        "--session-timeout",
        "consumer group session timeout (s; default: 6 on the embedded broker, 30 otherwise)",
    ),
    "state_flush_s": Option(
        "HOTSPOT_STATE_FLUSH_S",
        str(_DEFAULT.state_flush_s),
        positive,
        "--state-flush",
        "how often changed unit states and coverage ledgers are written to the changelogs (s)",
    ),
    "coverage_within_s": Option(
        "HOTSPOT_COVERAGE_WITHIN_S",
        str(_DEFAULT.coverage_within_s),
        positive,
        "--coverage-within",
        "how long the coverage agent gathers visit updates into one batch (s)",
    ),
    "log_level": Option(
        "HOTSPOT_LOG_LEVEL",
        _DEFAULT.log_level,
        one_of("debug", "info", "warning", "error", "critical"),
        "--log-level",
    ),
}

#: the worker's settings read from the environment only, by Settings field
ENV_OPTIONS: dict[str, Option] = {
    "log_format": Option("HOTSPOT_LOG_FORMAT", _DEFAULT.log_format, one_of("text", "json")),
    "tile_attribution": Option("HOTSPOT_TILE_ATTRIBUTION", "", text),
    "replication_factor": Option(
        "HOTSPOT_REPLICATION_FACTOR", str(_DEFAULT.replication_factor), count
    ),
    "broker_workarounds": Option("HOTSPOT_BROKER_WORKAROUNDS", "auto", switch),
    "dispatch_enabled": Option("HOTSPOT_DISPATCH", "on", on_off),
}

#: the topic names, by TopicNames field
TOPIC_OPTIONS: dict[str, Option] = {
    role: Option(f"HOTSPOT_TOPIC_{role.upper()}", getattr(TopicNames, role), kafka_name)
    for role in (
        "pings",
        "assignments",
        "geofence_events",
        "dwell_events",
        "coverage_alerts",
        "pings_dlq",
        "assignments_dlq",
        "dispatch_suggestions",
    )
}

#: the presence rules' settings (docs/interface.md, Semantics), by PresenceSettings field
PRESENCE_OPTIONS: dict[str, Option] = {
    "max_accuracy_m": Option("HOTSPOT_MAX_ACCURACY_M", str(_PRESENCE.max_accuracy_m), positive),
    "exit_buffer_m": Option("HOTSPOT_EXIT_BUFFER_M", str(_PRESENCE.exit_buffer_m), non_negative),
    "exit_grace_s": Option("HOTSPOT_EXIT_GRACE_S", str(_PRESENCE.exit_grace_s), non_negative),
    "signal_timeout_s": Option(
        "HOTSPOT_SIGNAL_TIMEOUT_S", str(_PRESENCE.signal_timeout_s), positive
    ),
}

#: the coverage rules' settings (docs/interface.md, Semantics), by CoverageSettings field
COVERAGE_OPTIONS: dict[str, Option] = {
    "at_risk_lead_minutes": Option(
        "HOTSPOT_AT_RISK_LEAD_MINUTES", str(_COVERAGE.at_risk_lead_minutes), non_negative
    ),
    "co_patrol_minutes": Option(
        "HOTSPOT_CO_PATROL_MINUTES", str(_COVERAGE.co_patrol_minutes), non_negative
    ),
    "separate_services": Option(
        "HOTSPOT_SEPARATE_SERVICES",
        "/".join("+".join(sorted(g)) for g in _COVERAGE.separate_services),
        services,
    ),
}


#: the dispatch suggestions' settings (docs/interface.md, Settings), by DispatchSettings field
DISPATCH_OPTIONS: dict[str, Option] = {
    "walking_speed_mps": Option(
        "HOTSPOT_WALKING_SPEED_MPS", str(_DISPATCH.walking_speed_mps), positive
    ),
    "refresh_s": Option("HOTSPOT_DISPATCH_REFRESH_S", f"{_DISPATCH.refresh_s:g}", positive),
}


def _read_all(
    options: Mapping[str, Option], given: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, Any]:
    return {key: read(option, given, environ) for key, option in options.items()}


def presence_from_env(environ: Mapping[str, str] | None = None) -> PresenceSettings:
    env = os.environ if environ is None else environ
    return PresenceSettings(**_read_all(PRESENCE_OPTIONS, {}, env))


def coverage_from_env(
    presence: PresenceSettings, environ: Mapping[str, str] | None = None
) -> CoverageSettings:
    env = os.environ if environ is None else environ
    return CoverageSettings(presence=presence, **_read_all(COVERAGE_OPTIONS, {}, env))


def dispatch_from_env(environ: Mapping[str, str] | None = None) -> DispatchSettings:
    env = os.environ if environ is None else environ
    return DispatchSettings(**_read_all(DISPATCH_OPTIONS, {}, env))


def check_other_settings(environ: Mapping[str, str]) -> None:
    """The settings other parts of the worker read from the environment themselves: the
    webhooks and the control room's access."""
    from stream.alerts.webhooks import ENV_VAR, parse_endpoints

    try:
        parse_endpoints(environ.get(ENV_VAR, ""))
    except ValueError as exc:
        reason = str(exc)
        if reason.startswith(ENV_VAR):
            reason = reason[len(ENV_VAR) :].lstrip(": ")
        raise SettingError(ENV_VAR, reason) from None
    if environ.get("HOTSPOT_WEB_PASSWORD") and not environ.get("HOTSPOT_WEB_USER"):
        raise SettingError("HOTSPOT_WEB_PASSWORD", "set without HOTSPOT_WEB_USER")


def worker_settings(given: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """The worker's settings from its flags (``given``: argparse's values, None where a flag
    was not given) and the environment; raises :class:`SettingError` on the first bad one."""
    env = os.environ if environ is None else environ
    values = _read_all(WORKER_OPTIONS, given, env)
    values.update(_read_all(ENV_OPTIONS, given, env))
    presence = presence_from_env(env)
    check_other_settings(env)
    return Settings(
        **values,
        kafka=kafka_security(given, env),
        topics=TopicNames.from_env(env),
        presence=presence,
        coverage=coverage_from_env(presence, env),
        dispatch=dispatch_from_env(env),
    )
