"""Shared pytest fixtures for prodcat's test suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from stream_app.plugin_manager import PluginManager, create_plugin_manager, set_plugin_manager


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
