"""The ``hotspot`` command line (docs/interface.md, Command line)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from geofences.errors import HotSpotFileError
from geofences.hotspots import HotSpotCollection, demo_hotspots_path, load_hotspots
from stream import logs
from stream.kafka import add_security_options, security_from_args
from stream.worker.settings import (
    WORKER_OPTIONS,
    Option,
    SettingError,
    Settings,
    count,
    port,
    read,
    resolve_session_timeout,
    worker_settings,
)

EXIT_USAGE = 2


def _die(message: str, code: int = 1) -> int:
    print(f"hotspot: {message}", file=sys.stderr)
    return code


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
    """The worker's flags, as text: each is parsed with its variable and default, when the
    worker starts (stream/worker/settings.py)."""
    for option in WORKER_OPTIONS.values():
        shown = f"${option.env}"
        if option.help is None or "default" not in option.help:
            shown += f", default {option.default or 'unset'}"
        text = f"{option.help}; {shown}" if option.help else shown
        parser.add_argument(option.flag, default=None, help=text)
    add_security_options(parser)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The worker's settings; raises ``SettingError`` naming the first bad one."""
    return worker_settings(vars(args))


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
    logs.configure(settings.log_level, settings.log_format)
    logs.log.info("kafka: %s over %s", settings.broker, settings.kafka.describe())
    try:
        with logs.quiet_clients():  # the reason is the one line said below
            info = asyncio.run(prepare_broker(settings))
    except BrokerUnreachable as exc:
        return _die(str(exc))
    if tansu.is_tansu(info.cluster_id) and settings.broker_workarounds:
        plan = TopicPlan(settings.topics, settings.app_id, info.partitions)
        tansu.install(settings.bootstrap_servers[0], plan.ping_topics, settings.kafka)
    settings = resolve_session_timeout(settings, tansu.is_tansu(info.cluster_id))

    import faust

    from stream.worker.app import Processor

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    processor = Processor(settings, collection, info.partitions)
    worker = faust.Worker(
        processor.app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        logging_config=logs.dict_config(settings.log_level, settings.log_format),
    )
    # Faust's terminal spinner sets the root logger to DEBUG so that every log line turns it:
    # aiokafka and Faust would then build a LogRecord per message sent.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except SettingError as exc:
        return _die(str(exc), EXIT_USAGE)
    return run_worker(settings)


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


def _read_flag(args: argparse.Namespace, env: str, default: str, parse: Any) -> None:
    """Parse a flag of a command other than ``worker`` as the worker's settings are: from the
    flag, else its variable, else its default."""
    flag = "--" + env.removeprefix("HOTSPOT_").lower().replace("_", "-")
    option = Option(env, default, parse, flag)
    setattr(args, option.dest or "", read(option, vars(args), os.environ))


