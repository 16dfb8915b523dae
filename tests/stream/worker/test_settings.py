"""The worker's settings: defaults that depend on the broker, and settings that fail cleanly."""

from __future__ import annotations

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
