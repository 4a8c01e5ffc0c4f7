"""kafka:// as production runs it, against the real broker: SASL/SCRAM logins, several bootstrap brokers,
topics created only on purpose (``mamdr stream create``), never by a read command."""

from __future__ import annotations

import uuid

import pytest

from contracts.errors import BackendUnavailable
from contracts.events import ClickEvent
from contracts.settings import StreamSettings
from stream import drain, offsets_after, open_stream
from tests.fixtures.kafka_broker import SCRAM_PASSWORD, SCRAM_USER, KafkaBroker
from tests.integration.test_kafka_stream import run_mamdr

pytestmark = pytest.mark.integration


def _topics(bootstrap: str) -> set[str]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-admin")
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def _event(i: int) -> ClickEvent:
    return ClickEvent(event_id=f"e{i}", ts=1_700_000_000 + i, domain="comedy", user_id=f"u{i}", item_id="i1",
                      clicked=i % 2)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_login_produces_consumes_and_commits(kafka_broker: KafkaBroker, mechanism: str) -> None:
    url = f"kafka://{kafka_broker.sasl_bootstrap}/scram-{uuid.uuid4().hex[:8]}"
    settings = StreamSettings(url=url, partitions=2, create_topics=True, timeout_s=10.0,
                              security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
                              sasl_username=SCRAM_USER, sasl_password=SCRAM_PASSWORD)
    with open_stream(url, settings) as stream:
        with stream.producer() as producer:
            for i in range(20):
                producer.send(_event(i))
        with stream.consumer("g-scram") as consumer:
            got = drain(consumer, 20, 20)
            consumer.commit(offsets_after(got))
            assert consumer.committed() == offsets_after(got)
    assert sorted(int(ClickEvent.model_validate_json(r.value).event_id[1:]) for r in got) == list(range(20))


def test_a_wrong_scram_password_is_refused(kafka_broker: KafkaBroker) -> None:
    url = f"kafka://{kafka_broker.sasl_bootstrap}/scram-refused"
    settings = StreamSettings(url=url, create_topics=True, timeout_s=2.0, security_protocol="SASL_PLAINTEXT",
                              sasl_mechanism="SCRAM-SHA-256", sasl_username=SCRAM_USER, sasl_password="wrong")
    with pytest.raises(BackendUnavailable, match="sasl"):
        open_stream(url, settings)
    assert "scram-refused" not in _topics(kafka_broker.bootstrap)


def test_the_plaintext_listener_does_not_take_a_sasl_client(kafka_broker: KafkaBroker) -> None:
    url = f"kafka://{kafka_broker.bootstrap}/never"
    settings = StreamSettings(url=url, create_topics=True, timeout_s=2.0, security_protocol="SASL_PLAINTEXT",
                              sasl_mechanism="SCRAM-SHA-256", sasl_username=SCRAM_USER, sasl_password=SCRAM_PASSWORD)
    with pytest.raises(BackendUnavailable):
        open_stream(url, settings)


def test_several_bootstrap_brokers_one_of_them_down(kafka_broker: KafkaBroker) -> None:
    dead = "127.0.0.1:9"  # discard port: nothing listens there
    topic = f"multi-{uuid.uuid4().hex[:8]}"
    url = f"kafka://{dead},{kafka_broker.bootstrap}/{topic}"
    settings = StreamSettings(url=url, partitions=1, create_topics=True, timeout_s=10.0)
    with open_stream(url, settings) as stream:
        with stream.producer() as producer:
            for i in range(5):
                producer.send(_event(i))
        with stream.consumer(None) as consumer:
            assert len(drain(consumer, 5, 20)) == 5
    assert {topic, f"{topic}.dlq"} <= _topics(kafka_broker.bootstrap)


def test_reading_never_creates_a_topic_and_create_is_explicit(kafka_broker: KafkaBroker) -> None:
    topic = f"ops-{uuid.uuid4().hex[:8]}"
    url = f"kafka://{kafka_broker.bootstrap}/{topic}"
    tail = run_mamdr("stream", "tail", "--stream", url, "--limit", "1", "--idle-timeout", "0.5")
    assert tail.returncode != 0
    assert "mamdr stream create" in tail.stderr
    assert topic not in _topics(kafka_broker.bootstrap)
    assert not StreamSettings().create_topics  # the default: topics are an operator's decision

    made = run_mamdr("stream", "create", "--stream", url, "--partitions", "3", "--replication-factor", "1")
    assert made.returncode == 0, made.stderr
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap, client_id="test-admin")
    try:
        described = {t.get("topic", t.get("name")): len(t["partitions"])
                     for t in admin.describe_topics([topic, f"{topic}.dlq"])}
    finally:
        admin.close()
    assert described == {topic: 3, f"{topic}.dlq": 1}
    again = run_mamdr("stream", "create", "--stream", url, "--partitions", "3")  # idempotent
    assert again.returncode == 0, again.stderr
