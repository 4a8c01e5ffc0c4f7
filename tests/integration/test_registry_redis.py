"""The registry suite against a real redis-server, plus what only the redis backend does."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from contracts.errors import BackendUnavailable
from domain_registry import open_registry
from domain_registry.redis_store import RedisRegistry
from tests.fixtures.redis_server import RedisServer
from tests.unit.test_registry_suite import RegistrySuite


class TestRedisRegistry(RegistrySuite):
    @pytest.fixture()
    def registry_url(self, redis_url: str) -> str:
        return redis_url


def test_every_write_is_published(redis_url: str) -> None:
    reg = open_registry(redis_url)
    assert isinstance(reg, RedisRegistry)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    pubsub = client.pubsub()
    pubsub.subscribe(reg.channel)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    reg.create_domain("comedy")
    reg.update_domain("comedy", status="paused")
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg and msg["type"] == "message":
            got.append(int(msg["data"]))
    assert got == [1, 2] == [reg.change_counter() - 1, reg.change_counter()]
    pubsub.close()
    client.close()
    reg.close()


def test_two_prefixes_are_isolated(redis_url: str) -> None:
    a, b = RedisRegistry(redis_url, prefix="a:"), RedisRegistry(redis_url, prefix="b:")
    a.create_domain("comedy")
    assert b.list_domains() == [] and b.change_counter() == 0
    b.create_domain("comedy")  # no conflict across prefixes
    a.close()
    b.close()


def test_outage_raises_backend_unavailable_and_recovers(redis_server: RedisServer, redis_url: str) -> None:
    reg = RedisRegistry(redis_url, socket_timeout_s=0.5)
    reg.create_domain("before")
    redis_server.stop()
    try:
        with pytest.raises(BackendUnavailable, match="unreachable"):
            reg.list_domains()
        with pytest.raises(BackendUnavailable):
            reg.create_domain("during")
    finally:
        redis_server.start_again()
    # The server came back empty (no persistence in tests); the same client object works again.
    deadline = time.monotonic() + 5
    while True:
        try:
            reg.create_domain("after")
            break
        except BackendUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert [d.id for d in reg.list_domains()] == ["after"]
    reg.close()


def test_wait_for_change_across_replicas(redis_url: str) -> None:
    """Two serving replicas notice one admin write through the shared counter."""
    replicas = [open_registry(redis_url) for _ in range(2)]
    seen: list[int] = []

    def watch(reg: object) -> None:
        assert isinstance(reg, RedisRegistry)
        seen.append(reg.wait_for_change(0, timeout_s=5))

    threads = [threading.Thread(target=watch, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    time.sleep(0.05)
    with open_registry(redis_url) as admin:
        admin.create_domain("new-domain")
    for t in threads:
        t.join(10)
    assert seen == [1, 1]
    for r in replicas:
        r.close()
