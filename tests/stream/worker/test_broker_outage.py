"""A broker outage while the worker runs: the network between them goes away for longer than
the session timeout and comes back. The worker keeps running, rejoins by itself, and the events
come out as if nothing had happened (duplicates allowed, under the same ids). Its log says so in
a few lines: that the broker is lost, and that it is back and after how long, not each of the
client libraries' errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.broker.embedded import start_broker
from stream.tools.processes import free_port
from tests.stream.harness import Worker, consume, ping_messages, produce, values
from tests.stream.netproxy import TcpProxy
from tests.stream.worker.test_presence_pipeline import (
    dwell_key,
    expected_events,
    geofence_key,
    scripted_day,
    square_file,
)

pytestmark = pytest.mark.integration

#: longer than the worker's session timeout in the tests (6 s): the group forgets the member
OUTAGE_S = 10.0


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """The embedded broker behind a proxy that every client goes through."""
    proxy_port = free_port()
    broker = start_broker(advertised_port=proxy_port)
    try:
        with TcpProxy(proxy_port, broker.port) as proxy:
            yield proxy
    finally:
        broker.stop()


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Events by id; a duplicate must be the same event."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        assert found.setdefault(row["event_id"], row) == row
    return found


def test_the_worker_rides_out_a_broker_outage(proxy: TcpProxy, tmp_path: Path) -> None:
    url = f"kafka://127.0.0.1:{proxy.listen_port}"
    bootstrap = f"127.0.0.1:{proxy.listen_port}"
    pings = scripted_day()
    before, after = pings[:6], pings[6:]
    worker = Worker(url, clock="event", geofences=square_file(tmp_path)).start()
    try:
        produce(bootstrap, "pings", ping_messages(before))
        assert len(consume(bootstrap, "geofence-events", 3, timeout_s=60)) >= 3  # three enters
        proxy.cut()
        time.sleep(OUTAGE_S)
        assert worker.process is not None and worker.process.poll() is None
        proxy.restore()
        produce(bootstrap, "pings", ping_messages(after))
        want_geofence, want_dwell = expected_events()
        geofence = by_id(values(consume(bootstrap, "geofence-events", len(want_geofence), 120)))
        dwell = by_id(values(consume(bootstrap, "dwell-events", len(want_dwell), 60)))
        assert worker.process.poll() is None, worker.log_tail()
    finally:
        code = worker.stop()
    log = worker.log_path.read_text(errors="replace").splitlines() if worker.log_path else []
    lost = [n for n, line in enumerate(log) if "lost the broker" in line]
    back = [n for n, line in enumerate(log) if "the broker is back after" in line]
    assert len(lost) == 1 and len(back) == 1 and lost[0] < back[0], "\n".join(log[-40:])
    outage = log[lost[0] : back[0] + 1]
    assert len(outage) < 20, "\n".join(outage)
    assert not [line for line in log if " ERROR " in line], "\n".join(log[-40:])
    assert sorted(map(geofence_key, geofence.values())) == sorted(want_geofence)
    assert sorted(map(dwell_key, dwell.values())) == sorted(want_dwell)
    assert code == 0
