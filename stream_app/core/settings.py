"""Settings: defaults, overridden by ``prodcat.toml``, overridden by ``PRODCAT_*`` variables.

One typed tree so every command, the worker and the tests read the same values. Nested
fields are addressed in the environment with a double underscore:
``PRODCAT_WORKER__MAX_BATCH_SIZE=64`` sets ``[worker] max_batch_size``; top-level fields
are plain: ``PRODCAT_BROKER=kafka:9092``.

The settings file is strict (an unknown key is an error: it is a typo in a file the user
owns), the environment is not: a shell may hold ``PRODCAT_*`` variables meant for other
tools (docker-compose's ``PRODCAT_WORKERS``), so an unknown one is logged and ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "PRODCAT_"
CONFIG_FILE_ENV = "PRODCAT_CONFIG"
DEFAULT_CONFIG_FILE = "prodcat.toml"
REPO_ROOT = Path(__file__).resolve().parents[2]  # the source checkout (editable installs)
# PRODCAT_* variables that are not settings: read by the plugin manager, the CLI's error
# handler, or docker-compose.yml (replicas, partitions of the topic job, review tokens).
NOT_SETTINGS = frozenset(
    {"CONFIG", "PLUGINS", "DISABLE_PLUGINS", "DEBUG", "WORKERS", "PARTITIONS", "REVIEW_TOKENS"}
)
# Settings that take one of a few words; anything else is an error naming them.
CHOICES = {
    "kafka.compression": ("none", "gzip", "snappy", "lz4", "zstd"),
    "worker.processing_guarantee": ("at_least_once", "exactly_once"),
}

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


@dataclass
class TopicSettings:
    products: str = "products"
    categories: str = "categories"
    dlq: str = "products.dlq"
    corrections: str = "categories.corrections"
    partitions: int = 4
    replication_factor: int = 1


@dataclass
class KafkaSettings:
    """Client options passed through to every Kafka client (kafka-python and aiokafka)."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "prodcat"
    request_timeout_ms: int = 15000
    max_message_bytes: int = 4 * 1024 * 1024
    compression: str = "none"  # what prodcat's own producers use; every codec is consumed


@dataclass
class WorkerSettings:
    group_id: str = "prodcat-workers"
    max_batch_size: int = 32
    max_delay_ms: float = 10.0
    queue_size: int = 256
    deadline_ms: float = 30000.0
    featurize_threads: int = 2
    ort_threads: int = 2
    providers: str = "auto"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    session_timeout_s: float = 6.0
    review_threshold: float | None = None  # None: the model's, fitted when it was trained
    max_event_bytes: int = 4 * 1024 * 1024
    memory_limit_mb: int = 4096
    dlq_max_original_bytes: int = 1024 * 1024
    model_poll_s: float = 5.0
    broker_probe_s: float = 2.0
    commit_interval_s: float = 1.0
    # exactly_once: transactional outcomes + offsets, read_committed (Apache Kafka only)
    processing_guarantee: str = "at_least_once"
    cascade: str = "auto"  # auto: the bundle's text-first cascade, if it has one; off
    image_cache_size: int = 0  # image embeddings kept by photo bytes (0 = no cache)


@dataclass
class ImageSettings:
    """Fetching photos by URL. Decoding limits (pixels, bytes) belong to the `image.decode`
    component's config, recorded in the model manifest, so training and serving agree."""

    fetch_timeout_s: float = 5.0
    max_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 3
    max_concurrency: int = 16
    allow_hosts: list[str] = field(default_factory=list)


@dataclass
class DashboardSettings:
    """``prodcat dashboard``: the web page for the people who own the catalogue.

    ``review_tokens`` entries are ``name:token``: a reviewer signs in with the token and
    their decisions carry the name. Without any the page is read-only.
    """

    host: str = "127.0.0.1"
    port: int = 8066
    review_tokens: list[str] = field(default_factory=list, repr=False)
    allowed_hosts: list[str] = field(default_factory=list)
    worker_metrics: list[str] = field(default_factory=lambda: ["http://127.0.0.1:6066/metrics"])
    scrape_interval_s: float = 5.0
    feed_size: int = 500
    queue_size: int = 2000
    pending_products: int = 5000
    pending_mb: int = 64
    audit_rate: float = 0.02
    drift_window: int = 2000
    history: int = 2000


