"""``redis://HOST:PORT/DB``: the registry shared by serving replicas and the trainer across machines.

Atomicity: every write is one optimistic transaction on the change counter: ``WATCH counter``, read
what the write depends on, then ``MULTI`` (row changes, ``SET counter``, ``LPUSH audit``,
``PUBLISH``) ``EXEC``. Since every write changes the counter, any write that lands between our read
and our ``EXEC`` aborts it (``WatchError``) and we retry from the read. That makes check-then-set as
strong as ``SET NX`` (two creates of one id: exactly one wins, the other re-reads and gets
``Conflict``) and keeps "one live version" true under racing promotes. Writes are serialized
registry-wide, which is fine for an admin store written a few times a minute.

Keys under the prefix (default ``mamdr:registry:``): ``counter`` (string), ``domains`` (hash id ->
JSON), ``models`` (hash id -> JSON with the version and its sequence numbers), ``models:order`` (zset
by registration sequence), ``models:superseded`` (zset by the sequence at which each version was
last live: the rollback candidates), ``live`` (string), ``audit`` (list, newest first). After each
write the new counter value is published on ``<prefix>changes``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis.client import Pipeline

from contracts.errors import BackendUnavailable, ConfigError, Conflict, NotFound
from contracts.settings import RegistrySettings
from contracts.urls import BackendUrl
from domain_registry import rules
from domain_registry.base import AuditEntry, Domain, DomainStatus, ModelVersion, Registry

T = TypeVar("T")
DEFAULT_PREFIX = "mamdr:registry:"


@dataclass
class _Write:
    """What one transaction returns and queues once its reads are done."""

    result: Any
    action: str = ""
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    queue: Callable[[Pipeline, int], None] | None = None  # None: nothing to write (a no-op)


class RedisRegistry(Registry):
    @classmethod
    def from_url(cls, parsed: BackendUrl, settings: RegistrySettings) -> RedisRegistry:
        return cls(parsed.raw)

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, socket_timeout_s: float = 2.0,
                 busy_timeout_s: float = 10.0) -> None:
        try:
            self._client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=socket_timeout_s,
                                                socket_connect_timeout=min(1.0, socket_timeout_s),
                                                health_check_interval=30)
        except ValueError as exc:
            raise ConfigError(f"registry URL {url!r} is not a valid redis URL: {exc}") from None
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        p = prefix
        self.k_counter, self.k_domains, self.k_models = p + "counter", p + "domains", p + "models"
        self.k_order, self.k_superseded = p + "models:order", p + "models:superseded"
        self.k_live, self.k_audit = p + "live", p + "audit"
        self.channel = p + "changes"

    # -- plumbing
    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BackendUnavailable(f"registry redis at {self._where()} is unreachable ({exc}); "
                                     "retry shortly", retry_after_s=1) from None
        except redis.RedisError as exc:
            raise BackendUnavailable(f"registry redis at {self._where()} failed: {exc}") from None

    def _where(self) -> str:
        kw = self._client.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"

    def _transact(self, body: Callable[[Pipeline], _Write], actor: str) -> Any:
        """Run ``body`` (reads) and its queued writes atomically; retry when another write interleaved."""
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.001
        while True:
            with self._errors(), self._client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.k_counter)
                    seq = int(pipe.get(self.k_counter) or 0) + 1
                    write = body(pipe)
                    if write.queue is None:
                        return write.result
                    pipe.multi()
                    write.queue(pipe, seq)
                    pipe.set(self.k_counter, seq)
                    pipe.lpush(self.k_audit, rules.dumps({"seq": seq, "ts": time.time(), "actor": actor,
                                                     "action": write.action, "target": write.target,
                                                     "detail": write.detail}))
                    pipe.publish(self.channel, seq)
                    pipe.execute()
                    return write.result
                except redis.WatchError:
                    pass
            if time.monotonic() >= deadline:
                raise BackendUnavailable("the registry is busy (too many concurrent writes); retry shortly")
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.05)

    @staticmethod
    def _load_domain(raw: str | None, domain_id: str) -> Domain:
        if raw is None:
            raise NotFound(f"domain {domain_id!r} does not exist; create it with POST /v1/domains "
                           "or `mamdr domains add`")
        return Domain.model_validate_json(raw)

    def _model_record(self, client: Any, version_id: str) -> dict[str, Any]:
        raw = client.hget(self.k_models, version_id)
        if raw is None:
            raise NotFound(f"model version {version_id!r} is not registered; see `mamdr models list`")
        return dict(json.loads(raw))

    # -- domains
    def create_domain(self, domain_id: str, display_name: str | None = None,
                      settings: dict[str, Any] | None = None, actor: str = "system") -> Domain:
        domain = rules.new_domain(domain_id, display_name, settings, time.time())

        def body(pipe: Pipeline) -> _Write:
            existing = pipe.hget(self.k_domains, domain_id)
            if existing is not None:
                raise rules.domain_exists(domain_id, Domain.model_validate_json(existing).status)
            return _Write(domain, "domain.create", domain_id,
                          {"display_name": domain.display_name, "settings": domain.settings},
                          lambda p, _seq: p.hset(self.k_domains, domain_id, domain.model_dump_json()))

        result: Domain = self._transact(body, actor)
        return result

    def get_domain(self, domain_id: str) -> Domain:
        rules.check_domain_id(domain_id)
        with self._errors():
            raw = self._client.hget(self.k_domains, domain_id)
        return self._load_domain(raw, domain_id)

    def list_domains(self, status: DomainStatus | None = None) -> list[Domain]:
        with self._errors():
            raw = self._client.hgetall(self.k_domains)
        domains = [Domain.model_validate_json(v) for _, v in sorted(raw.items())]
        return [d for d in domains if status is None or d.status == status]

    def update_domain(self, domain_id: str, *, display_name: str | None = None,
                      status: DomainStatus | None = None, settings: dict[str, Any] | None = None,
                      actor: str = "system") -> Domain:
        rules.check_domain_id(domain_id)

        def body(pipe: Pipeline) -> _Write:
            current = self._load_domain(pipe.hget(self.k_domains, domain_id), domain_id)
            domain, changes = rules.updated_domain(current, display_name=display_name, status=status,
                                                   settings=settings, now=time.time())
            if not changes:
                return _Write(current)
            return _Write(domain, rules.update_action(changes), domain_id, changes,
                          lambda p, _seq: p.hset(self.k_domains, domain_id, domain.model_dump_json()))

        result: Domain = self._transact(body, actor)
        return result

    # -- model versions
    def register_model(self, version: ModelVersion, actor: str = "system") -> ModelVersion:
        model = rules.new_model(version)

        def queue(p: Pipeline, seq: int) -> None:
            record = {"model": model.model_dump(mode="json"), "live_seq": None, "registered_seq": seq}
            p.hset(self.k_models, model.id, rules.dumps(record))
            p.zadd(self.k_order, {model.id: seq})

        def body(pipe: Pipeline) -> _Write:
            if pipe.hexists(self.k_models, model.id):
                raise Conflict(f"model version {model.id!r} is already registered; versions are immutable")
            return _Write(model, "model.register", model.id,
                          {"parent": model.parent, "artifact_uri": model.artifact_uri}, queue)

        result: ModelVersion = self._transact(body, actor)
        return result

    def get_model(self, version_id: str) -> ModelVersion:
        rules.check_version_id(version_id)
        with self._errors():
            return ModelVersion.model_validate(self._model_record(self._client, version_id)["model"])

    def list_models(self, limit: int = 100) -> list[ModelVersion]:
        if limit <= 0:
            return []
        with self._errors():
            ids = self._client.zrevrange(self.k_order, 0, limit - 1)
            raws = self._client.hmget(self.k_models, ids) if ids else []
        return [ModelVersion.model_validate(json.loads(r)["model"]) for r in raws if r is not None]

    def live_model(self) -> ModelVersion | None:
        with self._errors():
            live_id = self._client.get(self.k_live)
            if live_id is None:
                return None
            return ModelVersion.model_validate(self._model_record(self._client, live_id)["model"])

    def _make_live(self, p: Pipeline, record: dict[str, Any], seq: int, now: float) -> None:
        model_id = record["model"]["id"]
        record["model"].update(status="live", promoted_at=now)
        record["live_seq"] = seq
        p.hset(self.k_models, model_id, rules.dumps(record))
        p.zrem(self.k_superseded, model_id)
        p.set(self.k_live, model_id)

    def promote(self, version_id: str, actor: str = "system") -> ModelVersion:
        rules.check_version_id(version_id)
        now = time.time()

        def body(pipe: Pipeline) -> _Write:
            record = self._model_record(pipe, version_id)
            if record["model"]["status"] == "live":
                return _Write(ModelVersion.model_validate(record["model"]))
            live_id = pipe.get(self.k_live)
            previous = self._model_record(pipe, live_id) if live_id is not None else None
            from_status = record["model"]["status"]

            def queue(p: Pipeline, seq: int) -> None:
                if previous is not None:
                    previous["model"]["status"] = "superseded"
                    p.hset(self.k_models, previous["model"]["id"], rules.dumps(previous))
                    p.zadd(self.k_superseded, {previous["model"]["id"]: int(previous["live_seq"] or 0)})
                self._make_live(p, record, seq, now)

            promoted = ModelVersion.model_validate({**record["model"], "status": "live", "promoted_at": now})
            return _Write(promoted, "model.promote", version_id,
                          {"previous": live_id, "from_status": from_status}, queue)

        result: ModelVersion = self._transact(body, actor)
        return result

    def rollback(self, actor: str = "system") -> ModelVersion:
        now = time.time()

        def body(pipe: Pipeline) -> _Write:
            live_id = pipe.get(self.k_live)
            live_rec = self._model_record(pipe, live_id) if live_id is not None else None
            live = ModelVersion.model_validate(live_rec["model"]) if live_rec else None
            top = pipe.zrevrange(self.k_superseded, 0, 0, withscores=True)
            candidates = []
            target_rec: dict[str, Any] | None = None
            if top:
                target_rec = self._model_record(pipe, top[0][0])
                candidates.append((int(top[0][1]), ModelVersion.model_validate(target_rec["model"])))
            target = rules.rollback_target(live, candidates)
            assert live_rec is not None and target_rec is not None

            def queue(p: Pipeline, seq: int) -> None:
                live_rec["model"]["status"] = "rolled_back"
                p.hset(self.k_models, live_rec["model"]["id"], rules.dumps(live_rec))
                self._make_live(p, target_rec, seq, now)

            restored = target.model_copy(update={"status": "live", "promoted_at": now})
            return _Write(restored, "model.rollback", target.id,
                          {"rolled_back": live_id, "restored": target.id}, queue)

        result: ModelVersion = self._transact(body, actor)
        return result

    def delete_model(self, version_id: str, actor: str = "system") -> bool:
        rules.check_version_id(version_id)

        def body(pipe: Pipeline) -> _Write:
            raw = pipe.hget(self.k_models, version_id)
            if raw is None:
                return _Write(False)
            status = json.loads(raw)["model"]["status"]
            rules.check_deletable(version_id, status)

            def queue(p: Pipeline, _seq: int) -> None:
                p.hdel(self.k_models, version_id)
                p.zrem(self.k_order, version_id)
                p.zrem(self.k_superseded, version_id)

            return _Write(True, "model.delete", version_id, {"status": status}, queue)

        result: bool = self._transact(body, actor)
        return result

    # -- change notification and audit
    def change_counter(self) -> int:
        with self._errors():
            return int(self._client.get(self.k_counter) or 0)

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        if limit <= 0:
            return []
        with self._errors():
            raws = self._client.lrange(self.k_audit, 0, limit - 1)
        return [AuditEntry.model_validate_json(r) for r in raws]

    def close(self) -> None:
        self._client.close()
