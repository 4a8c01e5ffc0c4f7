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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.errors import ConfigError

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
    socket_timeout_s: float = Field(0.5, gt=0, le=60)
    connect_timeout_s: float = Field(0.5, gt=0, le=60)
    max_connections: int = Field(64, ge=1, le=10_000)
    retries: int = Field(2, ge=0, le=20)
    retry_backoff_s: float = Field(0.02, ge=0, le=10)
    keep_versions: int = Field(3, ge=1, le=1000)
    dtype: Literal["float32", "float16"] = Field("float32", description="float32 or float16 on the wire")
    pointer_ttl_s: float = Field(
        0.5, ge=0, le=60,
        description="how long a reader may reuse the current-version pointer (0: read it every lookup)",
    )
    write_chunk: int = Field(1000, ge=1, le=100_000, description="keys per MSET in bulk writes")
    incremental_read: Literal["pipeline", "script"] = Field(
        "pipeline", description="redis reads of an incremental version: one MULTI of MGET + HMGET per "
        "unfolded version (pipeline), or the server-side read script (script)")
    health_check_interval_s: int = Field(
        30, ge=0, le=3600, description="redis-py pings idle pooled connections after this")


# Shorter tokens are guessable words or hand-typed examples, not secrets: they disable the admin API.
MIN_TOKEN_CHARS = 20
HOW_TO_SET_TOKEN = ("set MAMDR_REGISTRY__ADMIN_TOKEN to a secret, e.g. "
                    "MAMDR_REGISTRY__ADMIN_TOKEN=\"$(openssl rand -hex 32)\"")


def admin_token_problem(token: SecretStr | str | None) -> str | None:
    """Why ``token`` cannot guard the admin API (None: it can). There is no built-in credential."""
    value = token.get_secret_value() if isinstance(token, SecretStr) else token
    if value is None or not value.strip():
        return "no admin token is configured"
    if len(value.strip()) < MIN_TOKEN_CHARS:
        return f"the admin token is shorter than {MIN_TOKEN_CHARS} characters, so it is not a secret"
    return None


class RegistrySettings(_Section):
    url: str = Field(f"sqlite://{DEFAULT_HOME}/registry.db", description="sqlite://PATH or redis://HOST:PORT/DB")
    admin_token: SecretStr | None = Field(
        None, description="bearer token of the admin API; unset or under 20 characters disables the admin API")
    poll_interval_s: float = Field(
        1.0, gt=0, le=3600, description="how often the trainer re-reads the registry's domains (an unknown domain "
        "in an event forces a re-read at once)")


class ServingSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_items: int = Field(1000, ge=1, le=100_000)
    session_cache_size: int = Field(256, ge=1, le=100_000)
    intra_op_threads: int = Field(1, ge=1, le=256)
    reload_poll_s: float = Field(1.0, gt=0, le=3600)
    reload_backoff_max_s: float = Field(
        60.0, gt=0, le=3600, description="a failed load is retried after reload_poll_s, doubling up to this")
    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=64 << 20, description="request bodies over this get 413 before parsing (every route)")
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="close a connection whose request line + headers take longer (httptools)")
    keep_alive_timeout_s: int = Field(5, ge=1, le=300, description="close idle keep-alive connections after this")
    max_concurrency: int | None = Field(
        1000, ge=1, le=100_000,
        description="uvicorn limit_concurrency: past this many open connections or tasks, answer 503 (None: no limit)")
    composition: str = Field("feed", description="feed (one session, weights fed) or session (per domain)")
    max_batch: int = Field(
        16, ge=1, le=64, description="requests (users) scored together in one onnxruntime run (1: no "
        "cross-request batching); also the most users one v2 infer request may carry (each group size up to "
        "it builds a grouped graph at every version load, so the bound stays small)")
    batch_wait_s: float = Field(
        0.0002, ge=0, le=0.05, description="while other requests are still being read, wait at most this long "
        "for them to join a batch (never waits when nothing else is in flight)")
    max_extra_versions: int = Field(
        2, ge=0, le=16, description="published versions besides the live one held at once for requests that pin a "
        "model_version and for the canary (LRU; each holds its own domains); 0: only the live version is served")
    canary_version: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="a published version that serves canary_fraction of the users (a stable hash slice of user ids)")
    canary_fraction: float = Field(
        0.0, ge=0, le=1, description="share of users the canary_version serves (requests that pin no version)")


