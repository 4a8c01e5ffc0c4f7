"""One frozen settings object for every service.

Values come from (lowest to highest precedence) defaults, environment variables with the
``MAMDR_`` prefix (nested sections use ``__``, e.g. ``MAMDR_SERVING__PORT=8080``) and CLI
flags, which callers pass as keyword overrides to :func:`load_settings`. Backends are chosen
by URL scheme, the way Feast picks its registry store: ``kafka://`` vs ``file://`` for the
stream, ``redis://`` vs ``memory://``/``file://`` for the feature store, ``sqlite://`` vs
``redis://`` for the registry, ``file://`` for artifacts.

Torch-free: serving imports this.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path.home() / ".mamdr"


class _Section(BaseModel):
    # Typos in a settings section fail loudly instead of being ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureStoreSettings(_Section):
    url: str = Field(f"file://{DEFAULT_HOME}/feature_store", description="redis://, memory:// or file://")
    namespace: str = "mamdr"
    password: SecretStr | None = None
    username: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    socket_timeout_s: float = 0.5
    connect_timeout_s: float = 0.5
    max_connections: int = 64
    retries: int = 2
    retry_backoff_s: float = 0.02
    keep_versions: int = 3
    dtype: str = Field("float32", description="float32 or float16 on the wire")
    pointer_ttl_s: float = Field(
        0.5, description="how long a reader may reuse the current-version pointer (0: read it every lookup)"
    )
    write_chunk: int = Field(1000, description="keys per MSET in bulk writes")
    health_check_interval_s: int = Field(30, description="redis-py pings idle pooled connections after this")


class RegistrySettings(_Section):
    url: str = Field(f"sqlite://{DEFAULT_HOME}/registry.db", description="sqlite://PATH or redis://HOST:PORT/DB")
    admin_token: SecretStr = SecretStr("change-me")
    poll_interval_s: float = 1.0


class ServingSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8000
    max_items: int = 1000
    session_cache_size: int = 256
    intra_op_threads: int = 1
    reload_poll_s: float = 1.0
    composition: str = Field("feed", description="feed (one session, weights fed) or session (per domain)")


class StreamSettings(_Section):
    url: str = Field(f"file://{DEFAULT_HOME}/stream/clicks", description="kafka://HOST:PORT/TOPIC or file://DIR")
    group: str = "mamdr-trainer"
    max_event_bytes: int = 16_384
    partitions: int = Field(4, ge=1, description="partitions of a topic the stream creates (kafka:// and file://)")
    create_topics: bool = Field(True, description="create the topic and its .dlq when missing")
    max_poll_records: int = Field(2000, ge=1)
    linger_ms: int = Field(5, ge=0, description="producer batching delay")
    batch_bytes: int = Field(262_144, ge=1024, description="producer batch size per partition")
    timeout_s: float = Field(10.0, gt=0, description="broker requests, connecting and flushing")
    fsync: bool = Field(True, description="file:// only: fsync the log on every producer flush")


class TrainerSettings(_Section):
    round_seconds: float = 30.0
    round_events: int = 20_000
    inner_batches: int = 8
    batch_size: int = 1024
    buffer_per_domain: int = 50_000
    reservoir_size: int = 20_000
    dr_k: int = 3
    beta: float = 0.1
    gamma: float = 0.1
    lr: float = 1e-3
    table_optimizer: Literal["sparse_adam", "rowwise_adagrad", "dense"] = "rowwise_adagrad"
    table_lr: float | None = None
    replay_ratio: float = Field(0.5, ge=0)
    min_batches: int = Field(16, ge=1)
    overload_policy: Literal["backpressure", "sample"] = "backpressure"
    max_lag_events: int = Field(200_000, ge=0)
    auto_onboard: bool = False
    seed: int = 0


class Settings(BaseSettings):
    """Everything a service can be configured with. Frozen: build a new one to change it."""

    model_config = SettingsConfigDict(
        env_prefix="MAMDR_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    home: Path = DEFAULT_HOME
    artifacts_url: str = f"file://{DEFAULT_HOME}/artifacts"
    data_dir: Path | None = Field(None, description="where external data sets live (e.g. ../shared/data)")
    log_level: str = "INFO"
    feature_store: FeatureStoreSettings = FeatureStoreSettings()
    registry: RegistrySettings = RegistrySettings()
    serving: ServingSettings = ServingSettings()
    stream: StreamSettings = StreamSettings()
    trainer: TrainerSettings = TrainerSettings()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with CLI overrides on top.

    Overrides use dotted keys for sections (``{"serving.port": 9000}``); ``None`` values are
    skipped so unset CLI flags never mask an environment variable.
    """
    base = Settings()
    data = base.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"unknown setting {key!r}")
        node[leaf] = value
    return Settings.model_validate(data) if overrides else base


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, for FastAPI dependencies (tests override the dependency)."""
    return Settings()
