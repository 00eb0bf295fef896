"""Kafka client options and factories built from :class:`Settings`, one place for all clients.

Every client (kafka-python for the CLI, aiokafka/Faust for the worker) must get the same
bootstrap address and security options, and none may log a secret, so they are assembled
here. ``wait_for_broker`` fails within seconds on a wrong address instead of letting a client
retry for half a minute.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from typing import Any

from prodcat.core.settings import Settings

DEFAULT_WAIT_S = 5.0


class BrokerUnreachable(ConnectionError):
    """No Kafka broker answered at the bootstrap address in time."""


def _base_options(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """Options kafka-python and aiokafka spell the same way."""
    kafka = settings.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": _servers(bootstrap),
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.sasl_mechanism:
        options |= {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.sasl_username,
            "sasl_plain_password": kafka.sasl_password,
        }
    return options


def kafka_python_options(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """Connection and security options accepted by every kafka-python client."""
    options = _base_options(settings, bootstrap)
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(settings.kafka, name):
            options[name] = getattr(settings.kafka, name)
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL/SASL_SSL protocols (aiokafka and Faust take a context, not files)."""
    kafka = settings.kafka
    if "SSL" not in kafka.security_protocol.upper():
        return None
    context = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.ssl_certfile:
        context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    return context


def aiokafka_options(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """Connection and security options for aiokafka producers and consumers."""
    options = _base_options(settings, bootstrap)
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    return options


def faust_options(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` for ``faust.App(...)``."""
    import faust

    options: dict[str, Any] = {
        "broker": ";".join(f"kafka://{server}" for server in _servers(bootstrap)),
    }
    kafka = settings.kafka
    context = ssl_context(settings)
    if kafka.sasl_mechanism:
        options["broker_credentials"] = faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


def _servers(bootstrap: str) -> list[str]:
    servers = [part.strip() for part in bootstrap.split(",") if part.strip()]
    if not servers:
        raise BrokerUnreachable("no broker address given; expected host:port[,host:port]")
    return servers


def probe_metadata(
    bootstrap: str, timeout_s: float = DEFAULT_WAIT_S, settings: Settings | None = None
) -> list[str]:
    """One real metadata request; return the topic names or raise :class:`BrokerUnreachable`."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = max(int(timeout_s * 1000), 100)
    options = kafka_python_options(settings or Settings(), bootstrap)
    options["request_timeout_ms"] = timeout_ms
    try:
        admin = KafkaAdminClient(**options, bootstrap_timeout_ms=timeout_ms)
    except (KafkaError, OSError, ValueError) as exc:
        raise BrokerUnreachable(f"no Kafka broker answers at {bootstrap}: {exc}") from None
    try:
        return sorted(admin.list_topics())
    except (KafkaError, OSError) as exc:
        raise BrokerUnreachable(f"Kafka broker at {bootstrap} did not answer: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def wait_for_broker(
    bootstrap: str, timeout_s: float = DEFAULT_WAIT_S, settings: Settings | None = None
) -> None:
    """Return once the broker answers a metadata request; raise a clear error after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            probe_metadata(bootstrap, max(deadline - time.monotonic(), 0.5), settings)
            return
        except BrokerUnreachable as exc:
            if time.monotonic() >= deadline:
                raise BrokerUnreachable(
                    f"{exc} (waited {timeout_s:.0f} s); check --broker / PRODCAT_BROKER, "
                    "or start one with `prodcat broker`"
                ) from None
            time.sleep(0.2)


def admin_client(settings: Settings, bootstrap: str) -> Any:
    """A kafka-python admin client."""
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**kafka_python_options(settings, bootstrap))


def producer(settings: Settings, bootstrap: str, **overrides: Any) -> Any:
    """A kafka-python producer that waits for all replicas and sends events up to the size limit.

    Idempotence stays off: the embedded broker does not support it (docs/operations.md).
    """
    from kafka import KafkaProducer

    options = kafka_python_options(settings, bootstrap) | {
        "acks": "all",
        "linger_ms": 20,
        "batch_size": 256 * 1024,  # photo events are ~8 KB: the 16 KB default sends one a batch
        "enable_idempotence": False,
        "max_request_size": settings.kafka.max_message_bytes,
    }
    return KafkaProducer(**(options | overrides))


def consumer(settings: Settings, bootstrap: str, **overrides: Any) -> Any:
    """A kafka-python consumer (no topics subscribed; pass ``group_id`` etc. as overrides)."""
    from kafka import KafkaConsumer

    options = kafka_python_options(settings, bootstrap) | {
        "fetch_max_bytes": max(settings.kafka.max_message_bytes, 52428800),
        "max_partition_fetch_bytes": settings.kafka.max_message_bytes,
        "session_timeout_ms": int(settings.worker.session_timeout_s * 1000),
    }
    return KafkaConsumer(**(options | overrides))


def topic_plan(settings: Settings) -> dict[str, int]:
    """prodcat's topics and their partition counts, from the settings."""
    topics = settings.topics
    return {
        topics.products: topics.partitions,
        topics.categories: topics.partitions,
        topics.dlq: topics.partitions,
        topics.corrections: topics.partitions,
    }


def ensure_topics(
    settings: Settings, bootstrap: str, extra: tuple[str, ...] = ()
) -> dict[str, int]:
    """Create prodcat's topics (and ``extra`` ones) where missing; return name -> partitions.

    Idempotent: existing topics are left as they are (their partition count is reported,
    not changed).
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    plan = topic_plan(settings) | {name: settings.topics.partitions for name in extra}
    admin = admin_client(settings, bootstrap)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, partitions, settings.topics.replication_factor)
            for name, partitions in plan.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # lost a race: fine
                admin.create_topics(missing)
        return describe_topics(admin, list(plan))
    finally:
        admin.close()


def describe_topics(admin: Any, names: list[str]) -> dict[str, int]:
    """Partition count per topic name, for the given admin client."""
    described = admin.describe_topics(names)
    return {topic["name"]: len(topic["partitions"]) for topic in described}
