"""``prodcat plugins`` as a user runs it, and the torch-free featurize path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PRODCAT = [sys.executable, "-m", "prodcat.cli.main"]


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PRODCAT, *args],
        env={**os.environ, "COLUMNS": "160", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _json(*args: str, **env: str) -> dict[str, Any]:
    out = _run("plugins", "--json", *args, **env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_json_lists_builtins_and_the_example_encoder() -> None:
    data = _json()
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["builtin_preprocessors"]["distribution"] == "prodcat"
    builtin = {
        c["name"]
        for p in data["plugins"]
        if p["distribution"] == "prodcat"
        for c in p["components"]
    }
    assert {"text.normalize", "image.decode"} <= builtin
    [encoder] = plugins["attributes"]["components"]
    assert encoder == {
        "kind": "encoder",
        "name": "tabular.attributes",
        "version": "1",
        "class": "prodcat_attributes.encoder.AttributeEncoder",
        "description": "Structured product attributes as hashed or vocabulary ids per field",
        "plugin": "attributes",
        "distribution": "prodcat-attributes",
        "distribution_version": "0.1.0",
        "modality": "tabular",
    }
    assert plugins["attributes"]["hooks"] == ["register_encoders"]
    assert data["conflicts"] == {}


def test_disabled_and_broken_plugins(broken_plugin: Path) -> None:
    data = _json(PYTHONPATH=str(broken_plugin), PRODCAT_DISABLE_PLUGINS="attributes")
    assert "attributes" not in {p["name"] for p in data["plugins"]}
    assert {
        "name": "broken",
        "distribution": "prodcat-test-broken",
        "version": "2.3",
        "error": "ImportError: prodcat_broken needs libfoo, which is not installed",
    } in data["failed"]


def test_table_shows_components_and_failures(broken_plugin: Path) -> None:
    out = _run("plugins", PYTHONPATH=str(broken_plugin))
    assert out.returncode == 0, out.stderr
    assert "prodcat-attributes 0.1.0" in out.stdout
    assert "tabular.attributes  v1" in out.stdout
    assert "failed broken: ImportError: prodcat_broken needs libfoo" in out.stdout


def test_component_names_are_never_cut_on_a_narrow_terminal() -> None:
    out = _run("plugins", COLUMNS="80")
    assert out.returncode == 0, out.stderr
    for name in ("image.efficientnet_lite0", "tabular.attributes", "image.torchvision"):
        assert f" {name}  v1" in out.stdout  # whole, as users copy it into --encoder


def test_selecting_a_plugin_that_is_not_installed_fails_naming_it() -> None:
    for args in (("plugins",), ("plugins", "--json")):
        out = _run(*args, PRODCAT_PLUGINS="nope")
        assert out.returncode == 1
        assert "PRODCAT_PLUGINS names nope" in out.stderr
        assert "Traceback" not in out.stderr


FEATURIZE_SCRIPT = """
import json, sys
from prodcat.core.settings import load_settings
from prodcat.contract.manager import get_plugin_manager
from prodcat.sources import read_source

manager = get_plugin_manager()
catalog = load_settings().data_path() / "fashion" / "catalog.csv"
product = next(r.event for r in read_source(catalog, limit=20) if r.event and "image" in r.event)
for name in ("text.normalize", "image.decode"):
    product = manager.preprocessor(name).process(product)
shapes, masks = {}, {}
for info in manager.components("encoder"):
    features = info.cls().featurize(product)
    shapes[info.name] = {key: list(value.shape) for key, value in features.items()}
    masks[info.name] = float(features["mask"])
torch = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
print(json.dumps({"shapes": shapes, "masks": masks, "torch": torch}))
"""


def test_featurizing_through_the_manager_imports_no_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FEATURIZE_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] == []
    assert set(result["masks"].values()) == {1.0}  # every modality present in a photo row
    assert result["shapes"]["tabular.attributes"] == {"attribute_ids": [4], "mask": []}
