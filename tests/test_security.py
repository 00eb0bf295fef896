"""Kafka security settings reach every client, and no secret reaches a log line.

The password comes the way docs/operations.md tells operators to supply it: from a settings
file mounted as a secret (``PRODCAT_CONFIG``), everything else from ``PRODCAT_KAFKA__*``
variables. The log checks capture everything at DEBUG, where kafka-python dumps its full
configuration, and grep the captured text for the secret.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import certifi
import faust
import pytest
from click.testing import CliRunner

from prodcat.cli.main import cli
from prodcat.core.redaction import MASK, redact_secrets_in_logs, secret_values
from prodcat.core.settings import Settings, load_settings
from prodcat.kafka.clients import (
    BrokerUnreachable,
    aiokafka_options,
    kafka_python_options,
    probe_metadata,
)
from prodcat.worker.app import faust_config

BOOTSTRAP = "kafka-1:9093,kafka-2:9093"


@pytest.fixture
def password() -> str:
    return secrets.token_urlsafe(12)


@pytest.fixture
def secured_env(tmp_path: Path, password: str) -> dict[str, str]:
    """Settings environment for SASL_SSL/SCRAM with the password in a mounted secret file."""
    secret_file = tmp_path / "kafka-secret.toml"
    secret_file.write_text(f'[kafka]\nsasl_password = "{password}"\n', encoding="utf-8")
    return {
        "PRODCAT_CONFIG": str(secret_file),
        "PRODCAT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "PRODCAT_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "PRODCAT_KAFKA__SASL_USERNAME": "prodcat-worker",
        "PRODCAT_KAFKA__SSL_CAFILE": certifi.where(),
    }


@pytest.fixture
def restore_record_factory() -> Iterator[None]:
    """Redaction is process-wide; put logging back as it was after each test."""
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on, so clients fail fast after logging their set-up."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_security_settings_reach_every_client(secured_env: dict[str, str], password: str) -> None:
    settings = load_settings(env=secured_env)

    sync = kafka_python_options(settings, BOOTSTRAP)
    assert sync["bootstrap_servers"] == ["kafka-1:9093", "kafka-2:9093"]
    assert sync["security_protocol"] == "SASL_SSL"
    assert sync["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (sync["sasl_plain_username"], sync["sasl_plain_password"]) == (
        "prodcat-worker",
        password,
    )
    assert sync["ssl_cafile"] == certifi.where()

    aio = aiokafka_options(settings, BOOTSTRAP)
    assert aio["security_protocol"] == "SASL_SSL"
    assert aio["sasl_plain_password"] == password
    assert isinstance(aio["ssl_context"], ssl.SSLContext)
    assert aio["ssl_context"].verify_mode == ssl.CERT_REQUIRED

    credentials = faust_config(settings, BOOTSTRAP)["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("prodcat-worker", password)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


def test_aiokafka_accepts_the_security_options(secured_env: dict[str, str]) -> None:
    """The options are valid for the client the worker really uses (built, not connected)."""
    from aiokafka import AIOKafkaProducer

    options = aiokafka_options(load_settings(env=secured_env), BOOTSTRAP)

    async def build() -> str:
        producer = AIOKafkaProducer(**options)
        return producer.client._security_protocol

    assert asyncio.run(build()) == "SASL_SSL"


def test_tls_without_sasl_uses_tls_credentials(tmp_path: Path) -> None:
    env = {
        "PRODCAT_CONFIG": str(tmp_path / "absent.toml"),
        "PRODCAT_KAFKA__SECURITY_PROTOCOL": "SSL",
        "PRODCAT_KAFKA__SSL_CAFILE": certifi.where(),
    }
    settings = load_settings(env=env)
    assert isinstance(faust_config(settings, BOOTSTRAP)["broker_credentials"], faust.SSLCredentials)
    assert "sasl_mechanism" not in kafka_python_options(settings, BOOTSTRAP)


def test_plaintext_defaults_carry_no_credentials(tmp_path: Path) -> None:
    settings = load_settings(env={"PRODCAT_CONFIG": str(tmp_path / "absent.toml")})
    assert "broker_credentials" not in faust_config(settings, BOOTSTRAP)
    assert "ssl_context" not in aiokafka_options(settings, BOOTSTRAP)
    assert secret_values(settings) == set()


def test_secret_values_follow_the_settings_redaction_rule(
    secured_env: dict[str, str], password: str
) -> None:
    settings = load_settings(env=secured_env)
    assert password in secret_values(settings)
    assert "prodcat-worker" not in secret_values(settings)  # a user name is not a secret


@pytest.mark.usefixtures("restore_record_factory")
def test_redaction_masks_messages_arguments_and_tracebacks(
    caplog: pytest.LogCaptureFixture, password: str
) -> None:
    settings = Settings()
    settings.kafka.sasl_password = password
    log = logging.getLogger("prodcat.test.redaction")
    caplog.set_level(logging.DEBUG)

    log.debug("before: options %s", {"sasl_plain_password": password})
    assert password in caplog.text  # what happens without redaction

    caplog.clear()
    redact_secrets_in_logs(settings)
    redact_secrets_in_logs(settings)  # idempotent: one factory, not two wrapped
    log.debug("options %s", {"sasl_plain_password": password})
    log.info(f"inline {password} text")
    try:
        raise ValueError(f"auth failed for password {password}")
    except ValueError:
        log.exception("client error")
    text = caplog.text + "".join(logging.Formatter().format(record) for record in caplog.records)
    assert password not in text
    assert text.count(MASK) >= 3


@pytest.mark.usefixtures("restore_record_factory")
def test_kafka_client_debug_dump_is_masked(
    caplog: pytest.LogCaptureFixture, secured_env: dict[str, str], password: str, closed_port: int
) -> None:
    """kafka-python logs every admin-client option at DEBUG; the password must not survive."""
    settings = load_settings(
        env=secured_env | {"PRODCAT_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    )
    redact_secrets_in_logs(settings)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BrokerUnreachable) as failure:
        probe_metadata(f"127.0.0.1:{closed_port}", 0.5, settings)
    assert password not in str(failure.value)
    assert password not in caplog.text
    assert f"'sasl_plain_password': '{MASK}'" in caplog.text


@pytest.mark.usefixtures("restore_record_factory")
def test_cli_masks_secrets_for_every_command(
    caplog: pytest.LogCaptureFixture, secured_env: dict[str, str], password: str, closed_port: int
) -> None:
    """Through the real CLI: a command that fails to reach its broker logs and prints no secret."""
    env = secured_env | {"PRODCAT_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    caplog.set_level(logging.DEBUG)
    result = CliRunner().invoke(cli, ["topics", "--broker", f"127.0.0.1:{closed_port}"], env=env)
    assert result.exit_code == 1, result.output
    assert "no Kafka broker answers" in result.output
    assert password not in result.output
    assert password not in caplog.text
    assert f"'sasl_plain_password': '{MASK}'" in caplog.text
