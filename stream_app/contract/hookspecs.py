"""Hook specifications: what a prodcat plugin can implement.

Plugins are modules or packages exposed through the ``prodcat`` entry-point group, or
registered directly with the plugin manager. Each hook is implemented with
``@prodcat.hookimpl`` (alias of :data:`hookimpl`). The built-in plugins in ``plugins/``
use exactly these hooks. docs/plugins.md documents every hook with an example.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "prodcat"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], None]


@hookspec
def register_preprocessors(register: Register) -> None:
    """Register preprocessor classes (subclasses of ``prodcat.Preprocessor``).

    Call ``register(MyPreprocessor)`` once per class; the class's ``name`` must be unique
    across all loaded plugins. Example::

        @hookimpl
        def register_preprocessors(register):
            register(StripEmojis)
    """


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoder classes (subclasses of ``prodcat.Encoder``).

    Example::

        @hookimpl
        def register_encoders(register):
            register(AttributeEncoder)
    """


@hookspec
def register_heads(register: Register) -> None:
    """Register classifier head classes (subclasses of ``prodcat.Head``).

    Example::

        @hookimpl
        def register_heads(register):
            register(CosineHead)
    """


@hookspec
def postprocess_assignment(
    assignment: dict[str, Any], product: dict[str, Any]
) -> dict[str, Any] | None:
    """Map or veto a category assignment just before it is published.

    Called for every classified product, in plugin registration order, each hook seeing
    the result of the previous one. Return ``None`` to keep the assignment as it is, a
    (possibly modified) assignment dict to replace it, or raise
    ``prodcat.ComponentError`` to send the event to the dead-letter topic
    instead. Example::

        @hookimpl
        def postprocess_assignment(assignment, product):
            if "gift card" in product["title"].lower():
                assignment["needs_review"] = True
                return assignment
    """
