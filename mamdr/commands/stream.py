"""``mamdr stream create | produce | replay | tail``: make a topic, put click events on it and look at them.

Cheap to import (no torch, no kafka-python until a kafka:// URL is opened).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from contracts.errors import ConfigError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("stream", help="produce, replay and tail click streams (kafka:// or file://)")
    sub = parser.add_subparsers(dest="stream_command", metavar="STREAM_COMMAND", required=True)

    def common(p: argparse.ArgumentParser, creates: bool = False) -> None:
        p.add_argument("--stream", default=None,
                       help="kafka://HOST:PORT[,HOST:PORT]/TOPIC or file://DIR (default: settings)")
        p.add_argument("--max-event-bytes", type=int, default=None, help="larger events are rejected")
        if creates:
            p.add_argument("--partitions", type=int, default=None, help="partitions when the topic is created")
            p.add_argument("--replication-factor", type=int, default=None,
                           help="kafka:// replication factor when the topic is created")
            p.add_argument("--create-topics", action="store_true", default=None,
                           help="create the topic and its .dlq when missing (default: stream.create_topics)")

    create = sub.add_parser(
        "create",
        help="create the topic and its .dlq (idempotent)",
        description="What an operator runs once per topic; producers create topics only with --create-topics "
        "(or stream.create_topics), and reading never does.",
    )
    common(create, creates=True)
    create.set_defaults(func=cmd_create)

    produce = sub.add_parser(
        "produce",
        help="send JSON click events read from stdin, one per line",
        description="Validates each line; invalid lines are reported on stderr with their line numbers and "
        "sent to <topic>.dlq. Exit status 0 when every line was valid, 1 when some were rejected.",
    )
    common(produce, creates=True)
    produce.set_defaults(func=cmd_produce)

    replay = sub.add_parser("replay", help="replay a benchmark's interactions in time order at a bounded rate")
    common(replay, creates=True)
    replay.add_argument("--dataset", default="ml-latest-small", help="benchmark name (default ml-latest-small)")
    replay.add_argument("--rate", type=float, default=5000.0, help="events per second; 0 = as fast as possible")
    replay.add_argument("--limit", type=int, default=None, help="stop after N events")
    replay.add_argument("--seed", type=int, default=0, help="seed for the dataset's sampling")
    replay.add_argument("--data-dir", type=Path, default=None, help="where external data sets live")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.add_argument(
        "--with-split", action="store_true", help='add features {"split": train|val|test} to each event'
    )
    replay.set_defaults(func=cmd_replay)

    tail = sub.add_parser("tail", help="print records (one line each: partition:offset key value)")
    common(tail)
    tail.add_argument("--dlq", action="store_true", help="read <topic>.dlq instead")
    tail.add_argument("--group", default=None, help="read as this consumer group (default: no group)")
    tail.add_argument("--commit", action="store_true", help="commit the group's offsets after printing")
    tail.add_argument("--latest", action="store_true", help="start at the end (default: the beginning)")
    tail.add_argument("--limit", type=int, default=None, help="stop after N records")
    tail.add_argument("--follow", action="store_true", help="keep waiting for new records (Ctrl-C stops)")
    tail.add_argument("--idle-timeout", type=float, default=1.0, help="without --follow, stop after this idle")
    tail.add_argument("--output", "-o", choices=("table", "json"), default="table",
                      help="table: 'partition:offset key value' lines; json: one JSON object per record (JSON Lines)")
    tail.set_defaults(func=cmd_tail)


def _settings(args: argparse.Namespace) -> Any:
    from contracts.settings import load_settings

    return load_settings(
        **{
            "stream.url": args.stream,
            "stream.partitions": getattr(args, "partitions", None),
            "stream.replication_factor": getattr(args, "replication_factor", None),
            # reading never creates a topic: tail has no --create-topics and ignores the setting
            "stream.create_topics": getattr(args, "create_topics", False if args.func is cmd_tail else None),
            "stream.max_event_bytes": args.max_event_bytes,
        }
    ).stream


def cmd_create(args: argparse.Namespace) -> int:
    from stream import open_stream

    settings = _settings(args)
    with open_stream(settings.url, settings) as stream:
        stream.ensure_topics()
    print(f"{settings.url}: topic and {stream.dlq_topic} ready")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from contracts.events import InvalidEvent, parse_event
    from stream import Record, open_stream

    settings = _settings(args)
    sent = rejected = 0
    with open_stream(settings.url, settings) as stream, stream.producer() as producer:
        for lineno, raw in enumerate(sys.stdin.buffer, start=1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                event = parse_event(line, max_bytes=settings.max_event_bytes)
            except InvalidEvent as exc:
                reason = f"line {lineno}: {exc.message}"
                print(f"mamdr stream produce: {reason}", file=sys.stderr)
                stream.dead_letter(
                    Record(topic="stdin", partition=-1, offset=lineno, value=line, timestamp=time.time()),
                    reason,
                )
                rejected += 1
                continue
            producer.send(line, key=event.domain)
            sent += 1
        producer.flush()
        stream.flush_dead_letters()
    print(
        f"sent {sent} events to {settings.url}"
        + (f"; {rejected} invalid lines to {stream.dlq_topic}" if rejected else "")
    )
    return 1 if rejected else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from contracts.events import ClickEvent
    from contracts.settings import load_settings
    from stream import open_stream

    if args.rate < 0:
        raise ConfigError("--rate must be >= 0 (0 means as fast as possible)")
    if args.limit is not None and args.limit < 0:
        raise ConfigError("--limit must be >= 0")
    settings = _settings(args)
    data_dir = args.data_dir or load_settings().data_dir
    from trainer.data import benchmark_events  # lazy: the dataset code is not needed by produce/tail

    events = benchmark_events(args.dataset, seed=args.seed, data_dir=data_dir, with_split=args.with_split)
    from tqdm import tqdm

    sent = skipped = 0
    start = time.monotonic()
    with (
        open_stream(settings.url, settings) as stream,
        stream.producer() as producer,
        tqdm(total=len(events) if args.limit is None else min(args.limit, len(events)), unit="ev",
             disable=args.no_progress, file=sys.stderr, mininterval=0.5) as bar,
    ):
        for fields in events:
            if args.limit is not None and sent >= args.limit:
                break
            try:
                event = fields if isinstance(fields, ClickEvent) else ClickEvent.model_validate(fields)
            except ValidationError as exc:
                skipped += 1
                if skipped <= 5:
                    print(
                        f"mamdr stream replay: skipping an invalid event: {exc.errors()[0]['msg']}",
                        file=sys.stderr,
                    )
                continue
            producer.send(event)
            sent += 1
            if sent % 256 == 0:
                bar.update(256)
                if args.rate > 0:  # bounded rate: sleep until the schedule catches up
                    ahead = sent / args.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
        bar.update(sent % 256)
        producer.flush()
    elapsed = time.monotonic() - start
    print(
        f"replayed {sent} events of {args.dataset} to {settings.url} in {elapsed:.1f} s "
        f"({sent / max(elapsed, 1e-9):.0f}/s)" + (f"; skipped {skipped} invalid" if skipped else "")
    )
    return 0


def _record_json(r: Any) -> dict[str, Any]:
    """One record for ``tail --output json``: the value as JSON when it parses (events, dead letters), else text."""
    text = r.value.decode(errors="replace")
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    return {"topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
            "key": r.key.decode(errors="replace") if r.key else None, "value": value}


def cmd_tail(args: argparse.Namespace) -> int:
    from stream import open_stream

    if args.commit and not args.group:
        raise ConfigError("--commit needs --group")
    settings = _settings(args)
    printed = 0
    with open_stream(settings.url, settings) as base:
        stream = base.dead_letter_stream() if args.dlq else base
        with stream.consumer(args.group, reset="latest" if args.latest else "earliest") as consumer:
            idle_since = time.monotonic()
            try:
                while args.limit is None or printed < args.limit:
                    want = None if args.limit is None else args.limit - printed
                    records = consumer.poll(want, timeout_s=0.5)
                    for r in records:
                        key = r.key.decode(errors="replace") if r.key else "-"
                        if args.output == "json":  # JSON Lines: a follow never ends, so one object per record
                            print(json.dumps(_record_json(r), sort_keys=True), flush=True)
                        else:
                            print(f"{r.partition}:{r.offset} {key} {r.value.decode(errors='replace')}")
                    printed += len(records)
                    if records:
                        idle_since = time.monotonic()
                    elif not args.follow and time.monotonic() - idle_since >= args.idle_timeout:
                        break
            except KeyboardInterrupt:
                pass
            if args.commit:
                consumer.commit()
        if stream is not base:
            stream.close()
    print(f"{printed} records", file=sys.stderr)
    return 0


__all__ = ["register"]
