"""The deployment wiring: Dockerfile, docker-compose.yml and the Prometheus files agree.

No Docker engine runs here, so the files are parsed and cross-checked against each other and
against the code they deploy (settings names, metric names, where schemas are read from):
a renamed setting, port or metric breaks a test instead of a production roll-out.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from stream_app.config import REPO_ROOT, Settings, load_settings

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS = REPO_ROOT / "deploy" / "prometheus.yml"
ALERTS = REPO_ROOT / "deploy" / "prometheus-alerts.yml"
TRAINING_ONLY = {"torch", "torchvision", "transformers", "triton", "onnx", "onnxscript"}


# --- Dockerfile ------------------------------------------------------------------------------


@dataclass
class Stage:
    """One ``FROM`` stage: its instructions in order, as (KEYWORD, argument text)."""

    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [text for key, text in self.instructions if key == keyword]

    def env(self) -> dict[str, str]:
        """``ENV a=b c=d`` pairs (the only form this Dockerfile uses)."""
        pairs: dict[str, str] = {}
        for text in self.args("ENV"):
            for token in shlex.split(text):
                name, _, value = token.partition("=")
                pairs[name] = value
        return pairs


def parse_dockerfile(text: str) -> list[Stage]:
    """Logical instructions (continuations joined, comments dropped), grouped by stage."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            stages.append(Stage(base=rest.split()[0]))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(text: str) -> list[str]:
    """The JSON array of an exec-form instruction (CMD, ENTRYPOINT, VOLUME...)."""
    value = json.loads(text)
    assert isinstance(value, list), f"not exec form: {text}"
    return value


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    """The final stage: what actually runs."""
    return stages[-1]


def pip_installs(stages: list[Stage]) -> list[list[str]]:
    """Every ``pip install`` command line in every RUN, as tokens after ``install``."""
    found = []
    for stage in stages:
        for run in stage.args("RUN"):
            for command in re.split(r"&&|;", run):
                tokens = shlex.split(command)
                if len(tokens) > 1 and tokens[0].endswith("pip") and tokens[1] == "install":
                    found.append(tokens[2:])
    return found


