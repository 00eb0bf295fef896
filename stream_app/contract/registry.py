"""The component registry: which plugin provides which component, and what failed.

Built from the plugins' ``register_*`` hooks in one pass (:func:`collect`); a name that two
plugins register is kept with both providers, so a lookup can name them both instead of
silently picking one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from prodcat.contract.components import Component, Encoder, Head, Preprocessor

# kind -> (base class, register hook)
KINDS: dict[str, tuple[type[Component], str]] = {
    "preprocessor": (Preprocessor, "register_preprocessors"),
    "encoder": (Encoder, "register_encoders"),
    "head": (Head, "register_heads"),
}
_DOTTED_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


class PluginError(Exception):
    """Base of the plugin manager's errors."""


class UnknownComponentError(PluginError, LookupError):
    """No loaded plugin provides the component asked for."""


class DuplicateComponentError(PluginError):
    """Two plugins registered a component under the same name."""


class InvalidComponentError(PluginError, TypeError):
    """A plugin registered something that is not a proper component class."""


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or whose registration hook failed."""

    name: str
    error: str
    distribution: str | None = None
    version: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "error": self.error,
        }


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component class and where it comes from."""

    kind: str
    cls: type[Component]
    plugin: str
    distribution: str | None
    distribution_version: str | None

    @property
    def name(self) -> str:
        return self.cls.name

    def provenance(self) -> dict[str, Any]:
        """Where the component comes from, as recorded in a model manifest."""
        return {
            "plugin": self.plugin,
            "distribution": self.distribution,
            "distribution_version": self.distribution_version,
        }

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "version": self.cls.version,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "description": self.cls.description,
            **self.provenance(),
        }
        if issubclass(self.cls, Encoder):
            data["modality"] = self.cls.modality
        return data


@dataclass
class Registry:
    """Components by kind and name; a name with several providers is kept as a conflict."""

    components: dict[str, dict[str, list[ComponentInfo]]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    failures: list[PluginFailure] = field(default_factory=list)

    def all(self) -> Iterator[ComponentInfo]:
        for by_name in self.components.values():
            for infos in by_name.values():
                yield from infos


def collect(hooks: pluggy.HookRelay, dists: dict[str, tuple[str | None, str | None]]) -> Registry:
    """Call every ``register_*`` implementation and validate what it registers.

    ``dists`` maps a plugin name to its distribution and version, recorded as provenance.
    A plugin whose hook raises or registers something invalid is listed in ``failures``;
    the others are unaffected.
    """
    registry = Registry()
    for kind, (_, hook) in KINDS.items():
        for impl in in_call_order(getattr(hooks, hook).get_hookimpls()):
            distribution, version = dists.get(impl.plugin_name, (None, None))
            found: list[type] = []
            try:
                impl.function(**hook_args(impl, {"register": found.append}))
                for cls in found:
                    _validate(kind, cls)
            except Exception as exc:  # noqa: BLE001 - one bad plugin must not hide others
                error = f"{hook}: {describe_error(exc)}"
                registry.failures.append(
                    PluginFailure(impl.plugin_name, error, distribution, version)
                )
                continue
            for cls in found:
                providers = registry.components[kind].setdefault(cls.name, [])
                if all(p.cls is not cls for p in providers):
                    providers.append(
                        ComponentInfo(kind, cls, impl.plugin_name, distribution, version)
                    )
    return registry


def _validate(kind: str, cls: Any) -> None:
    base = KINDS[kind][0]
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise InvalidComponentError(
            f"register_{kind}s got {cls!r}; register a subclass of "
            f"prodcat.{base.__name__} (the class itself, not an instance)"
        )
    if not isinstance(cls.name, str) or not _DOTTED_NAME.match(cls.name):
        raise InvalidComponentError(
            f"{cls.__qualname__}.name = {cls.name!r}: a component name is dotted lower-case, "
            "like 'text.hashgram'"
        )
    if not isinstance(cls.version, str) or not cls.version:
        raise InvalidComponentError(f"{cls.__qualname__}.version must be a non-empty string")
    if not isinstance(cls.defaults, dict):
        raise InvalidComponentError(f"{cls.__qualname__}.defaults must be a dict")


def in_call_order(impls: list[Any]) -> list[Any]:
    """Plain hook implementations: tryfirst ones, then registration order, then trylast.

    pluggy itself calls implementations last-registered-first; prodcat's chained and
    register hooks follow load order instead, which is what a user reading
    ``prodcat plugins`` expects. Wrappers have no meaning here and are skipped.
    """
    plain = [i for i in impls if not (i.hookwrapper or i.wrapper)]
    return sorted(plain, key=lambda i: 0 if i.tryfirst else 2 if i.trylast else 1)


def hook_args(impl: Any, available: dict[str, Any]) -> dict[str, Any]:
    """The arguments an implementation asked for (pluggy allows declaring a subset)."""
    return {name: available[name] for name in impl.argnames}


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def dist_label(info: ComponentInfo) -> str:
    if info.distribution is None:
        return "not from an installed distribution"
    return f"{info.distribution} {info.distribution_version or ''}".strip()
