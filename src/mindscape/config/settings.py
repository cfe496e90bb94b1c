"""One settings object for the whole process.

Precedence, highest first: command-line flags, environment variables `MINDSCAPE_*`,
the TOML file (`--config` / `MINDSCAPE_CONFIG`), built-in defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, cast

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mindscape.config.models import HASHING_DEFAULT_MODEL, KNOWN_DIMENSIONS, LOCAL_DEFAULT_MODEL, OPENAI_DEFAULT_MODEL
from mindscape.config.oauth import TENANT_CLAIM_PATTERN, oauth_problem
from mindscape.errors import StartupError

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
_SLUG_RE = re.compile(SLUG_PATTERN)


_DEFAULT_MODELS = {"local": LOCAL_DEFAULT_MODEL, "hashing": HASHING_DEFAULT_MODEL, "openai": OPENAI_DEFAULT_MODEL}


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("mindscape", appauthor=False))


class Settings(BaseSettings):
    """Everything the server and the CLI read from the outside world."""

    model_config = SettingsConfigDict(env_prefix="MINDSCAPE_", env_ignore_empty=True, extra="forbid", frozen=True)

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL the server connects with (the runtime role). Unset: embedded PostgreSQL.",
    )
    owner_database_url: SecretStr | None = Field(
        default=None,
        description="URL used for migrations and tenant administration. Defaults to database_url.",
    )
    # PgBouncer in transaction mode hands each transaction whichever server connection is free:
    # prepared statements and session state do not follow a client (docs/scaling.md: PgBouncer).
    database_pooler: Literal["none", "transaction"] = Field(
        default="none",
        description="What database_url points at: PostgreSQL itself (none) or a transaction-mode pooler "
        "such as PgBouncer (transaction: no prepared-statement cache, no session state relied upon).",
    )
    read_database_url: SecretStr | None = Field(
        default=None,
        description="A hot standby (or any replica) for read-only tools, resources and prompts; "
        "writes, credential checks and the call counter stay on database_url. Unset: everything on database_url.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir, description="Where the embedded PostgreSQL keeps its data."
    )
    tenant: str | None = Field(default=None, description="Tenant slug served over stdio.")
    persona: str | None = Field(
        default=None, pattern=SLUG_PATTERN, description="stdio: the persona the agent acts as (persona visibility)."
    )
    statement_timeout_ms: int = Field(default=5000, ge=100, le=600_000)
    pool_min_size: int = Field(default=1, ge=0, le=100)
    pool_max_size: int = Field(default=10, ge=1, le=100)
    pool_acquire_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="How long a call may wait for a free database connection before it is answered "
        "'busy, retry' (HTTP and stdio alike).",
    )
    # Credential checks (API keys, JWT tenants) and the quota's settings lookups use a pool of their
    # own, so they never wait behind tool calls that hold every connection of the main pool.
    auth_pool_size: int = Field(
        default=2, ge=1, le=20, description="HTTP: connections for credential checks, apart from the tool pool."
    )
    api_key_usage_flush_s: float = Field(
        default=30.0,
        ge=0.1,
        le=3600,
        description="HTTP: how often the keys' last_used_at stamps are written, batched, off the request path.",
    )
    # Revocation still takes effect at once (LISTEN/NOTIFY, migration 0010); the TTL bounds how long
    # a change can go unseen should a notification be lost with a connection nobody noticed dying.
    credential_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="HTTP: how long a verified API key or JWT tenant is served from memory, at most, "
        "between change notifications (0: every request checks the database).",
    )
    credential_cache_size: int = Field(
        default=10_000, ge=1, le=1_000_000, description="HTTP: credentials cached per process, at most."
    )
    credential_listen_url: SecretStr | None = Field(
        default=None,
        description="HTTP: a direct PostgreSQL URL (the runtime role will do) on which the credential cache "
        "LISTENs for changes. Unset: database_url, unless database_pooler = transaction (LISTEN does not "
        "pass through a transaction-mode pooler), in which case the credential cache is off.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="OTLP/HTTP collector base URL (traces go to <url>/v1/traces). Unset: the standard "
        "OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else no traces.",
    )

    # HTTP transport: DNS-rebinding protection is always on; these are the Host and Origin
    # header values it lets through ("host:*" and "scheme://host:*" allow any port).
    http_allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:*", "localhost:*", "[::1]:*"],
        description="Host header values accepted by `serve --transport http`.",
    )
    http_allowed_origins: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        description="Origin header values accepted by `serve --transport http` (requests without Origin pass).",
    )
    # Stateless HTTP keeps no sessions in process memory, so several workers (or hosts behind a
    # load balancer) can each answer any request; stateful sessions would be lost between them.
    http_stateless: bool = Field(default=False, description="Streamable HTTP without server-side sessions.")
    http_workers: int = Field(
        default=1, ge=1, le=64, description="Worker processes sharing the HTTP port (> 1 needs http_stateless)."
    )
    http_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest HTTP request body; larger get 413."
    )
    http_session_idle_timeout_s: int = Field(
        default=1800,
        ge=1,
        le=86_400,
        description="A stateful session with no request in flight (and no open GET stream) for this long is closed.",
    )
    http_max_sessions: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Open sessions in this process, all tenants together."
    )
    http_body_timeout_s: float = Field(
        default=20, gt=0, le=3600, description="Seconds a client may take to send a request body; slower get 408."
    )
    http_shutdown_timeout_s: int = Field(
        default=30, ge=1, le=3600, description="On SIGTERM/SIGINT, how long in-flight requests may take to finish."
    )

    # OAuth 2.1 resource server (HTTP and SSE): JWT bearer tokens next to API keys; rules in config/oauth.py.
    oauth_issuer: str | None = Field(default=None, description="Token issuer (`iss`); setting it turns JWT mode on.")
    oauth_jwks_url: str | None = Field(default=None, description="The issuer's JWKS URL (asymmetric signatures).")
    oauth_shared_secret: SecretStr | None = Field(default=None, description="HS256 secret: development only.")
    oauth_audience: str | None = Field(default=None, description="The `aud` tokens must carry; required in JWT mode.")
    oauth_tenant_claim: str = Field(
        default="mindscape_tenant",
        pattern=TENANT_CLAIM_PATTERN,
        description="Claim with the tenant slug (a.b: nested).",
    )
    oauth_persona_claim: str = Field(
        default="mindscape_persona",
        pattern=TENANT_CLAIM_PATTERN,
        description="Claim with the persona slug the token acts as, if any (a.b: nested).",
    )
    oauth_algorithms: list[str] | None = Field(default=None, description="Accepted `alg` values; default by key type.")
    oauth_leeway_s: int = Field(default=30, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat.")
    public_url: str | None = Field(
        default=None,
        description="Public base URL in the OAuth metadata, e.g. https://mcp.example.com (default: host:port).",
    )

    # Quotas (docs/operations.md: Quotas): defaults for tenants without their own limits; 0 means unlimited.
    quota_calls_per_minute: int = Field(
        default=600,
        ge=0,
        le=1_000_000,
        description="Tool calls, resource reads and prompt gets per tenant per minute (see quota_backend).",
    )
    # docs/decisions.md: "Calls per minute are counted in the database by default".
    quota_backend: Literal["database", "process"] = Field(
        default="database",
        description="database: one calls-per-minute budget per tenant shared by every process and replica "
        "(within processes x batch). process: counted in each process alone (one process only).",
    )
    quota_rate_batch: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="database quota: most calls a process takes from a tenant's shared budget at once "
        "(at most one second's worth of its limit).",
    )
    quota_max_memories: int = Field(default=10_000, ge=0, le=1_000_000_000, description="Memories per tenant.")
    quota_max_sessions: int = Field(
        default=100,
        ge=0,
        le=1_000_000,
        description="Open MCP sessions (Streamable HTTP) or SSE streams per tenant per process.",
    )
    quota_max_concurrent_calls: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Tool calls, resource reads and prompt gets running at once per tenant per process "
        "(default: half the pool, at least 1).",
    )

    # docs/decisions.md: "A budget of database time per tenant"; quotas.db_time.
    quota_db_ms_per_second: int = Field(
        default=250,
        ge=0,
        le=1_000_000,
        description="Database time (ms of transaction time) per tenant per second, per process, enforced "
        "only while other tenants are active (0: unlimited).",
    )
    quota_db_burst_ms: int = Field(
        default=250,
        ge=0,
        le=3_600_000,
        description="Database time (ms) a tenant may use ahead of its quota_db_ms_per_second.",
    )

    # Semantic memory
    memory_max_content_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    memory_exact_max_rows: int = Field(
        default=5_000, ge=0, le=10_000_000, description="Tenants with at most this many embeddings are ranked exactly."
    )
    # Chosen with benchmarks/memory_quality.py for the default local model (docs/memory-ranking.md):
    # other models place unrelated texts elsewhere on the cosine scale and need their own value.
    memory_min_similarity: float = Field(
        default=0.35, ge=-1, le=1, description="Default cosine floor of semantic and hybrid recall."
    )
    embedding_provider: Literal["local", "hashing", "openai"] = Field(
        default="local",
        description="local: a sentence model in this process (semantic, offline once downloaded). "
        "hashing: built in, lexical (words, not meanings). openai: any compatible API.",
    )
    embedding_model: str = Field(
        default=LOCAL_DEFAULT_MODEL,
        pattern=r"^[A-Za-z0-9._/:@-]{1,100}$",
        description=f"Default by provider: local {LOCAL_DEFAULT_MODEL}, hashing {HASHING_DEFAULT_MODEL}, "
        f"openai {OPENAI_DEFAULT_MODEL}.",
    )
    embedding_dimensions: int = Field(default=384, ge=16, le=2000, description="local: the model's own by default.")
    embedding_model_path: Path | None = Field(
        default=None,
        description="local: a directory holding the model (ONNX and tokenizer), loaded instead of downloading it.",
    )
    embedding_threads: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="local: ONNX Runtime threads (default: 1 serving, one per core in bulk memory commands).",
    )
    embedding_base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL, e.g. http://localhost:11434/v1"
    )
    embedding_api_key: SecretStr | None = None
    embedding_timeout_s: float = Field(default=10.0, gt=0, le=300)
    embedding_max_retries: int = Field(default=3, ge=0, le=10)
    embedding_batch_size: int = Field(default=64, ge=1, le=2048)

    @field_validator("tenant")
    @classmethod
    def _tenant_is_slug(cls, value: str | None) -> str | None:
        if value is not None and not _SLUG_RE.match(value):
            raise ValueError("tenant must be a slug: lowercase letters, digits and '-', at most 64 characters")
        return value

    @model_validator(mode="before")
    @classmethod
    def _embedding_defaults(cls, data: Any) -> Any:
        """An unset model is the provider's default; an unset dimension, a known local model's own."""
        if not isinstance(data, dict):
            return data
        given = cast("dict[str, Any]", data)
        provider = given.get("embedding_provider") or "local"
        model = given.get("embedding_model") or _DEFAULT_MODELS.get(provider)
        if model is None:
            return given  # an unknown provider: its own validation error says so
        given = {**given, "embedding_model": model}
        if provider == "local" and given.get("embedding_dimensions") is None and model in KNOWN_DIMENSIONS:
            given["embedding_dimensions"] = KNOWN_DIMENSIONS[model]
        return given

    @model_validator(mode="after")
    def _local_dimensions(self) -> Settings:
        known = KNOWN_DIMENSIONS.get(self.embedding_model)
        if self.embedding_provider == "local" and known is not None and self.embedding_dimensions != known:
            raise ValueError(
                f"{self.embedding_model} makes {known}-dimensional vectors: set embedding_dimensions to {known} "
                "or leave it unset"
            )
        return self

    @model_validator(mode="after")
    def _workers_need_stateless(self) -> Settings:
        if self.http_workers > 1 and not self.http_stateless:
            raise ValueError(
                "http_workers > 1 needs http_stateless (--stateless): sessions live in one process's memory, "
                "so a request that reaches another worker would not find its session"
            )
        return self

    @model_validator(mode="after")
    def _pooler_needs_url(self) -> Settings:
        if self.database_pooler != "none" and self.database_url is None:
            raise ValueError(
                "database_pooler = transaction needs database_url (the pooler's URL): the embedded database "
                "has no pooler in front of it"
            )
        return self

    @model_validator(mode="after")
    def _oauth_consistent(self) -> Settings:
        problem = oauth_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def default_concurrent_calls(self) -> int:
        """quota_max_concurrent_calls, or half the pool (at least 1): no tenant can hold every connection."""
        if self.quota_max_concurrent_calls is not None:
            return self.quota_max_concurrent_calls
        return max(1, self.pool_max_size // 2)

    @property
    def http_connections(self) -> int:
        """Database connections one HTTP server process may open: the tool pool, the credential
        pool and, when the credential cache listens for changes, its one LISTEN connection."""
        return self.pool_max_size + self.auth_pool_size + int(self.credential_listener)

    @property
    def credential_listener(self) -> bool:
        """Whether an HTTP process holds a LISTEN connection for its credential cache: the cache is
        on, and there is a direct URL to listen on (not a transaction-mode pooler: app.state)."""
        return self.credential_cache_ttl_s > 0 and (
            self.credential_listen_url is not None or self.database_pooler != "transaction"
        )

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if _config_file is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=_config_file),)
        return sources


DEFAULT_CONFIG = "mindscape.toml"  # read from the working directory when no file is named

# Set only for the duration of `load_settings`; pydantic-settings builds sources from the class.
_config_file: Path | None = None


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build the settings from flags (None means "not given"), environment and config file."""
    global _config_file
    path = config_file or (Path(p) if (p := os.environ.get("MINDSCAPE_CONFIG")) else None)
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = Path(DEFAULT_CONFIG)
    if path is not None and not path.is_file():
        raise StartupError(f"config file {path} does not exist; fix --config or MINDSCAPE_CONFIG")
    _config_file = path
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise StartupError(f"invalid settings: {_one_line(exc)}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise StartupError(f"config file {path} is not valid TOML: {exc}") from exc
    except ValueError as exc:  # pydantic-settings' own SettingsError
        raise StartupError(f"invalid settings: {exc}") from exc
    finally:
        _config_file = None


def _one_line(exc: ValidationError) -> str:
    """Each problem as `field: message`, without pydantic's input echo and help links (and so no secrets)."""
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in error["loc"])
        message = ("unknown setting" if error["type"] == "extra_forbidden" else error["msg"]).removeprefix(
            "Value error, "
        )
        problems.append(f"{field}: {message}" if field else message)  # no field: a combination (config.oauth)
    return "; ".join(problems)


def is_slug(value: str) -> bool:
    return bool(_SLUG_RE.match(value))
