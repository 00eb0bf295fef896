"""prodcat as a user installs it: a wheel in a fresh virtual environment, no checkout in sight.

The wheel is built from the project's files, installed with its declared dependencies
(nothing else: no torch, no dev tools) into a new venv, and run from a folder outside the
checkout: ``prodcat plugins --json`` finds the built-ins, and a worker from that install
classifies real products published by that install's ``prodcat publish``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bundles import hashgram_bundle
from harness import read_topic, text_products, topic_settings, worker_env
from repo import REPO_ROOT

from prodcat.worker.child import WorkerProcess

pytestmark = pytest.mark.integration
PRODUCTS = 20


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from the checkout; returns the venv's bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    files = _run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT).stdout
    for name in files.splitlines():
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "-q", "--no-deps", "-w", str(root / "dist"), str(source)])
    [wheel] = (root / "dist").glob("prodcat-*.whl")
    _run([sys.executable, "-m", "venv", str(root / "venv")])
    bin_dir = root / "venv" / "bin"
    constraints = ["-c", str(REPO_ROOT / "constraints.txt")]
    _run([str(bin_dir / "pip"), "install", "-q", *constraints, f"{wheel}[cpu,embedded]"])
    return bin_dir


def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PRODCAT_", "PYTHON"))}
    return keep | {"PRODCAT_CONFIG": "/nonexistent/prodcat.toml"} | extra


def test_only_the_prodcat_namespace_is_installed(installed: Path) -> None:
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    for generic in ("plugins", "training", "stream_app", "schemas"):
        assert not (site / generic).exists(), f"{generic}/ installed at the top level"
    assert (site / "prodcat" / "schemas" / "product-event.schema.json").is_file()
    assert (site / "prodcat" / "schemas" / "category-correction.schema.json").is_file()
    static = site / "prodcat" / "dashboard" / "static"  # the page ships in the wheel
    assert {p.name for p in static.iterdir()} >= {"index.html", "app.js", "charts.js", "style.css"}
    probe = "import prodcat, sys; print(prodcat.__file__); print('torch' in sys.modules)"
    out = _run([str(installed / "python"), "-c", probe], cwd=installed, env=_env()).stdout
    location, torch = out.split()
    assert location.startswith(str(site)) and torch == "False"


def test_plugins_lists_the_builtins(installed: Path, tmp_path: Path) -> None:
    out = _run([str(installed / "prodcat"), "plugins", "--json"], cwd=tmp_path, env=_env())
    data = json.loads(out.stdout)
    components = {c["name"] for p in data["plugins"] for c in p["components"]}
    assert {"text.hashgram", "text.minilm", "image.efficientnet_lite0", "head.mlp"} <= components
    assert data["failed"] == [] and data["unknown"] == []


def test_worker_round_trip(
    installed: Path, tmp_path: Path, embedded_broker: str, data_dir: Path
) -> None:
    bundle = hashgram_bundle(data_dir, "rel-hashgram-a")  # trained here, served from the wheel
    settings, topics = topic_settings("wheel")
    env = _env(**worker_env(tmp_path, topics, "wheel-workers"))
    products = tmp_path / "products.jsonl"
    events = text_products(data_dir, PRODUCTS, skip=5000)
    products.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    worker = WorkerProcess(
        bundle,
        embedded_broker,
        tmp_path / "worker.log",
        env,
        program=str(installed / "prodcat"),
        cwd=tmp_path,
    ).start()
    try:
        worker.wait_ready()
        publish = [str(installed / "prodcat"), "publish", str(products), "--json"]
        _run([*publish, "--broker", embedded_broker], cwd=tmp_path, env=env)
        assignments = read_topic(settings, embedded_broker, topics["categories"], PRODUCTS, 60)
    finally:
        assert worker.stop() == 0, worker.tail()
    assert sorted(a["value"]["product_id"] for a in assignments) == sorted(
        str(e["product_id"]) for e in events
    )
