"""Settings: defaults < prodcat.toml < PRODCAT_* environment, and one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from prodcat.core.settings import Settings, SettingsError, load_settings


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
        ("[kafka]\nbogus = 1\n", {}, "unknown setting 'kafka.bogus'"),
        ("topics = 3\n", {}, "'topics' must be a table"),
        ("broker = \n", {}, "not valid TOML"),
        (
            '[kafka]\ncompression = "brotli"\n',
            {},
            "'kafka.compression' must be one of none, gzip, snappy, lz4, zstd",
        ),
        (
            "",
            {"PRODCAT_WORKER__PROCESSING_GUARANTEE": "exactly-once"},
            "'worker.processing_guarantee' must be one of at_least_once, exactly_once",
        ),
    ],
)
def test_bad_values_name_the_setting(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = write_toml(tmp_path, toml)
    with pytest.raises(SettingsError, match=message):
        load_settings(path, env=env)


@pytest.mark.parametrize(
    "variable",
    ["PRODCAT_DEBUG", "PRODCAT_WORKERS", "PRODCAT_PARTITIONS", "PRODCAT_PLUGINS"],
)
def test_variables_read_by_other_tools_are_not_settings(
    variable: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert load_settings(env={variable: "1"}) == Settings()
    assert not caplog.records  # not even a warning: docs tell users to set them


@pytest.mark.parametrize(
    ("variable", "setting"),
    [
        ("PRODCAT_NOPE", "nope"),
        ("PRODCAT_WORKER__MAX_BATCH_SIZ", "worker.max_batch_siz"),
        ("PRODCAT_BROKER__HOST", "broker.host"),
        ("PRODCAT_WORKER", "worker"),
    ],
)
def test_unknown_variables_are_ignored_with_a_warning(
    variable: str, setting: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = {variable: "1", "PRODCAT_WORKER__MAX_BATCH_SIZE": "7"}
    assert load_settings(env=env).worker.max_batch_size == 7
    assert [r.getMessage() for r in caplog.records] == [
        f"ignoring {variable}: prodcat has no setting {setting!r}"
    ]


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_redacted_hides_secrets() -> None:
    settings = Settings()
    settings.kafka.sasl_password = "hunter2"
    assert "hunter2" not in repr(settings.redacted())
