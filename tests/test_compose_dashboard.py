"""The dashboard in the deployment: compose service, Prometheus job, alerts and Grafana.

Which process exports which metric is checked against real registries: a worker's and a
dashboard's /metrics after some work (docs/operations.md says why each lives where it does).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import yaml
from dockerfile import Stage, prodcat_env
from repo import REPO_ROOT
from test_compose import ALERTS, _default, _defaults, _scrape_job, _selectors

from prodcat.core.settings import Settings, load_settings

COMPOSE = REPO_ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _settings_of(
    runtime: Stage, environment: dict[str, Any], tmp: pytest.TempPathFactory
) -> Settings:
    env = prodcat_env(runtime.env()) | prodcat_env(_defaults(environment))
    path = tmp.mktemp("settings") / "prodcat.toml"
    path.write_text("", encoding="utf-8")
    return load_settings(path, env=env)


@pytest.fixture(scope="module")
def worker_settings(
    runtime: Stage, services: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return _settings_of(runtime, services["worker"]["environment"], tmp_path_factory)


def _samples(body: bytes) -> dict[str, list[dict[str, str]]]:
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    return samples


@pytest.fixture(scope="module")
def worker_samples() -> dict[str, list[dict[str, str]]]:
    """Sample name -> label sets, from a real /metrics body of a worker that did some work."""
    from prodcat.core.events import encode, load_schema
    from prodcat.worker.monitoring import WorkerMetrics

    metrics = WorkerMetrics()
    metrics.assigned(encode(load_schema("assignment")["examples"][0] | {"needs_review": True}))
    metrics.dead_letter("schema")
    metrics.ready.set(1)
    metrics.latency.observe(0.2)
    return _samples(metrics.render())


@pytest.fixture(scope="module")
def dashboard_samples() -> dict[str, list[dict[str, str]]]:
    """The same from the dashboard's /metrics, after it saw assignments and a decision."""
    from prodcat.core.events import load_schema, make_correction
    from prodcat.core.settings import DashboardSettings
    from prodcat.dashboard.state import Dashboard

    example = load_schema("assignment")["examples"][0]
    path = [step["label"] for step in example["category_path"]]
    dashboard = Dashboard(
        DashboardSettings(),
        {"levels": list(example["top_k"]), "taxonomy": {"paths": [path]}, "fingerprint": "f"},
    )
    dashboard.drift.train = {step["level"]: {step["label"]: 5} for step in example["category_path"]}
    for n in range(150):
        assignment = example | {"source_event_id": f"e{n}", "needs_review": n % 2 == 0}
        asyncio.run(dashboard.on_assignment(assignment))
    dashboard.on_correction(
        make_correction(example, new_labels=path, reviewer="alice", queue="needs_review")
    )
    dashboard.refresh_gauges()
    return _samples(dashboard.metrics.render())


def _check_exported(
    where: str, expr: str, exported: dict[str, list[dict[str, str]]], job_of: dict[str, str]
) -> int:
    """Every prodcat metric and label matcher in ``expr`` is exported; returns how many."""
    used = 0
    for name, matchers in _selectors(expr):
        if not name.startswith("prodcat_"):
            continue
        used += 1
        assert name in exported, f"{where}: neither the worker nor the dashboard exports {name}"
        assert name in job_of, f"{where}: {name} comes from no scraped job"
        for label, op, value in matchers:
            values = {labels.get(label) for labels in exported[name]}
            assert values - {None}, f"{where}: {name} has no label {label!r}"
            if op == "=":
                assert value in values, f"{where}: {name}{{{label}={value!r}}} never set"
    return used


@pytest.fixture(scope="module")
def exported(
    worker_samples: dict[str, list[dict[str, str]]],
    dashboard_samples: dict[str, list[dict[str, str]]],
) -> tuple[dict[str, list[dict[str, str]]], dict[str, str]]:
    """Samples of both processes, and which scrape job exports each metric (never both)."""
    assert not {n for n in worker_samples if n.startswith("prodcat_")} & set(dashboard_samples)
    job_of = {name: "prodcat-worker" for name in worker_samples} | {
        name: "prodcat-dashboard" for name in dashboard_samples
    }
    return worker_samples | dashboard_samples, job_of


def test_alerts_use_only_metrics_and_labels_prodcat_exports(
    alert_rules: list[dict[str, Any]], exported: tuple[dict[str, Any], dict[str, str]]
) -> None:
    samples, job_of = exported
    used = sum(
        _check_exported(rule["alert"], rule["expr"], samples, job_of) for rule in alert_rules
    )
    assert used >= 6


