"""prodcat plugin: the ``tabular.attributes`` encoder for structured product attributes."""

from __future__ import annotations

import prodcat
from prodcat_attributes.encoder import AttributeEncoder

__all__ = ["AttributeEncoder", "register_encoders"]


@prodcat.hookimpl
def register_encoders(register: prodcat.Register) -> None:
    register(AttributeEncoder)