class StreamSettings(_Section):
    url: str = Field(f"file://{DEFAULT_HOME}/stream/clicks", description="kafka://HOST:PORT/TOPIC or file://DIR")
    group: str = "mamdr-trainer"
    max_event_bytes: int = 16_384
    partitions: int = Field(4, ge=1, description="partitions of a topic the stream creates (kafka:// and file://)")
    create_topics: bool = Field(
        False, description="opening a stream creates the topic and its .dlq when missing (quickstart, dev stack)"
    )
    replication_factor: int = Field(1, ge=1, le=32, description="kafka:// replication factor of topics it creates")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="kafka:// transport: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="kafka:// SASL login: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (needs a SASL_* protocol)"
    )
    sasl_username: str | None = Field(None, description="kafka:// SASL user")
    sasl_password: SecretStr | None = Field(None, description="kafka:// SASL password")
    ssl_cafile: str | None = Field(None, description="kafka:// CA bundle that signed the brokers' certificates")
    ssl_certfile: str | None = Field(None, description="kafka:// client certificate (mutual TLS)")
    ssl_keyfile: str | None = Field(None, description="kafka:// client key (mutual TLS)")
    max_poll_records: int = Field(
        2000, ge=1, description="most records one poll returns (the trainer validates a poll as one batch)")
    kafka_client: Literal["kafka-python", "confluent-kafka"] = Field(
        "kafka-python", description="kafka:// consumer library; confluent-kafka (optional extra kafka-fast, "
        "librdkafka) decodes in C: several times the events/s per process (docs/streaming.md)")
    fetch_bytes: int = Field(
        16 << 20, ge=1 << 20, description="kafka:// consumer: most bytes fetched per partition per request (fewer "
        "round trips; raised to 4 x max_event_bytes when smaller)")
    linger_ms: int = Field(5, ge=0, description="producer batching delay")
    batch_bytes: int = Field(262_144, ge=1024, description="producer batch size per partition")
    timeout_s: float = Field(10.0, gt=0, description="broker requests, connecting and flushing")
    fsync: bool = Field(True, description="file:// only: fsync the log on every producer flush")

    @model_validator(mode="after")
    def _check_security(self) -> StreamSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl != (self.sasl_mechanism is not None):
            raise ValueError("stream.sasl_mechanism and a SASL_* stream.security_protocol go together")
        if sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError("SASL needs stream.sasl_username and stream.sasl_password")
        return self


class TrainerSettings(_Section):
    round_seconds: float = Field(30.0, gt=0, le=86_400)
    round_events: int = Field(20_000, ge=1, le=10_000_000)
    inner_batches: int = Field(2, ge=1, le=10_000)
    batch_size: int = Field(1024, ge=1, le=1_000_000)
    buffer_per_domain: int = Field(50_000, ge=1, le=100_000_000)
    reservoir_size: int = Field(20_000, ge=0, le=100_000_000)
    dr_k: int = Field(3, ge=0, le=1000)
    beta: float = Field(
        1.0, gt=0, le=1, description="DN's outer step per round; 1: each click is seen once, interpolating "
                                     "only slows θS (docs/streaming.md, 'MAMDR in streaming')")
    gamma: float = Field(1.0, gt=0, le=1, description="DR's interpolation of θi per round")
    lr: float = Field(1e-3, gt=0, le=10)
    dr_optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="how DR steps θi each round: plain SGD, or Adam with a fresh state per round (whose "
                           "first steps move every weight by ~lr whatever its gradient: noise θi keeps)")
    dr_lr: float | None = Field(
        None, gt=0, le=10, description="DR's step size for θi (default: 0.3 with sgd, trainer.lr with adam)")
    table_optimizer: Literal["sparse_adam", "rowwise_adagrad", "dense"] = "rowwise_adagrad"
    table_lr: float | None = Field(None, gt=0, le=10)
    replay_ratio: float = Field(0.5, ge=0, le=100)
    min_batches: int = Field(16, ge=1, le=100_000)
    dr_data: Literal["round", "history"] = Field(
        "history", description="rows DR trains θi on: each domain's fresh rows plus its whole replay reservoir (a "
                               "uniform sample of its history: θi learns the domain, not the moment) or the "
                               "round's (fresh + replay: θi tracks recent clicks)")
    specific: str = Field(
        "head", min_length=1, max_length=1000,
        description="which parameters get a per-domain θi: head (the layers that make the logit, e.g. the MLP's "
                    "output layer: as good as every parameter on both measured streams, at 65 instead of 139,905 "
                    "values per domain for the paper MLP, docs/streaming.md), default (every parameter but the "
                    "user/item tables: the paper's), or comma-separated glob patterns over parameter names. A "
                    "lineage keeps the scope it started with")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="arithmetic of the training forward (DN's steps, DR's head inputs): auto (bfloat16 "
                            "matmuls where the CPU has bfloat16 in hardware, float32 elsewhere; the loss, gradients "
                            "and optimizer steps stay float32: 1.3x the round at the same learning on both measured "
                            "streams, docs/streaming.md), bf16 or fp32")
    overload_policy: Literal["backpressure", "sample"] = "backpressure"
    max_lag_events: int = Field(200_000, ge=0)
    framework: Literal["mamdr", "dn", "alternate"] = Field(
        "mamdr",
        description="mamdr (DN + DR), dn (shared model only) or alternate (plain online training: β = 1, no DR)")
    graduation_window: int = Field(
        5000, ge=10, le=1_000_000,
        description="recent prequential clicks per domain that decide whether its delta is served")
    graduation_min_clicks: int = Field(
        200, ge=1, le=1_000_000,
        description="clicks (of both classes) a domain needs before its delta can be served")
    graduation_metric: Literal["logloss", "auc"] = Field(
        "logloss",
        description="how a delta must beat θS on the domain's window to be served: lower log loss (ranking and "
                    "calibration), or higher AUC (lets deltas that only sharpen the scores through: worse on both "
                    "figures, docs/streaming.md)")
    graduation_se: float = Field(
        0.0, ge=0, le=10,
        description="a delta is served only while it beats θS on the domain's window by this many standard "
                    "errors of the paired difference (0: any improvement; 1 measured no better, docs/streaming.md)")
    auto_onboard: bool = False
    seed: int = Field(0, ge=0)

    liveness_timeout_s: float = Field(
        1800.0, gt=0, le=86_400, description="/healthz on the metrics port fails after this long without progress")
    # -- bounded tables (issue 13.4): which ids own an embedding row
    min_count: int = Field(
        1, ge=1, description="an id gets its own embedding row once seen this many times (before: cold-start vector)")
    expire_rounds: int = Field(
        0, ge=0, description="free the row of an id not seen for this many rounds (0: never)")
    expire_seconds: float = Field(
        0.0, ge=0, description="free the row of an id not seen for this long, wall clock (0: never)")
    filter_capacity: int = Field(
        1_000_000, ge=1, description="ids counted while below min_count (least recently seen forgotten beyond)")
    # -- retention (issue 13.5): what stays on disk, in the feature store and in the registry
    keep_versions: int = Field(
        5, ge=2, description="newest published versions kept (plus live, pinned, rollback target, referenced)")
    pinned_versions: tuple[str, ...] = Field(
        (), description='versions retention never deletes (env: JSON list like ["v000012"]; CLI: --pin)')
    # -- incremental publish (issue 13.3): a version writes what changed since its parent
    incremental_publish: bool = Field(
        True, description="write only the rows changed since the live version to the feature store and checkpoint")
    checkpoint_rebase_ratio: float = Field(
        1.0, gt=0, le=1000,
        description="write a full checkpoint once the increments since the last one reach this × its size")
    checkpoint_max_chain: int = Field(
        50, ge=1, le=100_000, description="at most this many incremental checkpoints between two full ones")
    delta_dtype: Literal["float16", "float32"] = Field(
        "float16", description="dtype of the published θi files, held as is by serving: float16 halves the bytes "
        "per held domain; served holdout AUC moved by under 0.001 on ml-latest-small (bench/delta_precision.py)")

    @property
    def dr_step(self) -> float:
        """DR's step size: ``dr_lr`` if set, else 0.3 for SGD (measured, docs/streaming.md) or ``lr`` for Adam."""
        if self.dr_lr is not None:
            return self.dr_lr
        return 0.3 if self.dr_optimizer == "sgd" else self.lr