def test_drift_and_review_alerts_watch_what_the_dashboard_exports(
    alert_rules: list[dict[str, Any]], exported: tuple[dict[str, Any], dict[str, str]]
) -> None:
    _, job_of = exported
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules}
    assert "prodcat_drift_psi" in exprs["ProdcatCategoryDrift"]
    assert "prodcat_review_backlog" in exprs["ProdcatReviewBacklogHigh"]
    assert job_of["prodcat_drift_psi"] == job_of["prodcat_review_backlog"] == "prodcat-dashboard"
    # the dashboard's alerts are blind without it: its absence must alert too
    assert 'up{job="prodcat-dashboard"}' in exprs["ProdcatDashboardDown"]


GRAFANA = REPO_ROOT / "deploy" / "grafana"


@pytest.fixture(scope="module")
def dashboard_settings(
    runtime: Stage, services: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return _settings_of(runtime, services["dashboard"]["environment"], tmp_path_factory)


def test_dashboard_is_published_on_loopback_and_scraped_by_a_name_it_accepts(
    services: dict[str, dict[str, Any]], dashboard_settings: Settings
) -> None:
    dashboard = services["dashboard"]
    options = dashboard_settings.dashboard
    assert dashboard["command"][0] == "dashboard"
    assert (
        dashboard["environment"]["PRODCAT_BROKER"]
        == services["worker"]["environment"]["PRODCAT_BROKER"]
    )
    assert [p.rsplit(":", 2) for p in dashboard["ports"]] == [
        ["127.0.0.1", str(options.port), str(options.port)]
    ]
    (target,) = _scrape_job("prodcat-dashboard")["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert services[host] is dashboard and int(port) == options.port
    assert host in options.allowed_hosts and "localhost" in options.allowed_hosts
    assert str(options.port) in dashboard["healthcheck"]["test"][-1]
    mounts = [v.split(":") for v in dashboard["volumes"]]
    assert ["/models/default", "ro"] in [m[-2:] for m in mounts], "the model, read-only"


def test_dashboard_scrapes_every_worker_replica(
    services: dict[str, dict[str, Any]], dashboard_settings: Settings, worker_settings: Settings
) -> None:
    (url,) = dashboard_settings.dashboard.worker_metrics
    host_port = url.split("//")[1].split("/")[0]
    assert host_port == f"worker:{worker_settings.worker.web_port}"
    assert "deploy" in services["worker"] and url.endswith("/metrics")


def test_review_tokens_come_from_the_environment_and_default_to_read_only(
    services: dict[str, dict[str, Any]], dashboard_settings: Settings
) -> None:
    value = services["dashboard"]["environment"]["PRODCAT_DASHBOARD__REVIEW_TOKENS"]
    assert value.startswith("${") and _default(value) == ""
    assert dashboard_settings.dashboard.review_tokens == []


def test_grafana_is_provisioned_from_deploy(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    mounts = {
        (REPO_ROOT / source).resolve(): target
        for source, target, *_ in (v.split(":") for v in grafana["volumes"])
        if source.startswith(".")
    }
    provisioning = mounts[(GRAFANA / "provisioning").resolve()]
    assert provisioning == "/etc/grafana/provisioning"
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )["datasources"][0]
    prometheus_port = services["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "prodcat.yml").read_text(encoding="utf-8")
    )["providers"]
    assert mounts[(GRAFANA / "dashboards").resolve()] == provider["options"]["path"]
    assert all(p.startswith("127.0.0.1:") for p in grafana["ports"])


def test_grafana_panels_chart_what_prodcat_exports(
    exported: tuple[dict[str, Any], dict[str, str]],
) -> None:
    samples, job_of = exported
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )["datasources"][0]
    board = json.loads((GRAFANA / "dashboards" / "prodcat.json").read_text(encoding="utf-8"))
    charted = set()
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel["targets"]:
            _check_exported(panel["title"], target["expr"], samples, job_of)
            charted |= {name for name, _ in _selectors(target["expr"])}
    for wanted in (
        "prodcat_assignments_total",  # per level and label
        "prodcat_assignment_confidence_bucket",
        "prodcat_drift_psi",
        "prodcat_review_backlog",
        "prodcat_end_to_end_seconds_bucket",
    ):
        assert wanted in charted, f"no panel charts {wanted}"
