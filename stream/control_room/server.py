"""The control room: the live page, its JSON API and its event stream, on the worker's web server.

Units and hot spot ledgers live on the worker that owns their partitions. Each worker answers
``/api/local/*`` with its own part; the public views ask every worker in the consumer group (their
URLs come from Faust's assignor, the same metadata its table routing uses) and merge the parts, so
any worker shows the whole picture. Events and alerts come from :mod:`stream.control_room.feed`, which every
worker reads in full.
"""

from __future__ import annotations

import asyncio
import mimetypes
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson
from aiohttp import web as aioweb
from shapely.geometry import mapping

from geofences.status import hotspot_status
from geofences.timefmt import format_ms, parse_rfc3339_ms
from stream.control_room.access import Access
from stream.control_room.feed import Feed

if TYPE_CHECKING:
    import faust

    from geofences.hotspots import HotSpotCollection
    from stream.worker.clock import Clock
    from stream.worker.coverage_stage import CoverageStage
    from stream.worker.presence_stage import PresenceStage
    from stream.worker.settings import Settings

STATIC = Path(str(resources.files("stream.control_room") / "static"))
_MERGE_TTL_S = 0.5
_PEER_TIMEOUT_S = 2.0
_STATE_EVERY_S = 1.0


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Events message."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def parse_since(value: str | None) -> int | None:
    """``since`` as RFC 3339 or epoch seconds, in epoch ms."""
    if value is None or value == "":
        return None
    try:
        return round(float(value) * 1000)
    except ValueError:
        return parse_rfc3339_ms(value)


class WorkerState(Protocol):
    """What the control room reads of the worker it runs in."""

    settings: Settings
    clock: Clock
    collection: HotSpotCollection
    stage: PresenceStage
    coverage: CoverageStage
    app: faust.App

    def owned_coverage_partitions(self) -> set[int]: ...

    @property
    def coverage_store(self) -> Mapping[bytes, bytes]: ...


