"""The deployment wiring: docker-compose.yml, the image and the Prometheus files agree.

Parsed, not run (no Docker engine here): Kafka's listeners, the workers' settings, the
ports Prometheus scrapes and the metrics the alert rules use are checked against the image
and the worker's code, and docs/operations.md against the files.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
import yaml
from dockerfile import Stage, exec_form, prodcat_env
from repo import REPO_ROOT

from prodcat.core.settings import Settings, load_settings

DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS = REPO_ROOT / "deploy" / "prometheus.yml"
ALERTS = REPO_ROOT / "deploy" / "prometheus-alerts.yml"
TRAINING_ONLY = {"torch", "torchvision", "transformers", "triton", "onnx", "onnxscript"}


# --- docker-compose.yml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def worker_settings(
    runtime: Stage, services: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """The settings a worker container runs with: image ENV, then the compose environment."""
    env = prodcat_env(runtime.env()) | prodcat_env(_defaults(services["worker"]["environment"]))
    path = tmp_path_factory.mktemp("settings") / "prodcat.toml"
    path.write_text("", encoding="utf-8")
    return load_settings(path, env=env)


def _default(value: Any) -> str:
    """``${VAR:-default}`` replaced by the default, as compose does when VAR is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def _defaults(env: dict[str, Any]) -> dict[str, str]:
    return {key: _default(value) for key, value in env.items()}


def _kafka_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {k: str(v) for k, v in services["kafka"]["environment"].items()}


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    parsed = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        parsed[name] = (host, int(port))
    return parsed


def test_kafka_runs_in_kraft_mode_without_zookeeper(services: dict[str, dict[str, Any]]) -> None:
    env = _kafka_env(services)
    assert _default(services["kafka"]["image"]).startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    for name, service in services.items():
        assert "zookeeper" not in str(service.get("image", "")).lower(), name
        assert not any("ZOOKEEPER" in key for key in service.get("environment", {})), name
    voter_host, voter_port = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")[1].split(":")
    controller = _listeners(env["KAFKA_LISTENERS"])[env["KAFKA_CONTROLLER_LISTENER_NAMES"]]
    assert (voter_host, int(voter_port)) == ("kafka", controller[1])
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID: not a UUID"


def test_kafka_listeners_are_consistent(services: dict[str, dict[str, Any]]) -> None:
    env = _kafka_env(services)
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols)
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port, f"{name} is advertised on another port than it listens"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    published = [p.rsplit(":", 1)[-1] for p in services["kafka"].get("ports", [])]
    for port in published:  # a published port must advertise an address the host can use
        (name,) = [n for n, (_, p) in advertised.items() if p == int(port)]
        assert advertised[name][0] in ("localhost", "127.0.0.1")


def test_clients_bootstrap_from_the_in_network_listener(
    services: dict[str, dict[str, Any]], worker_settings: Settings
) -> None:
    advertised = _listeners(_kafka_env(services)["KAFKA_ADVERTISED_LISTENERS"])
    in_network = {f"{host}:{port}" for host, port in advertised.values() if host in services}
    assert worker_settings.broker in in_network
    for name in ("topics", "worker"):
        command = services[name].get("command", [])
        if "--broker" in command:
            assert command[command.index("--broker") + 1] == worker_settings.broker, name
    (exporter,) = [
        a for a in services["kafka-exporter"]["command"] if a.startswith("--kafka.server=")
    ]
    assert exporter.partition("=")[2] in in_network


def test_workers_start_after_topics_are_created(services: dict[str, dict[str, Any]]) -> None:
    topics = services["topics"]
    assert topics["command"][0] == "topics"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    depends = services["worker"]["depends_on"]
    assert depends["topics"]["condition"] == "service_completed_successfully"
    assert depends["kafka"]["condition"] == "service_healthy"
    assert "healthcheck" in services["kafka"]
    assert topics["environment"] == services["worker"]["environment"], "one set of settings"


