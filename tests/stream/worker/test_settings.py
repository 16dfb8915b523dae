"""The worker's settings: defaults that depend on the broker, and settings that fail cleanly."""

from __future__ import annotations

import os

import pytest

from stream import cli
from stream.broker.embedded import EMBEDDED_CLUSTER_ID
from stream.broker.tansu import is_tansu
from stream.worker.settings import (
    SESSION_TIMEOUT_S,
    TANSU_SESSION_TIMEOUT_S,
    Settings,
    resolve_session_timeout,
)


def worker_settings(*argv: str) -> Settings:
    return cli.settings_from_args(cli.build_parser().parse_args(["worker", *argv]))


@pytest.mark.parametrize(
    ("cluster_id", "expected"),
    [
        (EMBEDDED_CLUSTER_ID, TANSU_SESSION_TIMEOUT_S),
        ("Tansu-cluster-1", TANSU_SESSION_TIMEOUT_S),
        ("kRaFtClUsTeRiD0000000A", SESSION_TIMEOUT_S),
        (None, SESSION_TIMEOUT_S),
    ],
)
def test_the_session_timeout_defaults_by_broker(
    monkeypatch: pytest.MonkeyPatch, cluster_id: str | None, expected: float
) -> None:
    monkeypatch.delenv("HOTSPOT_SESSION_TIMEOUT_S", raising=False)
    settings = worker_settings()
    assert settings.session_timeout_s is None
    assert resolve_session_timeout(settings, is_tansu(cluster_id)).session_timeout_s == expected
    assert (TANSU_SESSION_TIMEOUT_S, SESSION_TIMEOUT_S) == (6.0, 30.0)


def test_an_explicit_session_timeout_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTSPOT_SESSION_TIMEOUT_S", "12")
    for tansu in (True, False):
        assert resolve_session_timeout(worker_settings(), tansu).session_timeout_s == 12
        given = worker_settings("--session-timeout", "20")
        assert resolve_session_timeout(given, tansu).session_timeout_s == 20


@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        ([], {"HOTSPOT_WEB_PORT": "abc"}, "HOTSPOT_WEB_PORT: not a whole number: 'abc'"),
        ([], {"HOTSPOT_EXIT_BUFFER_M": "x"}, "HOTSPOT_EXIT_BUFFER_M: not a number: 'x'"),
        ([], {"HOTSPOT_CLOCK": "bogus"}, "HOTSPOT_CLOCK: must be one of live, event, not 'bogus'"),
        ([], {"HOTSPOT_SIGNAL_TIMEOUT_S": "0"}, "HOTSPOT_SIGNAL_TIMEOUT_S: must be more than 0"),
        ([], {"HOTSPOT_MAX_ACCURACY_M": "inf"}, "HOTSPOT_MAX_ACCURACY_M: not a finite number"),
        ([], {"HOTSPOT_PARTITIONS": "2.5"}, "HOTSPOT_PARTITIONS: not a whole number: '2.5'"),
        ([], {"HOTSPOT_REPLICATION_FACTOR": "0"}, "HOTSPOT_REPLICATION_FACTOR: must be 1 or more"),
        ([], {"HOTSPOT_SESSION_TIMEOUT_S": "-1"}, "HOTSPOT_SESSION_TIMEOUT_S: must be more than 0"),
        ([], {"HOTSPOT_STATE_FLUSH_S": "soon"}, "HOTSPOT_STATE_FLUSH_S: not a number: 'soon'"),
        ([], {"HOTSPOT_BROKER": "kafka://broker"}, "HOTSPOT_BROKER: 'broker' is not host:port"),
        ([], {"HOTSPOT_APP_ID": "a b"}, "HOTSPOT_APP_ID: not a Kafka topic name"),
        ([], {"HOTSPOT_TOPIC_PINGS": ""}, "HOTSPOT_TOPIC_PINGS: not a Kafka topic name"),
        ([], {"HOTSPOT_LOG_LEVEL": "loud"}, "HOTSPOT_LOG_LEVEL: must be one of debug"),
        ([], {"HOTSPOT_WEB_URL": "worker-2:6066"}, "HOTSPOT_WEB_URL: not an http(s) URL"),
        ([], {"HOTSPOT_AT_RISK_LEAD_MINUTES": "-5"}, "HOTSPOT_AT_RISK_LEAD_MINUTES: must be 0"),
        ([], {"HOTSPOT_BROKER_WORKAROUNDS": "no"}, "HOTSPOT_BROKER_WORKAROUNDS: must be one of"),
        ([], {"HOTSPOT_WEBHOOKS": "https://x|s|yaml"}, "HOTSPOT_WEBHOOKS: entry 1: format must"),
        ([], {"HOTSPOT_WEB_PASSWORD": "pw"}, "HOTSPOT_WEB_PASSWORD: set without HOTSPOT_WEB_USER"),
        (["--web-port", "0"], {}, "--web-port: not a port number (1-65535): 0"),
        (["--clock", "wall"], {"HOTSPOT_CLOCK": "event"}, "--clock: must be one of live, event"),
        (["--coverage-within", "x"], {}, "--coverage-within: not a number: 'x'"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    line: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["worker", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"hotspot: {line}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_flag_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTSPOT_WEB_PORT", "abc")  # not read: the flag is given
    monkeypatch.setenv("HOTSPOT_CLOCK", "EVENT")
    settings = worker_settings("--web-port", "7000")
    assert (settings.web_port, settings.clock) == (7000, "event")


def test_the_defaults_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("HOTSPOT_")]:
        monkeypatch.delenv(name)
    assert worker_settings() == Settings()


def test_other_commands_read_their_variables_when_they_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad variable of the worker's does not break another command's parser."""
    monkeypatch.setenv("HOTSPOT_WEB_PORT", "abc")
    monkeypatch.setenv("HOTSPOT_PARTITIONS", "many")
    assert cli.main(["validate", "/nonexistent.geojson"]) == 1
    assert cli.main(["demo", "--duration", "0"]) == cli.EXIT_USAGE
    assert cli.main(["replay", "/nonexistent.jsonl"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "hotspot: HOTSPOT_WEB_PORT: not a whole number: 'abc'",
        "hotspot: HOTSPOT_PARTITIONS: not a whole number: 'many'",
    ]
