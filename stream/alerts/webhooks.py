"""Delivery of coverage alerts to webhooks, for duty sergeants and their chat tools.

The durable outbox is the ``coverage-alerts`` topic itself. A :class:`WebhookDispatcher` reads it
in its own consumer group (:func:`webhook_group_id`: ``<app_id>-webhooks``) with auto-commit off
and ``auto_offset_reset="earliest"``, POSTs every alert to every configured endpoint, and commits
a record's offset only once every endpoint has either accepted it (2xx) or refused it for good
(a 4xx other than 408 and 429: one log line and a count, no retry). 5xx, 408, 429, 3xx, timeouts
and connection errors are retried with exponential backoff and full jitter, for as long as it
takes; an endpoint that already accepted a record is not sent it again while the others retry.
So an outage of a receiver or a restart of the worker loses no alert. A redelivery after a crash
(the record was sent but its offset not yet committed) may send an alert again, always with the
same ``webhook-id`` (the alert's ``alert_id``), so a receiver drops duplicates by id.

Requests follow the Standard Webhooks scheme (https://www.standardwebhooks.com/): headers
``webhook-id``, ``webhook-timestamp`` (integer seconds of the attempt) and, when the endpoint has
a secret, ``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")).
A secret ``whsec_<base64>`` gives the key bytes by decoding the base64 part; any other string is
used as its UTF-8 bytes. :func:`sign` and :func:`verify` are pure, for receivers and tests.

Configuration, environment variable ``HOTSPOT_WEBHOOKS``: comma-separated entries, each

    URL                     JSON body, unsigned
    URL|SECRET              JSON body, signed with SECRET
    URL|SECRET|text         {"text": "<one line>"}, for chat tools (Slack/Teams-style webhooks)
    URL||text               plain text, unsigned

for example ``HOTSPOT_WEBHOOKS="https://ops.example/hooks/alerts|whsec_MfKQ9r8G...,
https://hooks.slack.com/services/T0/B0/XXXX||text"``. The format ``json`` (the default) posts
the CoverageAlert JSON exactly as it is on the topic (docs/interface.md, Messages); ``text`` posts the line of
:func:`geofences.coverage.render_text`, e.g. ``HS-03 Clock Tower: at risk — 12 of 40 min done,
window ends 20:00``. URLs and secrets must not contain ``,`` or ``|``. Logs and metrics name an
endpoint by its position and host only (chat webhook URLs carry tokens in their path).

Dispatch suggestions (``dispatch-suggestions``, docs/interface.md) are read in the same group and
delivered as their own requests, committed and retried like alerts, with ``webhook-id`` the
``suggestion_id``: ``json`` endpoints get the DispatchSuggestion as on the topic, ``text`` ones
the line of :func:`geofences.dispatch.render_text`, e.g. ``HS-03 Clock Tower: at risk — nearest:
police-04, 420 m (~5 min)``. A suggestion is decided after its alert, so the alert is never held
back for it; but when both come in one poll, as they mostly do (the worker writes them
together), a ``text`` endpoint gets the alert's line with `` — nearest: …`` appended and not the
suggestion's own line. Otherwise the suggestion's line is the next one in the chat.

Metrics: ``hotspot_webhook_deliveries_total{outcome}`` with outcome ``delivered`` (2xx),
``refused`` (permanent 4xx), ``retried`` (each failed attempt that will be retried) and
``invalid`` (a record that is not a CoverageAlert, or cannot be rendered as text; skipped).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import TopicPartition
from prometheus_client import Counter

from geofences import dispatch
from geofences.coverage import Alert, render_text
from stream.kafka import KafkaSecurity
from stream.worker.faust_internals import coordinator_request, group_coordinator

if TYPE_CHECKING:
    from stream.worker.settings import Settings

log = logging.getLogger(__name__)

ENV_VAR = "HOTSPOT_WEBHOOKS"
SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
USER_AGENT = "hotspot-webhooks/1"
RETRIED_4XX = frozenset({408, 429})

deliveries = Counter(
    "hotspot_webhook_deliveries_total", "Webhook deliveries of coverage alerts", ["outcome"]
)

for _outcome in ("delivered", "refused", "retried", "invalid"):
    deliveries.labels(_outcome)

WebhookFormat = Literal["json", "text"]
T = TypeVar("T")


# -- signing (pure) ---------------------------------------------------------------------------


def secret_key(secret: str) -> bytes:
    """Key bytes of a secret: base64-decoded after ``whsec_``, else the UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("webhook secret after 'whsec_' is not valid base64") from None
    if not secret:
        raise ValueError("webhook secret is empty")
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{msg_id}.{timestamp}.{body}`` (Standard Webhooks)."""
    content = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance_s: float = 300,
) -> bool:
    """Whether ``headers`` carry a valid signature of ``body`` made within ``tolerance_s`` of
    ``now`` (epoch seconds). Header names are matched case-insensitively; the signature header
    may list several space-separated signatures (key rotation), any one valid is enough."""
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, msg_id, timestamp, body).encode()
    return any(
        hmac.compare_digest(candidate.encode(), expected)
        for candidate in signatures.split()
        if candidate.startswith(f"{SIGNATURE_VERSION},")
    )


def backoff_delay(
    attempt: int,
    base_s: float = 0.5,
    cap_s: float = 60.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Full-jitter exponential backoff before retry number ``attempt + 1`` (attempt counts from
    0): uniform in ``[0, min(cap_s, base_s * 2**attempt)]``."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt, 0), 64))
    return ceiling * rand()


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds of an HTTP ``Retry-After`` header (delta seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def is_permanent_refusal(status: int) -> bool:
    """A 4xx other than 408 (timeout) and 429 (too many requests): do not retry."""
    return 400 <= status < 500 and status not in RETRIED_4XX


# -- endpoints --------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class WebhookEndpoint:
    """One receiver. ``secret`` None: unsigned. ``format``: ``json`` (the alert as on the topic)
    or ``text`` (``{"text": ...}`` for chat tools)."""

    url: str
    secret: str | None = None
    format: WebhookFormat = "json"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http(s)://host/...: {self.label}")
        if self.format not in ("json", "text"):
            raise ValueError(f"webhook format must be 'json' or 'text', not {self.format!r}")
        if self.secret is not None:
            secret_key(self.secret)

    @property
    def label(self) -> str:
        """Scheme and host only: safe to log (paths of chat webhooks carry tokens)."""
        parts = urlsplit(self.url)
        host = parts.hostname or "?"
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        return f"{parts.scheme or '?'}://{host}{port}"

    def __repr__(self) -> str:
        signed = "signed" if self.secret else "unsigned"
        return f"WebhookEndpoint({self.label}, {self.format}, {signed})"


def parse_endpoints(text: str) -> list[WebhookEndpoint]:
    """Endpoints of a ``HOTSPOT_WEBHOOKS`` value (see the module docstring).

    Raises ``ValueError`` naming the entry by position (never echoing a secret)."""
    endpoints: list[WebhookEndpoint] = []
    for number, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        fields = [f.strip() for f in entry.split("|")]
        if len(fields) > 3:
            raise ValueError(f"{ENV_VAR} entry {number}: expected URL[|SECRET[|json|text]]")
        url = fields[0]
        secret = fields[1] if len(fields) > 1 and fields[1] else None
        fmt = (fields[2] if len(fields) > 2 and fields[2] else "json").lower()
        if fmt not in ("json", "text"):
            raise ValueError(f"{ENV_VAR} entry {number}: format must be json or text")
        try:
            endpoints.append(WebhookEndpoint(url, secret, fmt))  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"{ENV_VAR} entry {number}: {exc}") from None
    return endpoints


def endpoints_from_env(environ: Mapping[str, str] | None = None) -> list[WebhookEndpoint]:
    """Endpoints configured by ``HOTSPOT_WEBHOOKS`` (empty list when unset)."""
    env = os.environ if environ is None else environ
    return parse_endpoints(env.get(ENV_VAR, ""))


def webhook_group_id(app_id: str) -> str:
    """The dispatcher's consumer group: its committed offsets are the outbox's progress."""
    return f"{app_id}-webhooks"


# -- the dispatcher ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Attempt:
    outcome: Literal["delivered", "refused", "retry"]
    detail: str
    retry_after_s: float | None = None


class WebhookDispatcher:
    """Reads ``topic`` in consumer group ``group_id`` and delivers each alert to every endpoint.

    ``start()`` connects, ``run()`` loops until ``stop()`` (calls ``start()`` itself if needed),
    ``serve()`` is start + run + stop for a background task. ``stop()`` is prompt at any point,
    also in a backoff sleep or a request in flight: the record in hand is abandoned without
    committing its offset, so the next run delivers it again (same ``webhook-id``).

    Observables: ``delivered_count`` (2xx responses), ``refused_count``, ``retry_count``,
    ``invalid_count`` and ``committed_count`` (records whose offset was committed).
    """

    def __init__(
        self,
        bootstrap: str | list[str],
        topic: str,
        group_id: str,
        endpoints: Sequence[WebhookEndpoint],
        hotspot_names: Mapping[str, str],
        tz_name: str,
        *,
        security: KafkaSecurity,
        clock: Callable[[], float] = time.time,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 60.0,
        timeout_s: float = 10.0,
        max_records: int = 100,
        stop_grace_s: float = 5.0,
        session_timeout_s: float = 10.0,
        suggestions_topic: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.topic = topic
        #: dispatch suggestions, delivered as their own requests (None: not read)
        self.suggestions_topic = suggestions_topic
        self.group_id = group_id
        self.endpoints = tuple(endpoints)
        self.hotspot_names = hotspot_names
        self.tz_name = tz_name
        self.clock = clock
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.timeout_s = timeout_s
        self.max_records = max_records
        self.stop_grace_s = stop_grace_s
        self.session_timeout_s = session_timeout_s
        self.delivered_count = 0
        self.refused_count = 0
        self.retry_count = 0
        self.invalid_count = 0
        self.committed_count = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._run_task: asyncio.Task[Any] | None = None
        # alert_id -> indexes of endpoints done with it (accepted or refused). Survives a
        # rebalance or a failed commit within this process, so a redelivered record is not
        # sent again to endpoints that already have it.
        self._done: OrderedDict[str, set[int]] = OrderedDict()
        self._done_max = 10_000

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        hotspot_names: Mapping[str, str],
        tz_name: str,
        endpoints: Sequence[WebhookEndpoint] | None = None,
        **options: Any,
    ) -> WebhookDispatcher:
        """A dispatcher for the worker: its broker, ``coverage-alerts`` topic and app id;
        endpoints from ``HOTSPOT_WEBHOOKS`` unless given."""
        return cls(
            settings.bootstrap_servers,
            settings.topics.coverage_alerts,
            webhook_group_id(settings.app_id),
            endpoints_from_env() if endpoints is None else endpoints,
            hotspot_names,
            tz_name,
            security=settings.kafka,
            suggestions_topic=settings.topics.dispatch_suggestions,
            **options,
        )

    @property
    def running(self) -> bool:
        return self._consumer is not None

    # -- life cycle -----------------------------------------------------------------------

    def new_consumer(self) -> AIOKafkaConsumer:
        """The outbox's consumer of the alerts topic, and of the dispatch suggestions' if it
        delivers them, in its group (not started)."""
        topics = [self.topic]
        if self.suggestions_topic is not None:
            topics.append(self.suggestions_topic)
        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=round(self.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, min(3000, round(self.session_timeout_s * 1000 / 3))),
            **self.security.client_kwargs(),
        )

    async def start(self) -> None:
        """Connect to the broker and join the consumer group (idempotent)."""
        if self._consumer is not None:
            return
        self._stopping = asyncio.Event()
        if not self.endpoints:
            log.info("webhooks: no endpoints configured; not reading %s", self.topic)
            return
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": USER_AGENT},
        )
        consumer = self.new_consumer()
        try:
            await consumer.start()  # returns once the group has assigned partitions
        except BaseException:
            await session.close()
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        self._session = session
        self._consumer = consumer
        if self._stopping.is_set():  # stop() was called while joining the group
            await self.stop()

    async def stop(self) -> None:
        """Stop promptly: abandon the record in hand uncommitted, leave the group, close."""
        self._stopping.set()
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.wait({task}, timeout=self.stop_grace_s)
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        consumer, session = self._consumer, self._session
        self._consumer = self._session = None
        if consumer is not None:
            await _leave_group_at_generation_zero(consumer)
            try:
                await consumer.stop()
            except Exception as exc:
                log.warning("webhooks: consumer did not stop cleanly: %s", exc)
        if session is not None:
            await session.close()

    async def serve(self) -> None:
        """start + run, and stop however run ends (also when cancelled): for ``app.task``."""
        try:
            await self.start()
            await self.run()
        finally:
            await self.stop()

    async def run(self) -> None:
        """Deliver alerts until ``stop()``. Starts first if needed; returns at once after a
        ``stop()`` without a new ``start()``, and when no endpoint is configured (then nothing
        is read or committed, so alerts wait on the topic for webhooks configured later)."""
        if self._consumer is None:
            if self._stopping.is_set():
                return
            await self.start()
            if self._consumer is None:
                return
        self._run_task = asyncio.current_task()
        try:
            failures = 0
            while not self._stopping.is_set():
                consumer = self._consumer
                if consumer is None:
                    return
                try:
                    polled, batch = await self._until_stopped(
                        consumer.getmany(timeout_ms=1000, max_records=self.max_records)
                    )
                except KafkaError as exc:
                    log.warning("webhooks: reading %s failed: %s", self.topic, exc)
                    if await self._sleep(backoff_delay(failures, 0.5, 10.0)):
                        return
                    failures += 1
                    continue
                failures = 0
                if not polled:
                    return
                if not await self._process(consumer, batch):
                    return
        finally:
            self._run_task = None

    # -- records ----------------------------------------------------------------------------

    async def _process(self, consumer: AIOKafkaConsumer, batch: Mapping[Any, Any]) -> bool:
        """Deliver and commit a polled batch in offset order per partition, alerts before
        suggestions (the alerts a suggestion answers take its words); False if stopped."""
        nearest = self._nearest_in(batch)
        for tp, records in sorted(
            batch.items(), key=lambda i: i[0].topic == self.suggestions_topic
        ):
            for record in records:
                if self._stopping.is_set():
                    return False
                if tp not in consumer.assignment():
                    break  # revoked meanwhile: the new owner starts from the committed offset
                if not await self._deliver_record(record, nearest):
                    return False
                if not await self._commit(consumer, tp, record.offset + 1):
                    return True  # membership changed: poll again from the committed offsets
        return True

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> bool:
        try:
            await consumer.commit({tp: offset})
        except KafkaError as exc:
            log.warning(
                "webhooks: commit of %s[%d]@%d failed (%s); it will be read again",
                tp.topic,
                tp.partition,
                offset,
                type(exc).__name__,
            )
            return False
        self.committed_count += 1
        return True

    def _done_with(self, msg_id: str) -> set[int]:
        """The endpoints done with a message (alert or suggestion), remembered for the latest
        ``_done_max`` messages."""
        done = self._done.get(msg_id)
        if done is None:
            done = self._done[msg_id] = set()
            while len(self._done) > self._done_max:
                self._done.popitem(last=False)
        else:
            self._done.move_to_end(msg_id)
        return done

    def _nearest_in(self, batch: Mapping[Any, Any]) -> dict[str, tuple[str, str]]:
        """For the text endpoints, the suggestions of a polled batch by the alert they answer:
        ``alert_id -> (suggestion_id, "nearest: …")``, the first of each alert."""
        found: dict[str, tuple[str, str]] = {}
        if self.suggestions_topic is None or not any(e.format == "text" for e in self.endpoints):
            return found
        for tp, records in batch.items():
            if tp.topic != self.suggestions_topic:
                continue
            for record in records:
                try:
                    obj = orjson.loads(record.value or b"")
                    alert_id, suggestion_id = obj["alert_id"], obj["suggestion_id"]
                    if isinstance(alert_id, str) and isinstance(suggestion_id, str):
                        words = dispatch.nearest_text(obj["units"])
                        found.setdefault(alert_id, (suggestion_id, words))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
                    continue  # delivered, or refused, as itself
        return found

    def _suggestion_bodies(self, obj: Any, raw: bytes) -> tuple[str, list[bytes | None]] | None:
        """A dispatch suggestion's id and bodies: the JSON as on the topic, or the line of
        :func:`geofences.dispatch.render_text`."""
        if not isinstance(obj, dict) or not isinstance(obj.get("suggestion_id"), str):
            return None
        units, hotspot_id = obj.get("units"), obj.get("hotspot_id")
        text: bytes | None = None
        try:
            if isinstance(units, list) and isinstance(hotspot_id, str):
                name = self.hotspot_names.get(hotspot_id, "")
                text = orjson.dumps({"text": dispatch.render_text(hotspot_id, name, units)})
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("webhooks: suggestion cannot be rendered as text: %s", exc)
        return obj["suggestion_id"], [raw if e.format == "json" else text for e in self.endpoints]

    def _bodies(
        self, value: bytes | None, topic: str | None = None, nearest: str | None = None
    ) -> tuple[str, list[bytes | None]] | None:
        """The alert (or suggestion) id and each endpoint's body (None: this endpoint cannot
        take it). ``nearest``: the words of an at_risk alert's suggestion, appended to its
        text."""
        try:
            obj = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            obj = None
        if topic is not None and topic == self.suggestions_topic:
            return self._suggestion_bodies(obj, bytes(value or b""))
        if not isinstance(obj, dict) or not isinstance(obj.get("alert_id"), str):
            return None
        alert_id: str = obj["alert_id"]
        text: bytes | None = None
        needs_text = any(e.format == "text" for e in self.endpoints)
        if needs_text:
            try:
                alert = Alert.from_json_dict(obj)
                name = self.hotspot_names.get(alert.hotspot_id, "")
                line = render_text(alert, name, self.tz_name)
                if nearest is not None and alert.type == "at_risk":
                    line = f"{line} — {nearest}"
                text = orjson.dumps({"text": line})
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("webhooks: alert %s cannot be rendered as text: %s", alert_id, exc)
        raw = bytes(value or b"")
        return alert_id, [raw if e.format == "json" else text for e in self.endpoints]

    async def _deliver_record(
        self, record: Any, nearest: Mapping[str, tuple[str, str]] | None = None
    ) -> bool:
        """Deliver one record to every endpoint not yet done with it; False if stopped.
        ``nearest`` (:meth:`_nearest_in`): an at_risk alert's text takes the words of its
        suggestion, which then has nothing left for the text endpoints."""
        paired = None
        if nearest and record.topic != self.suggestions_topic:
            try:
                obj = orjson.loads(record.value or b"")
                if obj.get("type") == "at_risk":
                    paired = nearest.get(obj.get("alert_id"))
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                paired = None
        prepared = self._bodies(record.value, record.topic, None if paired is None else paired[1])
        if prepared is None:
            log.warning(
                "webhooks: %s[%d]@%d is not a CoverageAlert or DispatchSuggestion; skipped",
                record.topic,
                record.partition,
                record.offset,
            )
            self.invalid_count += 1
            deliveries.labels("invalid").inc()
            return True
        alert_id, bodies = prepared
        done = self._done_with(alert_id)
        if paired is not None:  # the suggestion's words went with the alert's text
            texts = [i for i, e in enumerate(self.endpoints) if e.format == "text"]
            self._done_with(paired[0]).update(i for i in texts if bodies[i] is not None)
        jobs = []
        for index, body in enumerate(bodies):
            if index in done:
                continue
            if body is None:
                self.invalid_count += 1
                deliveries.labels("invalid").inc()
                done.add(index)
                continue
            jobs.append(self._deliver_one(index, alert_id, body, done))
        results = await asyncio.gather(*jobs)
        return all(results)

    async def _deliver_one(self, index: int, alert_id: str, body: bytes, done: set[int]) -> bool:
        """POST until accepted or refused; False if stopped first."""
        endpoint = self.endpoints[index]
        attempt = 0
        while not self._stopping.is_set():
            finished, result = await self._until_stopped(self._attempt(endpoint, alert_id, body))
            if not finished:
                return False
            if result.outcome == "delivered":
                self.delivered_count += 1
                deliveries.labels("delivered").inc()
                done.add(index)
                return True
            if result.outcome == "refused":
                log.warning(
                    "webhooks: endpoint #%d %s refused alert %s: %s; not retried",
                    index + 1,
                    endpoint.label,
                    alert_id,
                    result.detail,
                )
                self.refused_count += 1
                deliveries.labels("refused").inc()
                done.add(index)
                return True
            self.retry_count += 1
            deliveries.labels("retried").inc()
            delay = backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s)
            if result.retry_after_s is not None:
                delay = max(delay, min(result.retry_after_s, self.backoff_cap_s))
            level = logging.WARNING if attempt == 0 or attempt % 20 == 0 else logging.DEBUG
            log.log(
                level,
                "webhooks: endpoint #%d %s failed alert %s (attempt %d: %s); retrying in %.2f s",
                index + 1,
                endpoint.label,
                alert_id,
                attempt + 1,
                result.detail,
                delay,
            )
            attempt += 1
            if await self._sleep(delay):
                return False
        return False

    def headers(self, endpoint: WebhookEndpoint, alert_id: str, body: bytes) -> dict[str, str]:
        """Standard Webhooks headers for one attempt, stamped by the injected clock."""
        timestamp = int(self.clock())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": alert_id,
            "webhook-timestamp": str(timestamp),
        }
        if endpoint.secret:
            headers["webhook-signature"] = sign(endpoint.secret, alert_id, timestamp, body)
        return headers

    async def _attempt(self, endpoint: WebhookEndpoint, alert_id: str, body: bytes) -> _Attempt:
        session = self._session
        if session is None:
            return _Attempt("retry", "not started")
        try:
            async with session.post(
                endpoint.url,
                data=body,
                headers=self.headers(endpoint, alert_id, body),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            return _Attempt("retry", f"timeout after {self.timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return _Attempt("retry", type(exc).__name__)
        if 200 <= status < 300:
            return _Attempt("delivered", f"HTTP {status}")
        if is_permanent_refusal(status):
            return _Attempt("refused", f"HTTP {status}")
        return _Attempt("retry", f"HTTP {status}", retry_after_s(retry_after, self.clock()))

    # -- waiting, interruptible by stop() ---------------------------------------------------

    async def _sleep(self, delay_s: float) -> bool:
        """Sleep ``delay_s``; True if ``stop()`` came first."""
        if self._stopping.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay_s)
        return self._stopping.is_set()

    async def _until_stopped(self, awaitable: Awaitable[T]) -> tuple[bool, T]:
        """``(True, result)``, or ``(False, None)`` when ``stop()`` came first (then the
        awaitable is cancelled)."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            if not stop.done():
                stop.cancel()
        if work.cancelled():
            return False, None  # type: ignore[return-value]
        return True, work.result()


async def _leave_group_at_generation_zero(consumer: AIOKafkaConsumer) -> None:
    """Tansu numbers a group's first generation 0 (Kafka starts at 1), and aiokafka sends
    LeaveGroup on stop only for a generation > 0. Without it the departed member stays in the
    group until its session times out, and the next member (a restarted worker) waits that long
    plus a rebalance to be assigned. Send it ourselves; never triggers on Kafka."""
    coordinator = group_coordinator(consumer)
    if coordinator is None or getattr(coordinator, "generation", None) != 0:
        return
    member_id = getattr(coordinator, "member_id", "")
    if not member_id:
        return
    try:
        await asyncio.wait_for(
            coordinator_request(coordinator, LeaveGroupRequest(coordinator.group_id, member_id)),
            2.0,
        )
    except Exception as exc:  # best effort, as aiokafka's own LeaveGroup
        log.debug("webhooks: LeaveGroup failed: %s", exc)