class Settings(BaseSettings):
    """Everything a service can be configured with. Frozen: build a new one to change it."""

    model_config = SettingsConfigDict(
        env_prefix="MAMDR_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    home: Path = DEFAULT_HOME
    artifacts_url: str = f"file://{DEFAULT_HOME}/artifacts"
    data_dir: Path | None = Field(None, description="where external data sets live (e.g. ../shared/data)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR (the CLI's --log-level wins)")
    feature_store: FeatureStoreSettings = FeatureStoreSettings()
    registry: RegistrySettings = RegistrySettings()
    serving: ServingSettings = ServingSettings()
    stream: StreamSettings = StreamSettings()
    trainer: TrainerSettings = TrainerSettings()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _follow_home(self) -> Settings:
        """``MAMDR_HOME`` moves every location still at its default (the defaults are written under
        ``~/.mamdr`` at import; a URL set explicitly is left alone)."""
        if self.home == DEFAULT_HOME:
            return self

        def moved(url: str, default: str) -> str:
            return url.replace(str(DEFAULT_HOME), str(self.home), 1) if url == default else url

        object.__setattr__(self, "artifacts_url", moved(self.artifacts_url, f"file://{DEFAULT_HOME}/artifacts"))
        for name, section in (("feature_store", self.feature_store), ("registry", self.registry),
                              ("stream", self.stream)):
            default = type(section).model_fields["url"].default
            object.__setattr__(self, name, section.model_copy(update={"url": moved(section.url, default)}))
        return self


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with CLI overrides on top.

    Overrides use dotted keys for sections (``{"serving.port": 9000}``); ``None`` values are
    skipped so unset CLI flags never mask an environment variable.
    """
    try:
        base = Settings()
        if not any(v is not None for v in overrides.values()):
            return base
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
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    """``setting: reason`` for each bad value, the environment variable that sets it named too."""
    parts = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        env = "MAMDR_" + "__".join(str(p) for p in err["loc"]).upper()
        parts.append(f"{path} ({env}): {err['msg']}")
    return "invalid settings: " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, for FastAPI dependencies (tests override the dependency)."""
    return Settings()
