"""prodcat: a plugin-based streaming product classifier.

This module is the public API for plugin authors; everything a plugin needs is importable
from here, and nothing else in prodcat is promised to stay where it is::

    import prodcat

    class StripEmojis(prodcat.Preprocessor):
        name = "text.strip_emojis"
        version = "1"

        def process(self, product: prodcat.Product) -> prodcat.Product:
            ...

    @prodcat.hookimpl
    def register_preprocessors(register: prodcat.Register) -> None:
        register(StripEmojis)

docs/plugins.md documents every hook and base class. The runtime's parts live in
sub-packages named after docs/architecture.md: ``core``, ``contract``, ``kafka``,
``sources``, ``model``, ``worker``, ``demo``, ``cli``, plus ``plugins`` (the built-ins)
and ``training``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prodcat.contract.components import (
    IMAGE_BYTES_KEY,
    IMAGE_KEY,
    MASK_INPUT,
    MODALITIES,
    Component,
    ComponentError,
    Encoder,
    Head,
    InputSpec,
    Preprocessor,
    Product,
    mask_spec,
    present,
)
from prodcat.contract.hookspecs import Register, hookimpl, hookspec


def create_component(kind: str, name: str, config: dict[str, Any] | None = None) -> Any:
    """A new instance of any installed component (``kind``: preprocessor, encoder or head).

    For components built from others, such as an ensemble of heads; raises
    ``LookupError`` naming what is available when no plugin provides ``name``.
    """
    from prodcat.contract.manager import get_plugin_manager

    return get_plugin_manager().create(kind, name, config)


try:
    __version__ = version("prodcat")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "IMAGE_BYTES_KEY",
    "IMAGE_KEY",
    "MASK_INPUT",
    "MODALITIES",
    "Component",
    "ComponentError",
    "Encoder",
    "Head",
    "InputSpec",
    "Preprocessor",
    "Product",
    "Register",
    "__version__",
    "create_component",
    "hookimpl",
    "hookspec",
    "mask_spec",
    "present",
]
