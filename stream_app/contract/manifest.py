"""Components in model manifests: what a bundle records of each, and rebuilding it exactly.

A manifest entry is the component's own description plus the plugin and distribution that
provided it; rebuilding from an entry refuses any version or config skew, so a model is
never served with features computed differently from training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prodcat.contract.components import Component
from prodcat.contract.registry import PluginError

if TYPE_CHECKING:
    from prodcat.contract.manager import PluginManager


class ComponentMismatchError(PluginError):
    """The installed component differs from the one a model manifest was built with."""


def manifest_entry(manager: PluginManager, kind: str, component: Component) -> dict[str, Any]:
    """``component.describe()`` plus the plugin and distribution that provide it."""
    return {**component.describe(), **manager.info(kind, component.name).provenance()}


def from_manifest(manager: PluginManager, kind: str, entry: Mapping[str, Any]) -> Any:
    """Rebuild a component from its manifest entry, refusing any version/config skew.

    A config key the entry lacks was added to the plugin after the model was built: it takes
    its ``added_defaults`` value, the one that reproduces the behaviour the model was built
    with (the class's default may have moved on).
    """
    cls = manager.info(kind, entry["name"]).cls
    config = {**cls.added_defaults, **(entry.get("config") or {})}
    component = manager.create(kind, entry["name"], config)
    if component.version != entry.get("version"):
        raise ComponentMismatchError(
            f"{kind} {component.name!r}: the model was built with version "
            f"{entry.get('version')}, the installed plugin provides {component.version}; "
            "install the matching plugin version or retrain"
        )
    if "fingerprint" in entry and component.fingerprint() != entry["fingerprint"]:
        raise ComponentMismatchError(
            f"{kind} {component.name!r}: fingerprint {component.fingerprint()} differs from "
            f"the model's {entry['fingerprint']} (defaults changed in this plugin version?); "
            "retrain or install the plugin the model was built with"
        )
    return component