def test_workers_scale_in_one_group_with_the_model_read_only(
    runtime: Stage, services: dict[str, dict[str, Any]], worker_settings: Settings
) -> None:
    worker = services["worker"]
    assert int(_defaults(worker["deploy"])["replicas"]) >= 2
    assert "container_name" not in worker and "ports" not in worker, "blocks scaling"
    model_dir = exec_form(runtime.args("VOLUME")[0])[0]
    mounts = [v.split(":") for v in worker["volumes"]]
    (mount,) = [m for m in mounts if m[-2] == model_dir]
    assert mount[-1] == "ro", "the model must be mounted read-only"
    command = worker.get("command") or exec_form(runtime.args("CMD")[-1])
    assert command[command.index("--model") + 1] == model_dir


def test_metrics_port_matches_image_compose_and_prometheus(
    runtime: Stage, services: dict[str, dict[str, Any]], worker_settings: Settings
) -> None:
    port = worker_settings.worker.web_port
    assert [int(p) for p in runtime.args("EXPOSE")] == [port]
    assert [int(p) for p in services["worker"]["expose"]] == [port]
    scrape = _scrape_job("prodcat-worker")
    (sd,) = scrape["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == port
    assert scrape.get("metrics_path", "/metrics") == "/metrics"


def test_prometheus_loads_the_files_in_deploy(services: dict[str, dict[str, Any]]) -> None:
    mounts = {
        (REPO_ROOT / source).resolve(): target
        for source, target, *_ in (v.split(":") for v in services["prometheus"]["volumes"])
        if source.startswith(".")
    }
    assert mounts[PROMETHEUS.resolve()] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    assert config["rule_files"] == [mounts[ALERTS.resolve()]]
    assert "healthcheck" in services["prometheus"]


def test_lag_exporter_is_scraped_where_it_listens(services: dict[str, dict[str, Any]]) -> None:
    (target,) = _scrape_job("kafka-exporter")["static_configs"][0]["targets"]
    host, port = target.split(":")
    exporter = services[host]
    assert port in [str(p) for p in exporter["expose"]]


def _scrape_job(name: str) -> dict[str, Any]:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == name]
    return job


# --- alert rules -----------------------------------------------------------------------------

SELECTOR = re.compile(r"\b((?:prodcat|kafka)_[a-z0-9_]+|up)\b\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    return [(name, MATCHER.findall(labels or "")) for name, labels in SELECTOR.findall(expr)]


def test_alerts_cover_lag_dead_letters_latency_and_readiness(
    alert_rules: list[dict[str, Any]],
) -> None:
    from prodcat.worker.monitoring import DEAD_LETTER

    exprs = " ".join(rule["expr"] for rule in alert_rules)
    assert "kafka_consumergroup_lag" in exprs
    assert f'prodcat_events_total{{outcome="{DEAD_LETTER}"}}' in exprs
    assert re.search(r"histogram_quantile\(0\.99,.*prodcat_end_to_end_seconds_bucket", exprs)
    assert "prodcat_ready" in exprs
    for rule in alert_rules:
        assert rule["alert"] and rule.get("for") and rule["annotations"]["summary"]


def test_lag_alert_watches_the_workers_group_and_topic(
    alert_rules: list[dict[str, Any]], worker_settings: Settings
) -> None:
    for rule in alert_rules:
        for name, matchers in _selectors(rule["expr"]):
            if name.startswith("kafka_consumergroup"):
                labels = {label: value for label, _, value in matchers}
                assert labels["consumergroup"] == worker_settings.worker.group_id
                assert labels["topic"] == worker_settings.topics.products


def test_up_alerts_name_scrape_jobs_that_exist(alert_rules: list[dict[str, Any]]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    for rule in alert_rules:
        for name, matchers in _selectors(rule["expr"]):
            if name == "up":
                assert {value for label, _, value in matchers if label == "job"} <= jobs


# --- docs/operations.md stays in step ----------------------------------------------------------

OPERATIONS = REPO_ROOT / "docs" / "operations.md"


def test_operations_guide_shows_the_alert_rules_as_deployed(
    alert_rules: list[dict[str, Any]],
) -> None:
    guide = OPERATIONS.read_text(encoding="utf-8")
    for rule in alert_rules:
        assert f"`{rule['alert']}` | `{rule['expr']}` | {rule['for']} |" in guide, rule["alert"]


def test_operations_guide_documents_every_compose_variable() -> None:
    guide = OPERATIONS.read_text(encoding="utf-8")
    variables = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text(encoding="utf-8")))
    assert variables
    for variable in variables:
        assert f"| `{variable}` |" in guide, f"{variable} is not in the guide's table"
