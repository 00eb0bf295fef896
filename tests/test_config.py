"""Settings: defaults < prodcat.toml < PRODCAT_* environment, and one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.config import Settings, SettingsError, load_settings


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prodcat.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    settings = load_settings(env={"PRODCAT_CONFIG": str(tmp_path / "absent.toml")})
    assert settings.broker is None
    assert settings.topics.products == "products"
    assert settings.topics.dlq == "products.dlq"
    assert settings.topics.partitions == 4


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'broker = "kafka:9092"\n[topics]\nproducts = "shop.products"\npartitions = 12\n',
    )
    settings = load_settings(path, env={})
    assert settings.broker == "kafka:9092"
    assert settings.topics.products == "shop.products"
    assert settings.topics.partitions == 12
    assert settings.topics.categories == "categories"


def test_environment_overrides_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'broker = "kafka:9092"\n[topics]\npartitions = 12\n')
    env = {
        "PRODCAT_BROKER": "10.0.0.5:9093",
        "PRODCAT_TOPICS__PARTITIONS": "3",
        "PRODCAT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "PRODCAT_DATA_DIR": str(tmp_path),
    }
    settings = load_settings(path, env=env)
    assert settings.broker == "10.0.0.5:9093"
    assert settings.topics.partitions == 3
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.data_path() == tmp_path


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[topics]\ncategories = "cats"\n')
    assert load_settings(env={"PRODCAT_CONFIG": str(path)}).topics.categories == "cats"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("", {"PRODCAT_TOPICS__PARTITIONS": "four"}, "'topics.partitions' must be int"),
        ("[topics]\npartitions = 2.5\n", {}, "'topics.partitions' must be int"),
        ("", {"PRODCAT_NOPE": "1"}, "unknown setting 'nope'"),
        ("[kafka]\nbogus = 1\n", {}, "unknown setting 'kafka.bogus'"),
        ("topics = 3\n", {}, "'topics' must be a table"),
        ("broker = \n", {}, "not valid TOML"),
    ],
)
def test_bad_values_name_the_setting(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = write_toml(tmp_path, toml)
    with pytest.raises(SettingsError, match=message):
        load_settings(path, env=env)


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_redacted_hides_secrets() -> None:
    settings = Settings()
    settings.kafka.sasl_password = "hunter2"
    assert "hunter2" not in repr(settings.redacted())
