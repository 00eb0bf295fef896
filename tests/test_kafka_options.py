"""Client options built from settings: the same address and security for every Kafka client."""

from __future__ import annotations

import ssl

import pytest

from prodcat.core.settings import load_settings
from prodcat.kafka.clients import (
    BrokerUnreachable,
    aiokafka_options,
    faust_options,
    kafka_python_options,
)

SASL_ENV = {
    "PRODCAT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
    "PRODCAT_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
    "PRODCAT_KAFKA__SASL_USERNAME": "shop",
    "PRODCAT_KAFKA__SASL_PASSWORD": "s3cret",
    "PRODCAT_CONFIG": "/nonexistent.toml",
}


def test_plaintext_options_have_no_security_extras() -> None:
    settings = load_settings(env={"PRODCAT_CONFIG": "/nonexistent.toml"})
    options = kafka_python_options(settings, "a:9092, b:9092")
    assert options["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert options["security_protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl", "ssl")) for key in options)
    assert "ssl_context" not in aiokafka_options(settings, "a:9092")


def test_sasl_ssl_reaches_every_client() -> None:
    settings = load_settings(env=SASL_ENV)
    for options in (kafka_python_options(settings, "k:9093"), aiokafka_options(settings, "k:9093")):
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == "SCRAM-SHA-512"
        assert options["sasl_plain_username"] == "shop"
        assert options["sasl_plain_password"] == "s3cret"
    assert isinstance(aiokafka_options(settings, "k:9093")["ssl_context"], ssl.SSLContext)
    faust = faust_options(settings, "k1:9093,k2:9093")
    assert faust["broker"] == "kafka://k1:9093;kafka://k2:9093"
    credentials = faust["broker_credentials"]
    assert credentials.username == "shop" and credentials.ssl_context is not None
    assert "s3cret" not in repr(credentials)


def test_empty_bootstrap_is_refused() -> None:
    settings = load_settings(env={"PRODCAT_CONFIG": "/nonexistent.toml"})
    with pytest.raises(BrokerUnreachable, match="no broker address"):
        kafka_python_options(settings, " , ")