@dataclass
class Settings:
    broker: str | None = None
    data_dir: str | None = None
    model_dir: str = "models/default"
    cache_dir: str = ".cache/prodcat"
    log_level: str = "INFO"
    topics: TopicSettings = field(default_factory=TopicSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)

    def data_path(self) -> Path:
        """Where ../shared/datasets lives: the setting, else next to the cwd or the repo."""
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        for base in (Path.cwd(), REPO_ROOT):
            candidate = base.parent / "shared" / "datasets"
            if candidate.is_dir():
                return candidate
        return REPO_ROOT.parent / "shared" / "datasets"

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with every secret replaced, safe to log or print."""
        data = dataclasses.asdict(self)
        for key in ("sasl_password", "ssl_keyfile"):
            if data["kafka"].get(key):
                data["kafka"][key] = "***"
        data["dashboard"]["review_tokens"] = [
            f"{entry.partition(':')[0]}:***" if ":" in entry else "***"
            for entry in data["dashboard"]["review_tokens"]
        ]
        return data


def load_settings(
    path: str | Path | None = None, env: typing.Mapping[str, str] | None = None
) -> Settings:
    """Build settings from defaults, the TOML file (if any) and the environment."""
    env = os.environ if env is None else env
    settings = Settings()
    file = Path(path or env.get(CONFIG_FILE_ENV) or DEFAULT_CONFIG_FILE)
    if file.is_file():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{file}: not valid TOML: {exc}") from None
        _apply(settings, data, str(file))
    elif path is not None:
        raise SettingsError(f"config file {file} does not exist")
    _apply_env(settings, env)
    return settings


def _apply_env(settings: Settings, env: typing.Mapping[str, str]) -> None:
    """Set each ``PRODCAT_*`` variable that names a setting; log and skip the others."""
    for key, value in sorted(env.items()):
        if not key.startswith(ENV_PREFIX) or key[len(ENV_PREFIX) :] in NOT_SETTINGS:
            continue
        parts = key[len(ENV_PREFIX) :].lower().split("__")
        owner = _owner_of(settings, parts)
        if owner is None:
            log.warning("ignoring %s: prodcat has no setting %r", key, ".".join(parts))
            continue
        hint = typing.get_type_hints(type(owner))[parts[-1]]
        setattr(owner, parts[-1], _checked(value, hint, ".".join(parts), "environment"))


def _owner_of(settings: Settings, parts: list[str]) -> Any | None:
    """The settings table that holds the plain setting named by ``parts``, else None."""
    owner: Any = settings
    for table in parts[:-1]:
        owner = getattr(owner, table, None)
    if not dataclasses.is_dataclass(owner):
        return None
    if parts[-1] not in {f.name for f in dataclasses.fields(owner)}:
        return None
    return None if dataclasses.is_dataclass(getattr(owner, parts[-1])) else owner


def _apply(target: Any, data: dict[str, Any], source: str, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target)}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise SettingsError(f"{source}: unknown setting {where!r}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise SettingsError(f"{source}: {where!r} must be a table of settings")
            _apply(current, value, source, f"{where}.")
        else:
            setattr(target, key, _checked(value, hints[key], where, source))


def _checked(value: Any, hint: Any, where: str, source: str) -> Any:
    """The value as the setting's type, and one of its ``CHOICES`` where it has some."""
    value = _coerce(value, hint, where, source)
    allowed = CHOICES.get(where)
    if allowed is not None and value not in allowed:
        choices = ", ".join(allowed)
        raise SettingsError(f"{source}: {where!r} must be one of {choices}, got {value!r}")
    return value


def _coerce(value: Any, hint: Any, where: str, source: str) -> Any:
    args = typing.get_args(hint)
    optional = type(None) in args and isinstance(hint, types.UnionType)
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if optional and (value is None or value == ""):
        return None
    try:
        if typing.get_origin(base) is list:
            if isinstance(value, str):
                return [item.strip() for item in value.split(",") if item.strip()]
            return [str(item) for item in value]
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if base in (int, float, str):
            if base is int and isinstance(value, float):
                raise ValueError(value)
            return base(value)
    except (TypeError, ValueError):
        raise SettingsError(
            f"{source}: {where!r} must be {getattr(base, '__name__', base)}, got {value!r}"
        ) from None
    return value
