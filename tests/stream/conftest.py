from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream.broker.embedded import EmbeddedBroker, start_broker


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh embedded broker (Tansu, memory storage) on a free loopback port."""
    embedded = start_broker()
    try:
        yield embedded
    finally:
        embedded.stop()
