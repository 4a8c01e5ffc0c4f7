"""Click streams: one interface (:mod:`stream.base`), one file per backend, chosen by URL scheme.

``open_stream("kafka://127.0.0.1:9092/clicks", settings)`` or ``open_stream("file:///var/lib/mamdr/clicks")``.
Torch-free: the producers and ``mamdr stream`` commands run without the trainer's dependencies.
"""

from __future__ import annotations

import importlib

from contracts.settings import StreamSettings
from contracts.urls import parse_url
from stream.base import (
    DLQ_SUFFIX,
    Record,
    Stream,
    StreamConsumer,
    StreamProducer,
    drain,
    offsets_after,
    split_tp_key,
    tp_key,
)
from stream.validate import Checked, check_records

# scheme -> "module:class"; imported only when used, so file:// never needs kafka-python loaded.
BACKENDS: dict[str, str] = {
    "kafka": "stream.kafka_stream:KafkaStream",
    "file": "stream.file_stream:FileStream",
}


def open_stream(url: str, settings: StreamSettings | None = None) -> Stream:
    """The stream behind ``url`` (``kafka://HOST:PORT/TOPIC`` or ``file://DIR``)."""
    parsed = parse_url(url, tuple(BACKENDS), "stream")
    module_name, cls_name = BACKENDS[parsed.scheme].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    stream: Stream = cls(url, settings or StreamSettings(url=url))
    return stream


__all__ = [
    "BACKENDS",
    "DLQ_SUFFIX",
    "Checked",
    "Record",
    "Stream",
    "StreamConsumer",
    "StreamProducer",
    "check_records",
    "drain",
    "offsets_after",
    "open_stream",
    "split_tp_key",
    "tp_key",
]