def cmd_replay(args: argparse.Namespace) -> int:
    from stream.kafka import BrokerUnreachable
    from stream.tools.replay import replay_file

    try:
        _read_flag(args, "HOTSPOT_PARTITIONS", "8", count)
        args.security = security_from_args(args)
    except SettingError as exc:
        return _die(str(exc), EXIT_USAGE)

    try:
        return asyncio.run(replay_file(args))
    except BrokerUnreachable as exc:
        return _die(str(exc))
    except (OSError, ValueError) as exc:
        return _die(str(exc).splitlines()[0])


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.tools.demo import run_demo

    try:
        _read_flag(args, "HOTSPOT_WEB_PORT", "6066", port)
    except SettingError as exc:
        return _die(str(exc), EXIT_USAGE)

    return run_demo(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from stream.tools.bench import run_bench

    return run_bench(args)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def cmd_ledger(args: argparse.Namespace) -> int:
    from stream.evaluation.ledger import run_ledger
    from stream.kafka import BrokerUnreachable

    if args.to_date < args.from_date:
        return _die("--to is before --from", EXIT_USAGE)
    try:
        ZoneInfo(args.timezone)
    except (ValueError, ZoneInfoNotFoundError):
        return _die(f"--timezone: unknown time zone {args.timezone!r}", EXIT_USAGE)
    try:
        security = security_from_args(args)
    except SettingError as exc:
        return _die(str(exc), EXIT_USAGE)
    try:
        return asyncio.run(
            run_ledger(
                args.broker,
                args.topic,
                args.from_date,
                args.to_date,
                args.timezone,
                Path(args.out),
                progress=not args.no_progress,
                security=security,
            )
        )
    except BrokerUnreachable as exc:
        return _die(str(exc))
    except OSError as exc:
        return _die(str(exc))


def cmd_report(args: argparse.Namespace) -> int:
    from geofences.errors import InputFileError
    from stream.evaluation.report import build_report

    if args.to_date < args.from_date:
        return _die("--to is before --from", EXIT_USAGE)
    if not args.patrol_day_minutes >= 0:
        return _die("--patrol-day-minutes: must be 0 or more", EXIT_USAGE)
    try:
        report = build_report(
            Path(args.ledger),
            Path(args.hotspots),
            args.from_date,
            args.to_date,
            crimes=None if args.crimes is None else Path(args.crimes),
            harm_weights=None if args.harm_weights is None else Path(args.harm_weights),
            costs=None if args.costs is None else Path(args.costs),
            patrol_day_minutes=args.patrol_day_minutes,
        )
        from stream.evaluation.output import write_report

        written = write_report(report, Path(args.out))
    except HotSpotFileError as exc:
        for problem in exc.problems:
            print(f"hotspot: {args.hotspots}: {problem}", file=sys.stderr)
        return 1
    except InputFileError as exc:
        for problem in exc.problems:
            print(f"hotspot: {problem}", file=sys.stderr)
        return 1
    except OSError as exc:
        return _die(str(exc))
    except ImportError as exc:
        return _die(f"{exc}: install the evaluation extra (pip install 'hotspot[evaluation]')")
    for note in report.notes:
        print(f"hotspot: note: {note}", file=sys.stderr)
    print(f"hotspot: wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import csv

    import orjson

    from stream.tools.simulator import PATROL_DAY_EFFECT, RESIDUAL_EFFECT, simulate_month

    if args.days < 1:
        return _die("--days: must be at least 1", EXIT_USAGE)
    try:
        month = simulate_month(args.days, args.seed, args.start.isoformat())
    except ValueError as exc:
        return _die(str(exc), EXIT_USAGE)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hotspots.geojson").write_bytes(
        orjson.dumps(month.hotspot_file, option=orjson.OPT_INDENT_2)
    )
    with (out / "pings.jsonl").open("wb") as handle:
        for ping in month.pings:
            handle.write(orjson.dumps(ping) + b"\n")
    with (out / "crimes.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, ["occurred_at", "lat", "lon", "crime_type"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(month.crimes)
    with (out / "harm-weights.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["crime_type", "harm"])
        writer.writerows(sorted(month.harm_weights.items()))
    patrol = sum(month.patrol_days.values())
    residual = ", ".join(f"day {d} ×{f:g}" for d, f in sorted(RESIDUAL_EFFECT.items()))
    print(
        f"hotspot: wrote {out}/hotspots.geojson, pings.jsonl ({len(month.pings)} pings), "
        f"crimes.csv ({len(month.crimes)} crimes), harm-weights.csv for {month.first}..{month.last}; "
        f"{patrol} of {len(month.patrol_days)} hot-spot-days are patrol days; crime drawn at "
        f"×{PATROL_DAY_EFFECT:g} on patrol days and, after one, {residual}",
        file=sys.stderr,
    )
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    from stream.tools.soak import cmd_soak as soak

    return soak(args)


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from stream import schemas

    name = None
    if args.name is not None:
        name = schemas.resolve(args.name)
        if name is None:
            return _die(
                f"unknown schema {args.name!r}; known: {', '.join(schemas.NAMES)}", EXIT_USAGE
            )
    if args.path:
        folder = schemas.directory()
        text = f"{folder if name is None else folder / schemas.filename(name)}\n"
    elif name is None:
        text = json.dumps(schemas.all_schemas(), indent=2, ensure_ascii=False) + "\n"
    else:
        text = schemas.text(name)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `hotspot schema | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


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
    demo.add_argument("--web-port", default=None, help="$HOTSPOT_WEB_PORT, default 6066")
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
    replay.add_argument("--partitions", default=None, help="$HOTSPOT_PARTITIONS, default 8")
    replay.add_argument(
        "--rate", type=float, default=None, help="pings per second (default: as fast as possible)"
    )
    replay.add_argument("--no-progress", action="store_true")
    add_security_options(replay)
    replay.set_defaults(func=cmd_replay)

    bench = sub.add_parser("bench", help="measure throughput, latency and memory on synthetic load")
    from stream.tools.bench import add_arguments

    add_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    ledger = sub.add_parser("ledger", help="write the dwell ledger of some dates from dwell-events")
    ledger.add_argument(
        "--broker", default=os.environ.get("HOTSPOT_BROKER", "kafka://localhost:9092")
    )
    ledger.add_argument(
        "--topic", default=os.environ.get("HOTSPOT_TOPIC_DWELL_EVENTS", "dwell-events")
    )
    ledger.add_argument(
        "--from", dest="from_date", type=_date, required=True, help="first local date, YYYY-MM-DD"
    )
    ledger.add_argument(
        "--to", dest="to_date", type=_date, required=True, help="last local date, YYYY-MM-DD"
    )
    ledger.add_argument(
        "--timezone", default="Europe/London", help="zone of the dates (default Europe/London)"
    )
    ledger.add_argument("--out", required=True, help="FILE.csv, or JSONL for any other name")
    ledger.add_argument("--no-progress", action="store_true")
    add_security_options(ledger)
    ledger.set_defaults(func=cmd_ledger)

    report = sub.add_parser("report", help="evaluate patrol days against other days from a ledger")
    report.add_argument("--ledger", required=True, help="the file hotspot ledger wrote")
    report.add_argument(
        "--hotspots", required=True, help="the hot spot file (its windows and time zone)"
    )
    report.add_argument(
        "--from", dest="from_date", type=_date, required=True, help="first local date"
    )
    report.add_argument("--to", dest="to_date", type=_date, required=True, help="last local date")
    report.add_argument("--out", required=True, help="directory for the report files")
    report.add_argument("--crimes", help="CSV: occurred_at, lat, lon, crime_type[, harm]")
    report.add_argument("--harm-weights", help="CSV: crime_type, harm")
    report.add_argument(
        "--costs", help="CSV: unit_type, gbp_per_minute (default police 3.38, outreach 2.28)"
    )
    report.add_argument(
        "--patrol-day-minutes",
        type=float,
        default=15.0,
        help="covered minutes that make a patrol day on a date with no window (default 15)",
    )
    report.set_defaults(func=cmd_report)

    simulate = sub.add_parser(
        "simulate", help="write a month of patrols and crimes to try the report on"
    )
    simulate.add_argument("--days", type=int, default=28)
    simulate.add_argument("--out", required=True, help="directory for the files")
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument(
        "--start", type=_date, default=date(2026, 10, 12), help="first date (default 2026-10-12)"
    )
    simulate.set_defaults(func=cmd_simulate)

    soak = sub.add_parser(
        "soak", help="run one live worker at a steady rate and report what it holds each minute"
    )
    from stream.tools.soak import add_arguments as soak_arguments

    soak_arguments(soak)
    soak.set_defaults(func=cmd_soak)

    validate = sub.add_parser("validate", help="check a hot spot file")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_validate)

    schema = sub.add_parser(
        "schema",
        help="print the JSON Schemas of the messages, or the AsyncAPI document of the topics",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Print the published interface of the topics (docs/interface.md sections 4 and 5).

Without NAME: one JSON object of every message's JSON Schema (draft 2020-12), keyed
by name. With NAME: that schema's file as shipped, or with `asyncapi` the AsyncAPI 3.0
document (YAML) of every topic: keys, partitioning, recommended retention, and payloads
referring to the schema files by relative path (use --path to find them).

NAME is one of ping, assignment, geofence-event, dwell-event, coverage-alert,
dead-letter, asyncapi; the message names (Ping, DwellEvent, ...) work too. An unknown
NAME exits 2.""",
    )
    schema.add_argument("name", nargs="?", metavar="NAME", help="one schema, or asyncapi")
    schema.add_argument(
        "--path",
        action="store_true",
        help="print the installed file's path (without NAME: their directory) instead",
    )
    schema.set_defaults(func=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fmt = os.environ.get("HOTSPOT_LOG_FORMAT", "text")
    logs.configure("warning", fmt if fmt in logs.LOG_FORMATS else "text")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
