"""Click streams: one interface (:mod:`stream.base`), one file per backend, chosen by URL scheme.

``open_stream("kafka://127.0.0.1:9092/clicks", settings)`` or ``open_stream("file:///var/lib/mamdr/clicks")``.
Torch-free: the producers and ``mamdr stream`` commands run without the trainer's dependencies.
"""

from __future__ import annotations

from contracts.settings import StreamSettings
from contracts.urls import open_backend
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

# scheme -> "module:Class" (see contracts.urls); imported only when used, so file:// never loads kafka-python.
BACKENDS: dict[str, str] = {
    "kafka": "stream.kafka_stream:KafkaStream",
    "file": "stream.file_stream:FileStream",
}


def open_stream(url: str, settings: StreamSettings | None = None) -> Stream:
    """The stream behind ``url`` (``kafka://HOST:PORT/TOPIC`` or ``file://DIR``)."""
    return open_backend(url, BACKENDS, "stream", settings or StreamSettings(url=url), Stream)


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
