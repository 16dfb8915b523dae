"""Access to the control room: bearer token, basic auth, the token query parameter."""

from __future__ import annotations

import base64

import pytest

from stream.control_room.access import Access


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_open_when_nothing_is_configured() -> None:
    assert Access().allows({}, {})
    assert Access().peer_headers() == {}


def test_bearer_token_in_header_or_query() -> None:
    access = Access(token="t0k")
    assert access.allows({"Authorization": "Bearer t0k"}, {})
    assert access.allows({"Authorization": "bearer t0k"}, {})
    assert access.allows({}, {"token": "t0k"})
    assert not access.allows({}, {})
    assert not access.allows({"Authorization": "Bearer t0"}, {})
    assert not access.allows({}, {"token": ""})
    assert access.challenge() == {"WWW-Authenticate": 'Bearer realm="hotspot"'}
    assert access.peer_headers() == {"Authorization": "Bearer t0k"}


def test_basic_auth() -> None:
    access = Access(user="sergeant", password="pw")
    assert access.allows(basic("sergeant", "pw"), {})
    assert not access.allows(basic("sergeant", "PW"), {})
    assert not access.allows(basic("constable", "pw"), {})
    assert not access.allows({}, {"token": "pw"})
    assert access.challenge() == {"WWW-Authenticate": 'Basic realm="hotspot"'}
    assert access.allows(access.peer_headers(), {})


def test_either_when_both_are_configured() -> None:
    access = Access(token="t0k", user="sergeant", password="pw")
    assert access.allows(basic("sergeant", "pw"), {})
    assert access.allows({"Authorization": "Bearer t0k"}, {})
    assert not access.allows(basic("sergeant", "t0k"), {})


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTSPOT_WEB_TOKEN", "abc")
    monkeypatch.delenv("HOTSPOT_WEB_USER", raising=False)
    assert Access.from_env() == Access(token="abc")
