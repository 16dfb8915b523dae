"""Webhook delivery of coverage alerts to duty sergeants: Standard Webhooks
signing, configuration, backoff, and delivery from the ``coverage-alerts`` topic on the embedded
broker to a real local HTTP receiver that fails, times out, refuses and restarts."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from geofences.coverage import Alert, render_text, window_alert_id
from stream.alerts.webhooks import (
    WebhookDispatcher,
    WebhookEndpoint,
    backoff_delay,
    endpoints_from_env,
    is_permanent_refusal,
    parse_endpoints,
    retry_after_s,
    secret_key,
    sign,
    verify,
    webhook_group_id,
)
from stream.broker.embedded import EmbeddedBroker
from stream.kafka import PLAINTEXT
from stream.tools.processes import free_port
from tests.stream.harness import run

EXAMPLE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EXAMPLE_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
EXAMPLE_TS = 1614265330
EXAMPLE_BODY = b'{"test": 2432232314}'
EXAMPLE_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SECRET = "whsec_" + base64.b64encode(b"hot spot test key 0123456789abcdef").decode()
TZ = "Europe/London"
NAMES = {"HS-01": "Market Square", "HS-02": "Bus Station", "HS-03": "Clock Tower"}


# -- unit: signing ----------------------------------------------------------------------------


def test_sign_matches_the_standard_webhooks_example() -> None:
    assert sign(EXAMPLE_SECRET, EXAMPLE_ID, EXAMPLE_TS, EXAMPLE_BODY) == EXAMPLE_SIGNATURE


def _example_headers(**override: str) -> dict[str, str]:
    headers = {
        "webhook-id": EXAMPLE_ID,
        "webhook-timestamp": str(EXAMPLE_TS),
        "webhook-signature": EXAMPLE_SIGNATURE,
    }
    headers.update(override)
    return headers


def test_verify_accepts_the_example_and_rejects_tampering() -> None:
    assert verify(EXAMPLE_SECRET, _example_headers(), EXAMPLE_BODY, now=EXAMPLE_TS)
    upper = {k.upper(): v for k, v in _example_headers().items()}
    assert verify(EXAMPLE_SECRET, upper, EXAMPLE_BODY, now=EXAMPLE_TS + 299)
    rotated = _example_headers(**{"webhook-signature": f"v1,bm90IGl0 {EXAMPLE_SIGNATURE}"})
    assert verify(EXAMPLE_SECRET, rotated, EXAMPLE_BODY, now=EXAMPLE_TS)
    assert not verify(EXAMPLE_SECRET, _example_headers(), b'{"test": 2432232315}', EXAMPLE_TS)
    assert not verify(EXAMPLE_SECRET, _example_headers(), EXAMPLE_BODY, now=EXAMPLE_TS + 301)
    assert not verify(EXAMPLE_SECRET, _example_headers(), EXAMPLE_BODY, now=EXAMPLE_TS - 301)
    assert not verify(SECRET, _example_headers(), EXAMPLE_BODY, now=EXAMPLE_TS)
    other_id = _example_headers(**{"webhook-id": "msg_other"})
    assert not verify(EXAMPLE_SECRET, other_id, EXAMPLE_BODY, now=EXAMPLE_TS)
    other_ts = _example_headers(**{"webhook-timestamp": str(EXAMPLE_TS + 1)})
    assert not verify(EXAMPLE_SECRET, other_ts, EXAMPLE_BODY, now=EXAMPLE_TS)
    assert not verify(EXAMPLE_SECRET, _example_headers(**{"webhook-timestamp": "x"}), b"", 0)
    missing = {"webhook-id": EXAMPLE_ID, "webhook-timestamp": str(EXAMPLE_TS)}
    assert not verify(EXAMPLE_SECRET, missing, EXAMPLE_BODY, now=EXAMPLE_TS)


def test_secret_without_prefix_is_its_utf8_bytes() -> None:
    assert secret_key("plain sécret") == "plain sécret".encode()
    signature = sign("plain", "id", 1, b"{}")
    headers = {"webhook-id": "id", "webhook-timestamp": "1", "webhook-signature": signature}
    assert verify("plain", headers, b"{}", now=1)
    with pytest.raises(ValueError, match="base64"):
        secret_key("whsec_not*base64")


# -- unit: configuration, backoff, status classes ---------------------------------------------


def test_endpoints_from_env() -> None:
    env = {
        "HOTSPOT_WEBHOOKS": " https://ops.example/hooks/a|whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,"
        "http://127.0.0.1:8080/plain , https://hooks.slack.example/services/T/B/X||text,"
        "https://teams.example/hook|raw-secret|TEXT,,"
    }
    endpoints = endpoints_from_env(env)
    assert endpoints == [
        WebhookEndpoint("https://ops.example/hooks/a", EXAMPLE_SECRET, "json"),
        WebhookEndpoint("http://127.0.0.1:8080/plain", None, "json"),
        WebhookEndpoint("https://hooks.slack.example/services/T/B/X", None, "text"),
        WebhookEndpoint("https://teams.example/hook", "raw-secret", "text"),
    ]
    assert endpoints_from_env({}) == []
    assert "/services/" not in repr(endpoints[2])
    assert "raw-secret" not in repr(endpoints[3])
    for bad in ("ftp://x/y", "not a url", "https://x/y|s|xml", "https://x/y|s|text|more"):
        with pytest.raises(ValueError, match="HOTSPOT_WEBHOOKS entry 1"):
            parse_endpoints(bad)
    with pytest.raises(ValueError, match="entry 2"):
        parse_endpoints("https://ok.example/,https://x/y|whsec_***")
    assert webhook_group_id("hotspot") == "hotspot-webhooks"


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    assert backoff_delay(0, 0.5, 60.0, rand=lambda: 1.0) == 0.5
    assert backoff_delay(3, 0.5, 60.0, rand=lambda: 1.0) == 4.0
    assert backoff_delay(7, 0.5, 60.0, rand=lambda: 1.0) == 60.0
    assert backoff_delay(10_000, 0.5, 60.0, rand=lambda: 1.0) == 60.0
    assert backoff_delay(5, 0.5, 60.0, rand=lambda: 0.0) == 0.0
    for attempt in range(40):
        delays = [backoff_delay(attempt, 0.05, 2.0) for _ in range(50)]
        assert all(0.0 <= d <= min(2.0, 0.05 * 2**attempt) for d in delays)
    assert max(backoff_delay(20) for _ in range(200)) > 30.0  # jitter spreads over the range


def test_status_classes_and_retry_after() -> None:
    assert [s for s in (400, 401, 403, 404, 410, 422, 499) if not is_permanent_refusal(s)] == []
    assert not any(is_permanent_refusal(s) for s in (200, 204, 301, 408, 429, 500, 503))
    assert retry_after_s("7", now=0) == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10.0
    assert retry_after_s("soon", now=0) is None
    assert retry_after_s(None, now=0) is None


# -- integration: a real receiver, the embedded broker ----------------------------------------

T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z


def _alert(n: int, alert_type: str = "at_risk") -> dict[str, Any]:
    start = T0 + n * 3_600_000
    return Alert(
        alert_id=window_alert_id(alert_type, f"HS-0{n % 3 + 1}|{start}"),  # type: ignore[arg-type]
        type=alert_type,  # type: ignore[arg-type]
        hotspot_id=f"HS-0{n % 3 + 1}",
        ts_ms=start + 1_800_000,
        window_start_ms=start,
        window_end_ms=start + 6 * 3_600_000,
        required_minutes=40.0,
        covered_ms=12 * 60_000 + n * 1000,
    ).to_json_dict()


Behaviour = Callable[[str], Awaitable[web.StreamResponse]]


@dataclass
class Hit:
    path: str
    msg_id: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float
    phase: int


@dataclass
class Receiver:
    """A local aiohttp server. ``script[path]`` lists the first responses for that path (``503``,
    ``"slow"``, ``400``...), then 200; ``refuse`` ids always get 400 on ``/refusing``;
    ``hang`` ids hang on every path while ``hang`` holds them."""

    port: int = field(default_factory=free_port)
    script: dict[str, list[int | str]] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)
    hang: set[str] = field(default_factory=set)
    hits: list[Hit] = field(default_factory=list)
    phase: int = 0
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        path = request.path
        plan = self.script.get(path, [])
        action: int | str = plan.pop(0) if plan else 200
        if msg_id in self.refuse and path == "/refusing":
            action = 400
        if msg_id in self.hang:
            action = "hang"
        hit = Hit(path, msg_id, dict(request.headers), body, 0, time.time(), self.phase)
        self.hits.append(hit)
        if action in ("slow", "hang"):
            hit.status = -1  # the client gave up first
            await asyncio.sleep(30)
            return web.Response(status=200)
        hit.status = int(action)
        return web.Response(status=int(action), text="ok" if action == 200 else "no")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def accepted(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path and 200 <= h.status < 300]

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]


async def _produce_alerts(
    bootstrap: str, topic: str, alerts: list[dict[str, Any]], junk: tuple[bytes, ...] = ()
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = {t["topic"] for t in await admin.describe_topics()}
        if topic not in existing:
            await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        for alert in alerts:
            key = alert["hotspot_id"].encode()
            await producer.send_and_wait(topic, value=orjson.dumps(alert), key=key)
        for value in junk:
            await producer.send_and_wait(topic, value=value, key=b"HS-01")
    finally:
        await producer.stop()


async def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _dispatcher(
    broker: EmbeddedBroker, topic: str, group: str, endpoints: list[WebhookEndpoint], **kw: Any
) -> WebhookDispatcher:
    options: dict[str, Any] = {
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.5,
        "timeout_s": 1.0,
        "session_timeout_s": 2.0,  # Tansu holds a JoinGroup for half the session timeout
    }
    options.update(kw)
    return WebhookDispatcher(
        broker.bootstrap, topic, group, endpoints, NAMES, TZ, security=PLAINTEXT, **options
    )


def _metric(outcome: str) -> float:
    value = REGISTRY.get_sample_value("hotspot_webhook_deliveries_total", {"outcome": outcome})
    return value or 0.0


def _assert_verified_once_each(receiver: Receiver, path: str, ids: set[str]) -> None:
    accepted = receiver.accepted(path)
    assert {h.msg_id for h in accepted} == ids
    assert len(accepted) == len(ids), "an alert id was accepted twice"
    for hit in receiver.on(path):
        assert verify(SECRET, hit.headers, hit.body, now=time.time()), hit
        assert hit.headers["Content-Type"] == "application/json"
        assert orjson.loads(hit.body)["alert_id"] == hit.msg_id
    for hit in accepted:  # anything else for that id came before, as a failed attempt
        earlier = [h for h in receiver.on(path) if h.msg_id == hit.msg_id and h is not hit]
        assert all(h.status not in range(200, 300) and h.at <= hit.at for h in earlier)


@pytest.mark.integration
def test_every_alert_arrives_once_by_id_through_failures_refusals_and_text(
    broker: EmbeddedBroker,
) -> None:
    alerts = [_alert(n, "gap" if n == 4 else "at_risk") for n in range(6)]
    ids = {a["alert_id"] for a in alerts}
    refused_id = alerts[2]["alert_id"]

    async def scenario() -> tuple[Receiver, WebhookDispatcher]:
        junk = (b"not json", b'{"no": "alert_id"}')
        await _produce_alerts(broker.bootstrap, "coverage-alerts", alerts, junk)
        refused_before = _metric("refused")
        receiver = Receiver(script={"/flaky": [503, 503, "slow", 503]}, refuse={refused_id})
        async with receiver:
            endpoints = [
                WebhookEndpoint(receiver.url("/flaky"), SECRET),
                WebhookEndpoint(receiver.url("/refusing"), SECRET),
                WebhookEndpoint(receiver.url("/chat"), None, "text"),
            ]
            dispatcher = _dispatcher(broker, "coverage-alerts", "t-webhooks", endpoints)
            task = asyncio.create_task(dispatcher.serve())
            try:
                expected = len(alerts) + len(junk)
                await _until(lambda: dispatcher.committed_count == expected, 25, "commits")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert _metric("refused") - refused_before == 1
        return receiver, dispatcher

    receiver, dispatcher = run(scenario())
    # the flaky endpoint: 503, 503, a timeout and 503 on the first alert, then everything
    flaky = receiver.on("/flaky")
    assert [h.status for h in flaky[:5]] == [503, 503, -1, 503, 200]
    assert len({h.msg_id for h in flaky[:5]}) == 1
    assert len({h.headers["webhook-timestamp"] for h in flaky}) >= 1
    _assert_verified_once_each(receiver, "/flaky", ids)
    # endpoints that had accepted the first alert were not re-sent it while /flaky retried
    assert len(receiver.on("/refusing")) == len(alerts)
    _assert_verified_once_each(receiver, "/refusing", ids - {refused_id})
    assert [h.status for h in receiver.on("/refusing") if h.msg_id == refused_id] == [400]
    # the chat endpoint: unsigned, one rendered line per alert
    chat = receiver.on("/chat")
    assert len(chat) == len(alerts)
    assert all("webhook-signature" not in h.headers for h in chat)
    by_id = {a["alert_id"]: a for a in alerts}
    for hit in chat:
        alert = Alert.from_json_dict(by_id[hit.msg_id])
        expected = render_text(alert, NAMES[alert.hotspot_id], TZ)
        assert orjson.loads(hit.body) == {"text": expected}
    assert any(": at risk — 12 of 40 min done, window ends " in h.body.decode() for h in chat)
    assert any(": gap — only 12 of 40 min done" in h.body.decode() for h in chat)
    assert dispatcher.delivered_count == 3 * len(alerts) - 1
    assert dispatcher.refused_count == 1
    assert dispatcher.retry_count == 4
    assert dispatcher.invalid_count == 2  # the junk records: skipped, committed, never sent


def test_without_endpoints_nothing_is_read_or_committed() -> None:
    async def scenario() -> WebhookDispatcher:
        # no broker listens there: with no endpoint the dispatcher must not even connect
        dispatcher = WebhookDispatcher(
            f"127.0.0.1:{free_port()}", "coverage-alerts", "g", [], NAMES, TZ, security=PLAINTEXT
        )
        await asyncio.wait_for(dispatcher.serve(), 2.0)
        return dispatcher

    dispatcher = run(scenario())
    assert dispatcher.committed_count == 0 and not dispatcher.running


@pytest.mark.integration
def test_restart_delivers_the_rest_and_never_resends_committed_alerts(
    broker: EmbeddedBroker,
) -> None:
    alerts = [_alert(n) for n in range(8)]
    ids = [a["alert_id"] for a in alerts]
    topic = "alerts-restart"

    async def scenario() -> tuple[Receiver, float, float]:
        # one partition, so "the first four" are the first four offsets
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await admin.close()
        await _produce_alerts(broker.bootstrap, topic, alerts)
        receiver = Receiver(hang={ids[4]})
        async with receiver:
            endpoints = [WebhookEndpoint(receiver.url("/ops"), SECRET)]
            first = _dispatcher(broker, topic, "t-restart", endpoints, timeout_s=20.0)
            await first.start()
            task = asyncio.create_task(first.run())
            await _until(lambda: first.committed_count == 4, 20, "four commits")
            await _until(lambda: any(h.msg_id == ids[4] for h in receiver.hits), 5, "hang")
            began = time.monotonic()
            await first.stop()  # a request is in flight: abandoned, its offset not committed
            stop_in_flight = time.monotonic() - began
            assert task.done() and first.committed_count == 4

            receiver.hang.clear()
            receiver.phase = 1
            second = _dispatcher(broker, topic, "t-restart", endpoints)
            task = asyncio.create_task(second.serve())
            try:
                await _until(lambda: second.committed_count == 4, 25, "the rest")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

            # stopped in a backoff sleep (receiver refusing the connection) is prompt too
            dead = WebhookEndpoint(f"http://127.0.0.1:{free_port()}/gone", SECRET)
            third = _dispatcher(
                broker, topic, "t-backoff", [dead], backoff_base_s=5.0, backoff_cap_s=5.0
            )
            task = asyncio.create_task(third.serve())
            await _until(lambda: third.retry_count >= 1, 20, "a retry")
            began = time.monotonic()
            await third.stop()
            stop_in_backoff = time.monotonic() - began
            await asyncio.gather(task, return_exceptions=True)
            assert third.committed_count == 0
        return receiver, stop_in_flight, stop_in_backoff

    receiver, stop_in_flight, stop_in_backoff = run(scenario())
    assert stop_in_flight < 3.0
    assert stop_in_backoff < 3.0
    first_phase = [h.msg_id for h in receiver.hits if h.phase == 0]
    second_phase = [h.msg_id for h in receiver.hits if h.phase == 1]
    assert first_phase == ids[:5]
    assert second_phase == ids[4:]  # the abandoned one again, same id; nothing committed again
    _assert_verified_once_each(receiver, "/ops", set(ids))
