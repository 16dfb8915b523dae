"""The ``hotspot`` command line (contract §1)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from geofences.errors import HotSpotFileError
from geofences.hotspots import HotSpotCollection, demo_hotspots_path, load_hotspots
from stream.worker.settings import (
    Settings,
    TopicNames,
    coverage_from_env,
    presence_from_env,
    resolve_session_timeout,
)

EXIT_USAGE = 2


def _die(message: str, code: int = 1) -> int:
    print(f"hotspot: {message}", file=sys.stderr)
    return code


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--broker", default=env("HOTSPOT_BROKER", "kafka://localhost:9092"))
    parser.add_argument(
        "--geofences", default=env("HOTSPOT_GEOFENCES"), help="hot spot file (default: demo)"
    )
    parser.add_argument("--clock", choices=("live", "event"), default=env("HOTSPOT_CLOCK", "live"))
    parser.add_argument("--web-port", type=int, default=int(env("HOTSPOT_WEB_PORT", "6066")))
    parser.add_argument("--web-host", default=env("HOTSPOT_WEB_HOST", "127.0.0.1"))
    parser.add_argument(
        "--web-url",
        default=env("HOTSPOT_WEB_URL"),
        help="URL other workers reach this one at (default http://WEB_HOST:WEB_PORT)",
    )
    parser.add_argument(
        "--tile-url",
        default=env("HOTSPOT_TILE_URL"),
        help="base-map tile URL template for the control room (default: no base map)",
    )
    parser.add_argument("--data-dir", default=env("HOTSPOT_DATA_DIR", "./hotspot-data"))
    parser.add_argument("--app-id", default=env("HOTSPOT_APP_ID", "hotspot"))
    parser.add_argument(
        "--partitions",
        type=int,
        default=int(env("HOTSPOT_PARTITIONS", "8")),
        help="partitions of topics the worker creates (an existing pings topic wins)",
    )
    session_timeout = env("HOTSPOT_SESSION_TIMEOUT_S")
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=None if session_timeout is None else float(session_timeout),
        help="consumer group session timeout (s; default: 6 on the embedded broker, 30 otherwise)",
    )
    defaults = Settings()
    for flag, name, default, text in (
        (
            "--state-flush",
            "HOTSPOT_STATE_FLUSH_S",
            defaults.state_flush_s,
            "how often changed unit states and coverage ledgers are written to the changelogs",
        ),
        (
            "--coverage-within",
            "HOTSPOT_COVERAGE_WITHIN_S",
            defaults.coverage_within_s,
            "how long the coverage agent gathers visit updates into one batch",
        ),
    ):
        parser.add_argument(
            flag, type=float, default=float(env(name, str(default))), help=f"{text} (s)"
        )
    parser.add_argument("--log-level", default=env("HOTSPOT_LOG_LEVEL", "warning"))


def settings_from_args(args: argparse.Namespace) -> Settings:
    presence = presence_from_env()
    return Settings(
        broker=args.broker,
        geofences=Path(args.geofences) if args.geofences else None,
        clock=args.clock,
        web_port=args.web_port,
        web_host=args.web_host,
        web_url=args.web_url,
        tile_url=args.tile_url,
        tile_attribution=os.environ.get("HOTSPOT_TILE_ATTRIBUTION", ""),
        data_dir=Path(args.data_dir),
        app_id=args.app_id,
        partitions=args.partitions,
        replication_factor=int(os.environ.get("HOTSPOT_REPLICATION_FACTOR", "1")),
        topics=TopicNames.from_env(),
        presence=presence,
        coverage=coverage_from_env(presence),
        session_timeout_s=args.session_timeout,
        state_flush_s=args.state_flush,
        coverage_within_s=args.coverage_within,
        log_level=args.log_level,
    )


def load_collection(path: Path | None) -> HotSpotCollection:
    return load_hotspots(path or demo_hotspots_path())


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        collection = load_hotspots(args.file)
    except HotSpotFileError as exc:
        for problem in exc.problems:
            print(f"{args.file}: {problem}")
        return 1
    windows = sum(len(h.windows) for h in collection.hotspots)
    print(
        f"{args.file}: valid: {len(collection.hotspots)} hot spots, {windows} windows, timezone {collection.timezone}"
    )
    return 0


def run_worker(settings: Settings) -> int:
    """Prepare the broker, then run the Faust worker until SIGINT/SIGTERM."""
    from stream.worker import faust_internals

    refused = faust_internals.refusal()
    if refused is not None:
        return _die(refused)
    from stream.broker import tansu
    from stream.worker import memory

    memory.fix_mmap_threshold()
    from stream.kafka import BrokerUnreachable
    from stream.worker.topics import TopicPlan, prepare_broker

    try:
        collection = load_collection(settings.geofences)
    except HotSpotFileError as exc:
        return _die(
            f"invalid hot spot file {settings.geofences}: {exc.problems[0]}"
            + (f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else "")
        )
    try:
        info = asyncio.run(prepare_broker(settings))
    except BrokerUnreachable as exc:
        return _die(str(exc))
    if (
        tansu.is_tansu(info.cluster_id)
        and os.environ.get("HOTSPOT_BROKER_WORKAROUNDS", "auto") != "off"
    ):
        plan = TopicPlan(settings.topics, settings.app_id, info.partitions)
        tansu.install(settings.bootstrap_servers[0], plan.ping_topics)
    settings = resolve_session_timeout(settings, tansu.is_tansu(info.cluster_id))

    import faust

    from stream.worker.app import Processor

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    processor = Processor(settings, collection, info.partitions)
    worker = faust.Worker(
        processor.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False
    )
    # Faust's terminal spinner sets the root logger to DEBUG so that every log line turns it:
    # aiokafka and Faust then build a LogRecord per message sent (~15 % of the worker's CPU).
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    return run_worker(settings_from_args(args))


def cmd_broker(args: argparse.Namespace) -> int:
    from stream.broker.embedded import BrokerError, start_broker

    try:
        broker = start_broker(args.host, args.port, quiet=not args.verbose)
    except BrokerError as exc:
        return _die(str(exc))
    print(f"hotspot: embedded broker (tansu, memory storage) on {broker.url}", flush=True)
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"] and broker.process.poll() is None:
            time.sleep(0.2)
    finally:
        broker.stop()
    return 0 if stop["now"] else _die(f"broker exited with code {broker.process.returncode}")


def cmd_replay(args: argparse.Namespace) -> int:
    from stream.kafka import BrokerUnreachable
    from stream.tools.replay import replay_file

    try:
        return asyncio.run(replay_file(args))
    except BrokerUnreachable as exc:
        return _die(str(exc))
    except (OSError, ValueError) as exc:
        return _die(str(exc).splitlines()[0])


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.tools.demo import run_demo

    return run_demo(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from stream.tools.bench import run_bench

    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotspot", description="GPS geofence processor for hot spot patrols"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run the stream processor")
    _add_worker_options(worker)
    worker.set_defaults(func=cmd_worker)

    broker = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (Tansu)")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--verbose", action="store_true")
    broker.set_defaults(func=cmd_broker)

    demo = sub.add_parser("demo", help="broker + worker + simulated patrols, one command")
    demo.add_argument(
        "--web-port", type=int, default=int(os.environ.get("HOTSPOT_WEB_PORT", "6066"))
    )
    demo.add_argument("--units", type=int, default=14)
    demo.add_argument("--speed", type=float, default=10.0, help="simulated seconds per real second")
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after this many real seconds"
    )
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open the control room in a web browser (never opened without a display)",
    )
    demo.set_defaults(func=cmd_demo)

    replay = sub.add_parser("replay", help="publish pings from a JSONL or CSV file")
    replay.add_argument("file")
    replay.add_argument(
        "--broker", default=os.environ.get("HOTSPOT_BROKER", "kafka://localhost:9092")
    )
    replay.add_argument("--topic", default=os.environ.get("HOTSPOT_TOPIC_PINGS", "pings"))
    replay.add_argument(
        "--partitions", type=int, default=int(os.environ.get("HOTSPOT_PARTITIONS", "8"))
    )
    replay.add_argument(
        "--rate", type=float, default=None, help="pings per second (default: as fast as possible)"
    )
    replay.add_argument("--no-progress", action="store_true")
    replay.set_defaults(func=cmd_replay)

    bench = sub.add_parser("bench", help="measure throughput, latency and memory (issue 3)")
    from stream.tools.bench import add_arguments

    add_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    validate = sub.add_parser("validate", help="check a hot spot file")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
