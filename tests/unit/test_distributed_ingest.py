"""Pieces of the spread stream: the pickle-free record wire format and sharded file:// consumers."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import ConfigError, DataError
from contracts.settings import StreamSettings
from stream import drain, open_stream
from stream.base import Record
from trainer.distributed.ingest import decode_records, encode_records


def test_records_survive_the_wire_format_byte_for_byte() -> None:
    records = [Record("clicks", 3, 17, b'{"a": 1}\n', 1.7e9 + 0.25, b"comedy"),
               Record("clicks", 1, 0, b"", 0.0, None),
               Record("clicks", 1, 1, bytes(range(256)), 2.0, bytes([0, 255]))]
    assert decode_records(encode_records(records)) == records
    assert decode_records(encode_records([])) == []


@pytest.mark.parametrize("payload", [b"", b"12\n[]", b"2\n[]extra", b"x\n[]", b"7\n[[1,2]]"])
def test_a_damaged_batch_is_a_data_error(payload: bytes) -> None:
    with pytest.raises(DataError, match="forwarded record batch"):
        decode_records(payload)


def test_file_shards_split_the_partitions_and_cover_them(tmp_path: Path) -> None:
    settings = StreamSettings(partitions=5, create_topics=True)
    stream = open_stream(f"file://{tmp_path}/clicks", settings)
    with stream.producer() as producer:
        for i in range(100):
            producer.send(b'{"n": %d}' % i, key=f"k{i}")
    shards = [stream.consumer(None, shard=(r, 2)) for r in range(2)]
    got = [drain(c, 100, timeout_s=0.5) for c in shards]
    assert {r.partition for r in got[0]} <= {0, 2, 4} and {r.partition for r in got[1]} <= {1, 3}
    assert sorted((r.partition, r.offset) for r in got[0] + got[1]) == \
        sorted({(r.partition, r.offset) for r in got[0] + got[1]}) and len(got[0]) + len(got[1]) == 100
    assert set(shards[1].position()) == {"clicks:1", "clicks:3"}
    shards[1].seek({"clicks:0": 0})  # another shard's partition: ignored
    assert shards[1].poll(timeout_s=0.0) == []
    for c in shards:
        c.close()
    with pytest.raises(ConfigError, match="shard"):
        stream.consumer(None, shard=(2, 2))
    stream.close()
