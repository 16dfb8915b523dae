from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream.broker.embedded import BrokerError, EmbeddedBroker, start_broker


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