class ControlRoom:
    """The views of one worker, over its processor's state and the shared feed."""

    def __init__(self, processor: WorkerState, access: Access, feed: Feed) -> None:
        self.processor = processor
        self.access = access
        self.feed = feed
        collection = processor.collection
        self.geometry = {h.id: mapping(h.geometry) for h in collection.hotspots}
        self.names = {h.id: h.name for h in collection.hotspots}
        self._merged: tuple[float, dict[str, Any]] | None = None
        self._merging: asyncio.Lock | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- this worker's part -------------------------------------------------------------------

    def now_ms(self) -> int | None:
        """The clock the views use: the wall clock, or in event mode the watermark."""
        return self.processor.clock.now_ms()

    def local_units(self, now_ms: int | None) -> list[dict[str, Any]]:
        """Every unit this worker owns: type, last usable fix, its age, and open visits."""
        stage = self.processor.stage
        stale_ms = self.processor.settings.presence.signal_timeout_s * 1000
        result = []
        for unit_id in sorted(stage.states):
            state = stage.states[unit_id]
            age_ms = None if state.last_ms is None or now_ms is None else now_ms - state.last_ms
            result.append(
                {
                    "unit_id": unit_id,
                    "unit_type": state.unit_type,
                    "last_ts": None if state.last_ms is None else format_ms(state.last_ms),
                    "age_s": None if age_ms is None else round(max(age_ms, 0) / 1000, 1),
                    "stale": age_ms is not None and age_ms > stale_ms,
                    "lat": state.last_lat,
                    "lon": state.last_lon,
                    "present_in": {
                        visit.hotspot_id: {
                            "enter_ts": format_ms(visit.enter_ms),
                            "last_inside_ts": format_ms(visit.last_inside_ms),
                            "outside_since": None
                            if visit.streak_ms is None
                            else format_ms(visit.streak_ms),
                        }
                        for visit in state.visits
                    },
                }
            )
        return result

    def local_hotspots(self, now_ms: int | None) -> list[dict[str, Any]]:
        """Status of every hot spot whose coverage partition this worker owns."""
        processor = self.processor
        coverage = processor.coverage
        owned = processor.owned_coverage_partitions()
        store = processor.coverage_store
        result = []
        for hotspot_id in coverage.hotspots_of(owned):
            ledger = coverage.ledger(hotspot_id, store)
            at = ledger.now_ms if now_ms is None else now_ms
            if at is None:
                result.append(
                    {
                        "id": hotspot_id,
                        "state": "idle",
                        "window": None,
                        "present": [],
                        "urgency": 0,
                        "next_window": None,
                    }
                )
                continue
            result.append(hotspot_status(ledger, at).to_json_dict())
        return result

    def local_part(self) -> dict[str, Any]:
        now_ms = self.now_ms()
        return {
            "now": None if now_ms is None else format_ms(now_ms),
            "units": self.local_units(now_ms),
            "hotspots": self.local_hotspots(now_ms),
        }

    # -- the whole picture ----------------------------------------------------------------------

    def _peers(self) -> list[str]:
        app = self.processor.app
        me = str(app.conf.canonical_url).rstrip("/")
        try:
            hosts = app.router.tables_metadata()
        except Exception:
            return []
        return sorted({str(h).rstrip("/") for h in hosts} - {me})

    async def _fetch(self, peer: str) -> dict[str, Any] | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=_PEER_TIMEOUT_S)
            )
        try:
            async with self._session.get(
                f"{peer}/api/local", headers=self.access.peer_headers()
            ) as response:
                if response.status != 200:
                    return None
                part: dict[str, Any] = orjson.loads(await response.read())
                return part
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return None

    def suggestion(self, status: Mapping[str, Any]) -> dict[str, Any] | None:
        """The latest dispatch suggestion of a hot spot at risk, made in its current window;
        None for any other state."""
        window = status.get("window")
        if status.get("state") != "at_risk" or not window:
            return None
        latest = self.feed.suggestion(str(status["id"]))
        if latest is None or str(latest.get("ts")) < str(window.get("start")):
            return None
        return latest

    async def merged(self) -> dict[str, Any]:
        """Every worker's part merged: units, hot spots in file order (with name and geometry),
        and which peers did not answer. Cached briefly, so many screens cost one round."""
        if self._merging is None:
            self._merging = asyncio.Lock()
        async with self._merging:
            cached = self._merged
            if cached is not None and time.monotonic() - cached[0] < _MERGE_TTL_S:
                return cached[1]
            peers = self._peers()
            parts = [self.local_part()]
            answers = await asyncio.gather(*(self._fetch(p) for p in peers))
            parts.extend(a for a in answers if a is not None)
            statuses: dict[str, dict[str, Any]] = {}
            units: dict[str, dict[str, Any]] = {}
            for part in parts:
                statuses.update((h["id"], h) for h in part["hotspots"])
                units.update((u["unit_id"], u) for u in part["units"])
            hotspots = []
            for hotspot_id, geometry in self.geometry.items():
                status = statuses.get(hotspot_id) or {
                    "id": hotspot_id,
                    "state": "unknown",
                    "window": None,
                    "present": [],
                    "urgency": 0,
                    "next_window": None,
                }
                hotspots.append(
                    {
                        **status,
                        "suggestion": self.suggestion(status),
                        "name": self.names[hotspot_id],
                        "geometry": geometry,
                    }
                )
            view = {
                "now": parts[0]["now"],
                "hotspots": hotspots,
                "units": [units[u] for u in sorted(units)],
                "workers": 1 + len(peers),
                "unreachable": [p for p, a in zip(peers, answers, strict=True) if a is None],
            }
            self._merged = (time.monotonic(), view)
            return view

    async def state_message(self) -> dict[str, Any]:
        view = await self.merged()
        return {
            "now": view["now"],
            "hotspots": [{k: v for k, v in h.items() if k != "geometry"} for h in view["hotspots"]],
            "units": view["units"],
            "unreachable": view["unreachable"],
        }

    def config(self) -> dict[str, Any]:
        settings = self.processor.settings
        return {
            "app_id": settings.app_id,
            "clock": self.processor.clock.name,
            "tile_url": settings.tile_url,
            "tile_attribution": settings.tile_attribution,
            "stale_after_s": settings.presence.signal_timeout_s,
            "timezone": self.processor.collection.timezone,
        }

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- HTTP ----------------------------------------------------------------------------------

    def register(self, app: faust.App) -> None:
        """Add the page, the API and the event stream to ``app``'s web server."""
        access = self.access

        def guarded(handler: Any) -> Any:
            async def view(web: Any, request: Any, **kwargs: Any) -> Any:
                if not access.allows(request.headers, request.query):
                    return web.json(
                        {"error": "authentication required"}, status=401, headers=access.challenge()
                    )
                return await handler(web, request, **kwargs)

            view.__name__ = handler.__name__
            return view

        def json(web: Any, value: Any) -> Any:
            return web.bytes(orjson.dumps(value), content_type="application/json")

        async def index(web: Any, request: Any) -> Any:
            return web.bytes((STATIC / "index.html").read_bytes(), content_type="text/html")

        async def static(web: Any, request: Any, path: str) -> Any:
            """The page's code and styles: no data, so not guarded (the token of a page opened
            as ``/?token=`` does not reach the requests for its scripts)."""
            target = (STATIC / path).resolve()
            if not target.is_relative_to(STATIC.resolve()) or not target.is_file():
                return web.json({"error": "not found"}, status=404)
            content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            return web.bytes(target.read_bytes(), content_type=content_type)

        async def config(web: Any, request: Any) -> Any:
            return json(web, self.config())

        async def local(web: Any, request: Any) -> Any:
            return json(web, self.local_part())

        async def hotspots(web: Any, request: Any) -> Any:
            view = await self.merged()
            return json(
                web,
                {
                    "now": view["now"],
                    "hotspots": view["hotspots"],
                    "unreachable": view["unreachable"],
                },
            )

        async def units(web: Any, request: Any) -> Any:
            view = await self.merged()
            return json(
                web,
                {"now": view["now"], "units": view["units"], "unreachable": view["unreachable"]},
            )

        async def alerts(web: Any, request: Any) -> Any:
            try:
                since = parse_since(request.query.get("since"))
                limit = int(request.query.get("limit", "1000"))
            except ValueError as exc:
                return web.json({"error": f"bad query: {exc}"}, status=400)
            return json(web, {"alerts": self.feed.alerts(since, limit)})

        async def events(web: Any, request: Any) -> Any:
            try:
                limit = int(request.query.get("limit", "50"))
            except ValueError as exc:
                return web.json({"error": f"bad query: {exc}"}, status=400)
            return json(web, {"events": self.feed.events(limit)})

        async def stream(web: Any, request: Any) -> Any:
            return await self._event_stream(request, app)

        app.page("/")(guarded(index))
        app.page("/static/{path:.+}")(static)
        app.page("/api/config")(guarded(config))
        app.page("/api/local")(guarded(local))
        app.page("/api/hotspots")(guarded(hotspots))
        app.page("/api/units")(guarded(units))
        app.page("/api/alerts")(guarded(alerts))
        app.page("/api/events")(guarded(events))
        app.page("/api/stream")(guarded(stream))

    async def _event_stream(self, request: Any, app: faust.App) -> aioweb.StreamResponse:
        """``state`` on connect and every second; ``feed`` for each new event as it comes."""
        response = aioweb.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue = self.feed.subscribe()
        loop = asyncio.get_running_loop()
        try:
            await response.write(b"retry: 2000\n\n")
            next_state = 0.0
            while not app.should_stop:
                if loop.time() >= next_state:
                    await response.write(sse("state", await self.state_message()))
                    next_state = loop.time() + _STATE_EVERY_S
                try:
                    item = await asyncio.wait_for(
                        queue.get(), timeout=max(0.05, next_state - loop.time())
                    )
                except TimeoutError:
                    continue
                await response.write(sse("feed", item))
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self.feed.unsubscribe(queue)
        return response