def test_image_installs_the_serving_extra_with_the_pins(stages: list[Stage]) -> None:
    installs = pip_installs(stages)
    assert len(installs) == 1, installs
    tokens = installs[0]
    assert tokens[tokens.index("-c") + 1] == "constraints.txt"
    (target,) = [t for t in tokens if t.startswith(".[")]
    assert set(target[2:-1].split(",")) == {"cpu"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def serving_distributions() -> frozenset[str]:
    """Core + ``cpu`` extra, followed through every installed requirement: what the image holds."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    roots = project["dependencies"] + project["optional-dependencies"]["cpu"]
    seen = {"prodcat"}
    todo = [Requirement(r) for r in roots]
    while todo:
        requirement = todo.pop()
        name = _norm(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue  # optional on this platform; its own requirements are unknowable here
        for text in requires:
            child = Requirement(text)
            if child.marker is None or child.marker.evaluate({"extra": _extras(requirement)}):
                todo.append(child)
    return frozenset(seen)


def test_serving_dependency_closure_has_no_torch() -> None:
    serving = serving_distributions()
    assert not serving & TRAINING_ONLY, f"serving dependencies pull in {serving & TRAINING_ONLY}"
    assert {"faust-streaming", "onnxruntime", "tokenizers"} <= serving


BLOCK_NON_SERVING = """
import importlib.abc, importlib.metadata, json, re, sys
allowed = set(json.loads(sys.argv[1]))
owners = importlib.metadata.packages_distributions()

class NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        dists = owners.get(name.partition(".")[0], [])
        if dists and not any(re.sub(r"[-_.]+", "-", d).lower() in allowed for d in dists):
            raise ModuleNotFoundError(f"{name} is not installed in the serving image")
        return None

sys.meta_path.insert(0, NotInImage())
"""

SERVING_IMPORTS = """
import importlib, importlib.util
from stream_app.cli import COMMANDS
from stream_app.plugin_manager import create_plugin_manager

for module in ("stream_app.app", "stream_app.worker", "stream_app.bundle"):
    importlib.import_module(module)
commands = []
for name, (module, _) in COMMANDS.items():
    if name not in ("train", "evaluate", "bench") and importlib.util.find_spec(module):
        importlib.import_module(module)
        commands.append(name)
manager = create_plugin_manager()
print(json.dumps({
    "commands": commands,
    "components": [info.name for info in manager.components()],
    "failures": [str(f) for f in manager.failures() if f.distribution == "prodcat"],
}))
"""


def test_serving_code_runs_with_only_the_image_packages() -> None:
    """Import the worker, the serving commands and every built-in plugin in a Python that can
    see only the image's distributions: a stray torch import would break the container.
    (Third-party plugins installed here, like the example, are not in the image.)"""
    allowed = json.dumps(sorted(serving_distributions()))
    script = BLOCK_NON_SERVING + SERVING_IMPORTS
    done = subprocess.run(
        [sys.executable, "-c", script, allowed],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failures"] == []
    assert {"topics", "tail", "publish"} <= set(report["commands"])
    assert any(name.startswith("text.") for name in report["components"])
    assert any(name.startswith("image.") for name in report["components"])


def _extras(requirement: Requirement) -> str:
    """Markers take one extra at a time; the only extras asked for here are single ones."""
    assert len(requirement.extras) <= 1, requirement
    return next(iter(requirement.extras), "")


def test_runtime_runs_as_a_non_root_user(runtime: Stage) -> None:
    users = runtime.args("USER")
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    created = " ".join(runtime.args("RUN"))
    assert re.search(rf"useradd\b.*--uid {user}\b", created), "USER is not created in the image"
    keywords = [key for key, _ in runtime.instructions]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")


def test_state_lives_in_the_runtime_users_home(runtime: Stage) -> None:
    """The only writable place for the non-root user is its home, the working directory."""
    home = re.search(r"useradd\b.*--home-dir (\S+)", " ".join(runtime.args("RUN"))).group(1)
    assert runtime.args("WORKDIR")[-1] == home
    assert Path(home) in Path(runtime.env()["PRODCAT_CACHE_DIR"]).parents


def test_model_is_a_volume_and_the_default_command_serves_it(runtime: Stage) -> None:
    (volume,) = runtime.args("VOLUME")
    model_dir = "/models/default"
    assert model_dir in exec_form(volume)
    assert exec_form(runtime.args("ENTRYPOINT")[-1]) == ["prodcat"]
    cmd = exec_form(runtime.args("CMD")[-1])
    assert cmd[0] == "worker" and cmd[cmd.index("--model") + 1] == model_dir
    assert runtime.env()["PRODCAT_MODEL_DIR"] == model_dir


def test_web_server_listens_on_all_interfaces_only_inside_the_container(runtime: Stage) -> None:
    env = runtime.env()
    assert env["PRODCAT_WORKER__WEB_HOST"] == "0.0.0.0"
    assert Settings().worker.web_host == "127.0.0.1", "the app's own default must stay local"
    assert [int(port) for port in runtime.args("EXPOSE")] == [int(env["PRODCAT_WORKER__WEB_PORT"])]


def test_healthcheck_asks_the_worker_health_endpoint_on_its_port(runtime: Stage) -> None:
    (check,) = runtime.args("HEALTHCHECK")
    command = exec_form(check[check.index("CMD") + len("CMD") :].strip())
    script = command[-1]
    assert "/health" in script
    assert "PRODCAT_WORKER__WEB_PORT" in script, "the check must follow the configured port"


def test_every_prodcat_variable_in_the_image_is_a_real_setting(
    runtime: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray prodcat.toml
    settings = load_settings(env=_prodcat_env(runtime.env()))
    assert settings.model_dir == "/models/default"
    assert settings.worker.web_port == int(runtime.env()["PRODCAT_WORKER__WEB_PORT"])


def _prodcat_env(env: dict[str, str]) -> dict[str, str]:
    return {k: str(v) for k, v in env.items() if k.startswith("PRODCAT_")}


def test_copied_sources_exist_and_are_not_docker_ignored(stages: list[Stage]) -> None:
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".venv", "models", ".git"} <= set(ignored)
    for stage in stages:
        for copy in stage.args("COPY"):
            if copy.startswith("--from="):
                continue
            for source in shlex.split(copy)[:-1]:
                path = source.rstrip("/")
                assert (REPO_ROOT / path).exists(), f"COPY {source}: not in the repository"
                assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), (
                    f"COPY {source} is excluded by .dockerignore"
                )


def test_runtime_files_sit_where_the_installed_code_looks_for_them(stages: list[Stage]) -> None:
    """The schemas are read relative to the repository root, so the image must install the
    project editable from the directory it copies them into."""
    from stream_app.events import schema_dir

    relative = schema_dir().relative_to(REPO_ROOT).as_posix()
    (build,) = [stage for stage in stages if stage.args("WORKDIR") and pip_installs([stage])]
    app_dir = build.args("WORKDIR")[0]
    copied = [shlex.split(c)[-1].rstrip("/") for c in build.args("COPY")]
    assert relative in copied, f"{relative}/ is not copied next to the packages"
    (tokens,) = pip_installs([build])
    assert tokens[tokens.index("-e") + 1].startswith("."), "not an editable install of the app"
    assert app_dir.startswith("/")


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
    env = _prodcat_env(runtime.env()) | _prodcat_env(_defaults(services["worker"]["environment"]))
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


@pytest.fixture(scope="module")
def worker_samples() -> dict[str, list[dict[str, str]]]:
    """Sample name -> label sets, from a real /metrics body of a worker that did some work."""
    from prometheus_client.parser import text_string_to_metric_families

    from stream_app.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    metrics.assigned()
    metrics.dead_letter("schema")
    metrics.ready.set(1)
    metrics.latency.observe(0.2)
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample.labels)
    return samples


def _selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    return [(name, MATCHER.findall(labels or "")) for name, labels in SELECTOR.findall(expr)]


def test_alerts_use_only_metrics_and_labels_the_worker_exports(
    alert_rules: list[dict[str, Any]], worker_samples: dict[str, list[dict[str, str]]]
) -> None:
    used = 0
    for rule in alert_rules:
        for name, matchers in _selectors(rule["expr"]):
            if not name.startswith("prodcat_"):
                continue
            used += 1
            assert name in worker_samples, f"{rule['alert']}: the worker exports no {name}"
            for label, op, value in matchers:
                values = {labels.get(label) for labels in worker_samples[name]}
                assert values - {None}, f"{rule['alert']}: {name} has no label {label!r}"
                if op == "=":
                    assert value in values, (
                        f"{rule['alert']}: {name}{{{label}={value!r}}} never set"
                    )
    assert used >= 3


def test_alerts_cover_lag_dead_letters_latency_and_readiness(
    alert_rules: list[dict[str, Any]],
) -> None:
    from stream_app.metrics import DEAD_LETTER

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
