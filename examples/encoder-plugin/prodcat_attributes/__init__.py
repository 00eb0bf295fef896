"""prodcat plugin: the ``tabular.attributes`` encoder for structured product attributes."""

from __future__ import annotations

from typing import Any

from prodcat_attributes.encoder import AttributeEncoder
from stream_app.hookspecs import hookimpl

__all__ = ["AttributeEncoder", "register_encoders"]


@hookimpl
def register_encoders(register: Any) -> None:
    register(AttributeEncoder)
