"""pytest fixtures for plugin authors, installed with prodcat as a pytest plugin.

Any test suite in an environment where prodcat is installed can use them, no conftest
needed (docs/plugins.md, "Testing a plugin"):

* ``plugin_manager``: a fresh manager with the installed plugins, also what
  ``get_plugin_manager()`` returns during the test;
* ``register_plugin(module_or_object, name=None)``: add a plugin for one test;
* ``installed_plugin(entry_point, module, source)``: a plugin "pip-installed" for one test,
  found through its entry point exactly like a real one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prodcat.contract.manager import PluginManager, create_plugin_manager, set_plugin_manager


@pytest.fixture
def plugin_manager() -> Iterator[PluginManager]:
    """A fresh manager with the installed plugins, also served by ``get_plugin_manager()``."""
    manager = create_plugin_manager()
    previous = set_plugin_manager(manager)
    yield manager
    set_plugin_manager(previous)


@pytest.fixture
def register_plugin(plugin_manager: PluginManager) -> Iterator[Callable[..., PluginManager]]:
    """``register_plugin(module_or_object, name=None)``: add a plugin for this test only.

    Returns the (fresh) manager it was added to; the plugin is unregistered afterwards.
    A plugin pluggy refuses (bad hook signature, unknown hook) fails the test at once.
    """
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> PluginManager:
        names.append(plugin_manager.register(plugin, name, strict=True))
        return plugin_manager

    yield register
    for name in names:
        plugin_manager.unregister(name)


@pytest.fixture
def installed_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """``installed_plugin(entry_point, module, source)``: a plugin "installed" for this test.

    Writes the module and a ``.dist-info`` folder declaring it in the ``prodcat``
    entry-point group, then puts the folder on ``sys.path``, which is all
    ``importlib.metadata`` needs: the manager finds it exactly like a pip-installed
    plugin. Returns the folder (pass it as PYTHONPATH to a subprocess).
    """
    modules: list[str] = []

    def install(entry_point: str, module: str, source: str, version: str = "0.1.0") -> Path:
        dist = f"prodcat-test-{entry_point}".replace("_", "-")
        (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
        info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
        )
        (info / "entry_points.txt").write_text(
            f"[prodcat]\n{entry_point} = {module}\n", encoding="utf-8"
        )
        modules.append(module)
        return tmp_path

    monkeypatch.syspath_prepend(str(tmp_path))
    yield install
    for module in modules:
        sys.modules.pop(module, None)
