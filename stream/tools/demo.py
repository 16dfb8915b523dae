"""``hotspot demo``: embedded broker + worker + simulated patrols + a live feed, one command.

1. starts the embedded broker (Tansu, memory only) on a free loopback port and creates the
   ``pings`` topic with 8 partitions;
2. starts ``hotspot worker`` as a subprocess (``--clock live``, a fresh ``--app-id``, a temporary
   ``--data-dir``; its output goes to ``worker.log`` in the demo's temporary directory) and waits
   until its ``/healthz`` answers ``{"ready": true}``;
3. runs :class:`stream.tools.simulator.PatrolSimulator` over the packaged Leicester hot spots and
   publishes its pings to ``pings``, keyed by ``unit_id``, as they come due;
4. prints a line per event it reads back from ``geofence-events``, ``dwell-events`` and
   ``coverage-alerts`` and ``dispatch-suggestions``, and opens the control room (``http://127.0.0.1:<web-port>/``) in a
   browser when there is a display (``--no-browser`` not to);
5. on Ctrl-C, SIGTERM or after ``--duration`` real seconds stops the worker (SIGTERM, then waits),
   then the broker. If the worker dies, its last log lines are shown and the exit code is 1.

Speed and the live clock
------------------------
The worker runs a *live* clock: signal loss, at-risk alerts and gaps are judged against the wall
clock, so a ping stamped in the future (or far in the past) would be wrong for it. So every ping
is stamped with a wall-clock time at or before the moment it is published, and ``--speed`` does
not make time run faster: it makes the patrols *shorter*. The simulator runs on its own timeline
starting now, ``speed`` simulated seconds per real second, and each ping's simulated ``ts`` is
mapped back onto the wall clock (``start + (ts - start) / speed``) before it is sent. At the
default speed 10 a police visit of ~15 simulated minutes lasts ~90 real seconds, a walk between
hot spots takes tens of seconds, and units report about once a second; the control room sees it
all happen in real time, and the minutes it counts are real minutes (so a compressed visit earns
1/speed of the coverage it would at speed 1). Distances and GPS jitter are not scaled.

The one exception: the worker's signal timeout (300 s by default) is in real seconds, so a spell
indoors of 6-10 simulated minutes would, compressed, be too short to notice. The demo therefore
makes spells indoors last ``330-420 x speed`` simulated seconds (5.5-7 real minutes) when speed
is above 1, so that ``signal_lost`` exits still show up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from geofences.dispatch import nearest_text
from geofences.hotspots import HotSpotCollection, demo_hotspots_path, load_hotspots
from geofences.timefmt import format_ms, parse_rfc3339_ms
from stream.broker.embedded import BrokerError, EmbeddedBroker, start_broker
from stream.kafka import PLAINTEXT, BrokerUnreachable, bootstrap_servers, ensure_topic
from stream.tools.processes import WorkerExited, WorkerProcess, port_open
from stream.tools.simulator import PatrolSimulator

PINGS = "pings"
FEED_TOPICS = ("geofence-events", "dwell-events", "coverage-alerts", "dispatch-suggestions")
PARTITIONS = 8
READY_TIMEOUT_S = 90.0
WORKER_STOP_TIMEOUT_S = 30.0
PUBLISH_EVERY_S = 0.25
STATUS_EVERY_S = 60.0
LOG_TAIL_LINES = 30


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _say(text: str = "", file: TextIO | None = None) -> None:
    print(text, file=file or sys.stdout, flush=True)


class Demo:
    """One run of the demo; ``run_demo`` owns the processes, this owns the asyncio part."""

    def __init__(
        self,
        args: argparse.Namespace,
        collection: HotSpotCollection,
        broker: EmbeddedBroker,
        workdir: Path,
    ) -> None:
        self.args = args
        self.collection = collection
        self.broker = broker
        self.workdir = workdir
        self.log_path = workdir / "worker.log"
        self.worker: WorkerProcess | None = None
        self.stop = asyncio.Event()
        self.worker_failed = False
        self.zone = ZoneInfo(collection.timezone)
        self.names = {h.id: h.name for h in collection.hotspots}
        self.sent = 0
        self.events = 0

    # -- processes ------------------------------------------------------------------------

    def start_worker(self) -> None:
        self.worker = WorkerProcess(
            self.broker.url,
            app_id=f"demo-{secrets.token_hex(3)}",
            log_path=self.log_path,
            clock="live",
            data_dir=self.workdir / "data",
            session_timeout_s=6,
            web_port=self.args.web_port,
            own_session=True,  # Ctrl-C reaches the demo only; it stops the worker
        ).launch()

    def worker_alive(self) -> bool:
        return self.worker is not None and self.worker.alive()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop(WORKER_STOP_TIMEOUT_S)
            if self.worker.killed:
                _say(f"hotspot demo: worker alive after {WORKER_STOP_TIMEOUT_S:.0f} s; killed it")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        return self.worker.log_tail(lines).splitlines() if self.worker is not None else []

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            await ensure_topic(self.broker.url, PINGS, PARTITIONS, security=PLAINTEXT)
            self.start_worker()
            _say(f"  worker log    {self.log_path}")
            _say("  waiting for the worker to be ready ...")
            if not await self.wait_ready():
                return 1 if self.worker_failed else 0
            self.banner()
            if not self.args.no_browser and has_display():
                webbrowser.open(self.control_room_url())
            tasks = [
                asyncio.create_task(self.publish_loop(), name="publish"),
                asyncio.create_task(self.feed_loop(), name="feed"),
                asyncio.create_task(self.watch_worker(), name="watch"),
            ]
            for task in tasks:
                task.add_done_callback(lambda _: self.stop.set())
            try:
                if self.args.duration is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), self.args.duration)
                else:
                    await self.stop.wait()
                self.stop.set()
                done = [t for t in tasks if t.done() and not t.cancelled()]
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return 1 if self.worker_failed else 0

    async def wait_ready(self) -> bool:
        assert self.worker is not None
        deadline = loop_time() + READY_TIMEOUT_S
        while not self.stop.is_set():
            try:
                if await asyncio.to_thread(self.worker.ready):
                    return True
            except WorkerExited:
                self.worker_failed = True
                return False
            if loop_time() > deadline:
                _say(
                    f"hotspot demo: the worker was not ready within {READY_TIMEOUT_S:.0f} s",
                    sys.stderr,
                )
                self.worker_failed = True
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)
        return False

    def control_room_url(self) -> str:
        """The page's URL; with the token in it when ``HOTSPOT_WEB_TOKEN`` guards the page."""
        token = os.environ.get("HOTSPOT_WEB_TOKEN")
        query = f"?token={urllib.parse.quote(token)}" if token else ""
        return f"http://127.0.0.1:{self.args.web_port}/{query}"

    def banner(self) -> None:
        web = f"http://127.0.0.1:{self.args.web_port}"
        _say()
        _say("hotspot demo")
        _say(f"  broker        {self.broker.url}   (embedded tansu, memory only)")
        _say(f"  control room  {self.control_room_url()}")
        _say(f"  metrics       {web}/metrics")
        _say(
            "  events        geofence-events, dwell-events, coverage-alerts, "
            "dispatch-suggestions, pings-dlq"
        )
        _say(
            f"  patrols       {self.args.units} simulated units, seed {self.args.seed}, "
            f"speed {self.args.speed:g}x (visits last 1/{self.args.speed:g} of real patrols)"
        )
        until = (
            f"for {self.args.duration:g} s" if self.args.duration is not None else "until Ctrl-C"
        )
        _say(f"  running       {until}; times are {self.collection.timezone}")
        _say()

    async def watch_worker(self) -> None:
        while self.worker_alive():
            await asyncio.sleep(0.5)
        self.worker_failed = True
        self.stop.set()

    async def publish_loop(self) -> None:
        speed = float(self.args.speed)
        start_ms = wall_ms()
        loss = (max(360.0, 330.0 * speed), max(600.0, 420.0 * speed))
        sim = PatrolSimulator(
            self.collection, units=self.args.units, seed=self.args.seed, start_ms=start_ms,
            signal_loss_s=loss,
        )  # fmt: skip
        last_ts: dict[str, int] = {}
        next_status = loop_time() + STATUS_EVERY_S
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers(self.broker.url),
            linger_ms=5,
            acks=1,
            **PLAINTEXT.client_kwargs(),
        )
        await producer.start()
        try:
            while not self.stop.is_set():
                now = wall_ms()
                batch = sim.pings_until(start_ms + int((now - start_ms) * speed))
                futures = []
                for ping in batch:
                    sim_ms = parse_rfc3339_ms(ping["ts"])
                    ts = start_ms + int((sim_ms - start_ms) / speed)
                    ts = max(ts, last_ts.get(ping["unit_id"], 0) + 1)
                    last_ts[ping["unit_id"]] = ts
                    ping["ts"] = format_ms(ts)
                    futures.append(
                        await producer.send(
                            PINGS, value=orjson.dumps(ping), key=ping["unit_id"].encode()
                        )
                    )
                if futures:
                    await asyncio.gather(*futures)
                    self.sent += len(futures)
                if loop_time() >= next_status:
                    next_status += STATUS_EVERY_S
                    simulated = (now - start_ms) * speed / 60_000
                    _say(
                        f"{self.clock_text(now)}  ..     {self.sent} pings sent, "
                        f"{self.events} events seen, {simulated:.0f} simulated minutes"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), PUBLISH_EVERY_S)
        finally:
            await producer.stop()

    async def feed_loop(self) -> None:
        consumer = AIOKafkaConsumer(
            *FEED_TOPICS,
            bootstrap_servers=bootstrap_servers(self.broker.url),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **PLAINTEXT.client_kwargs(),
        )
        await consumer.start()
        try:
            while not self.stop.is_set():
                batches = await consumer.getmany(timeout_ms=500)
                records = [r for rs in batches.values() for r in rs]
                records.sort(key=lambda r: (_event_ms(r.value), FEED_TOPICS.index(r.topic)))
                for record in records:
                    self.events += 1
                    _say(self.describe(record.topic, record.value))
        finally:
            await consumer.stop()

    # -- the feed -------------------------------------------------------------------------

    def clock_text(self, epoch_ms: int) -> str:
        return (
            datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
            .astimezone(self.zone)
            .strftime("%H:%M:%S")
        )

    def _ts_text(self, value: object) -> str:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return self.clock_text(parse_rfc3339_ms(value))
        return "--:--:--"

    def _spot(self, hotspot_id: object) -> str:
        return f"{hotspot_id} {self.names.get(str(hotspot_id), '')}".rstrip()

    def describe(self, topic: str, raw: bytes | None) -> str:
        """One feed line for an event read back from the worker's output topics."""
        try:
            event: Any = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            return f"--:--:--  ?      {topic}: {(raw or b'')[:80]!r}"
        unit = f"{event.get('unit_id')} ({event.get('unit_type')})"
        if topic == "geofence-events":
            kind = str(event.get("type"))
            reason = f"  {event['reason']}" if event.get("reason") else ""
            spot = self._spot(event.get("hotspot_id"))
            return f"{self._ts_text(event.get('ts'))}  {kind:<5}  {unit:<24}  {spot}{reason}"
        if topic == "dwell-events":
            seconds = event.get("duration_s")
            length = (
                f"{int(seconds) // 60} min {int(seconds) % 60:02d} s"
                if isinstance(seconds, int | float)
                else "?"
            )
            return (
                f"{self._ts_text(event.get('exit_ts'))}  dwell  {unit:<24}  "
                f"{self._spot(event.get('hotspot_id'))}  {length} ({event.get('exit_reason')})"
            )
        if topic == "dispatch-suggestions":
            units = event.get("units")
            nearest = nearest_text(units) if isinstance(units, list) else "?"
            spot = self._spot(event.get("hotspot_id"))
            return f"{self._ts_text(event.get('ts'))}  SEND   {nearest:<24}  {spot}"
        kind = str(event.get("type"))
        if kind == "co_patrol":
            detail = ", ".join(str(u) for u in event.get("unit_ids") or [])
        else:
            detail = f"{event.get('covered_minutes')}/{event.get('required_minutes')} min"
        spot = self._spot(event.get("hotspot_id"))
        return f"{self._ts_text(event.get('ts'))}  ALERT  {kind:<24}  {spot}  {detail}"


