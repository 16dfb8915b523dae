from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from stream.broker.embedded import BrokerError, EmbeddedBroker, start_broker
from tests.stream.harness import CHROMIUM


def _start_on_a_free_port(tries: int = 3) -> EmbeddedBroker:
    """Tests run in parallel processes: a port found free can be taken by another test's
    broker or worker before Tansu binds it, so a start that fails is tried on a new port."""
    for attempt in range(tries):
        try:
            return start_broker()
        except BrokerError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh embedded broker (Tansu, memory storage) on a free loopback port."""
    embedded = _start_on_a_free_port()
    try:
        yield embedded
    finally:
        embedded.stop()


@pytest.fixture
def sync_api() -> Any:
    """Playwright's sync API, or a skip (locally) / a failure (when ``CI`` is set)."""
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright import sync_api as api
    except ImportError:
        problems.append("playwright is not installed (pip install playwright)")
    if problems:
        message = "browser test cannot run: " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return api