def _event_ms(raw: bytes | None) -> int:
    """When an output event happened (its ``ts``, or ``exit_ts`` of a dwell), for ordering."""
    with contextlib.suppress(orjson.JSONDecodeError, ValueError, AttributeError, TypeError):
        event = orjson.loads(raw or b"")
        return parse_rfc3339_ms(event.get("ts") or event.get("exit_ts"))
    return 0


def has_display() -> bool:
    """Whether a graphical browser can open here (on a bare terminal ``webbrowser`` would start
    a text browser in the demo's own terminal)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def run_demo(args: argparse.Namespace) -> int:
    """The ``hotspot demo`` command; returns the exit code."""
    if not args.speed > 0:
        _say("hotspot: --speed must be greater than 0", sys.stderr)
        return 2
    if args.units < 1:
        _say("hotspot: --units must be at least 1", sys.stderr)
        return 2
    if port_open("127.0.0.1", args.web_port):
        _say(f"hotspot: port {args.web_port} is in use; choose another with --web-port", sys.stderr)
        return 1
    collection = load_hotspots(demo_hotspots_path())
    workdir = Path(tempfile.mkdtemp(prefix="hotspot-demo-"))
    demo: Demo | None = None
    broker: EmbeddedBroker | None = None
    code = 1
    try:
        broker = start_broker("127.0.0.1", None)
        _say(f"hotspot demo: broker on {broker.url}, files in {workdir}")
        demo = Demo(args, collection, broker, workdir)
        code = asyncio.run(demo.run())
    except BrokerError as exc:
        _say(f"hotspot: cannot start the embedded broker: {exc}", sys.stderr)
        return 1
    except BrokerUnreachable as exc:
        _say(f"hotspot: {exc}", sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 0
    except Exception as exc:
        _say(f"hotspot demo: {type(exc).__name__}: {exc}", sys.stderr)
        code = 1
    finally:
        if demo is not None:
            if demo.worker is not None and not demo.worker_alive():
                demo.worker_failed = True
            if demo.worker_failed and demo.worker is not None:
                status = demo.worker.process.poll() if demo.worker.process else None
                why = f"exited with code {status}" if status is not None else "failed"
                _say(f"hotspot demo: the worker {why}; last lines of {demo.log_path}:", sys.stderr)
                for line in demo.log_tail():
                    _say(f"  | {line}", sys.stderr)
                code = 1
            _say("hotspot demo: stopping the worker ...")
            demo.stop_worker()
            _say(f"hotspot demo: {demo.sent} pings sent, {demo.events} events seen")
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir / "data", ignore_errors=True)
        if demo is not None:
            _say(f"hotspot demo: stopped; worker log kept at {demo.log_path}")
    return code
