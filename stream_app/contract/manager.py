"""The plugin manager: finds plugins, collects their components, answers lookups.

Built-in plugins (``plugins/``) and third-party ones are loaded the same way, from the
``prodcat`` entry-point group, one entry point at a time: a plugin that fails to import is
recorded with its error and reported (``prodcat plugins``, lookup errors) instead of
breaking every command. Components are collected lazily, on the first lookup, from the
``register_*`` hooks, and each is remembered with the plugin and distribution that
provides it so model manifests can name their exact origin.

Environment: ``PRODCAT_PLUGINS`` (comma list of entry-point or distribution names: load
only those) and ``PRODCAT_DISABLE_PLUGINS`` (comma list of names to skip).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import pluggy

from prodcat.contract import hookspecs
from prodcat.contract.components import ComponentError, Encoder, Head, Preprocessor, Product
from prodcat.contract.registry import (
    KINDS,
    ComponentInfo,
    DuplicateComponentError,
    PluginError,
    PluginFailure,
    Registry,
    UnknownComponentError,
    collect,
    describe_error,
    dist_label,
    hook_args,
    in_call_order,
)

ENTRY_POINT_GROUP = hookspecs.PROJECT
PLUGINS_ENV = "PRODCAT_PLUGINS"
DISABLE_ENV = "PRODCAT_DISABLE_PLUGINS"


class PluginManager:
    """pluggy's manager for project ``prodcat`` plus the component registry built from it."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._dists: dict[str, tuple[str | None, str | None]] = {}
        self._load_failures: list[PluginFailure] = []
        self._registry: Registry | None = None
        self.unknown_selection: list[str] = []  # names in PRODCAT_PLUGINS nothing provides
        self._lock = threading.RLock()

    # ---- loading -------------------------------------------------------------------------
    def load_entry_points(self, env: Mapping[str, str] | None = None) -> None:
        """Load every ``prodcat`` entry point allowed by the environment, one at a time."""
        env = os.environ if env is None else env
        only = _name_set(env.get(PLUGINS_ENV))
        skip = _name_set(env.get(DISABLE_ENV)) or set()
        seen: set[str] = set()
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ep_key):
            dist, version = (ep.dist.name, ep.dist.version) if ep.dist else (None, None)
            names = {ep.name, dist} - {None}
            seen |= names
            if (only is not None and not names & only) or names & skip:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is reported, not fatal
                self._fail(PluginFailure(ep.name, describe_error(exc), dist, version))
                continue
            self.register(plugin, ep.name, distribution=dist, version=version)
        self.unknown_selection = sorted((only or set()) - seen)
        for missing in self.unknown_selection:
            self._fail(PluginFailure(missing, f"{PLUGINS_ENV} names it but it is not installed"))

    def register(
        self,
        plugin: object,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
        strict: bool = False,
    ) -> str | None:
        """Register a plugin module or object under ``name``.

        A plugin pluggy rejects (bad hook signature, duplicate name) or that implements a
        hook prodcat does not define (a typo) is recorded and None is returned, or with
        ``strict`` a :class:`PluginError` is raised.
        """
        name = name or _plugin_name(plugin)
        if distribution is None:
            distribution, version = _distribution_of(plugin)
        with self._lock:
            try:
                self.pm.register(plugin, name)
                unknown = [
                    c.name for c in self.pm.get_hookcallers(plugin) or [] if not c.has_spec()
                ]
                if unknown:
                    self.pm.unregister(name=name)
                    known = sorted(n for n, c in vars(self.pm.hook).items() if c.has_spec())
                    raise PluginError(
                        f"unknown hook(s) {', '.join(unknown)}; known: {', '.join(known)}"
                    )
            except (ValueError, pluggy.PluginValidationError, PluginError) as exc:
                if strict:
                    raise PluginError(f"plugin {name!r}: {exc}") from exc
                self._fail(PluginFailure(name, describe_error(exc), distribution, version))
                return None
            self._dists[name] = (distribution, version)
            self._registry = None
        return name

    def unregister(self, name: str) -> None:
        """Remove a plugin (used by tests' temporary plugins)."""
        with self._lock:
            self.pm.unregister(name=name)
            self._dists.pop(name, None)
            self._registry = None

    def _fail(self, failure: PluginFailure) -> None:
        self._load_failures.append(failure)

    # ---- listing -------------------------------------------------------------------------
    def plugins(self) -> list[dict[str, Any]]:
        """Loaded plugins with their distribution, hooks and components, in load order."""
        registry = self._build()
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            distribution, version = self._dists.get(name, (None, None))
            rows.append(
                {
                    "name": name,
                    "distribution": distribution,
                    "version": version,
                    "hooks": sorted(c.name for c in self.pm.get_hookcallers(plugin) or []),
                    "components": [
                        info.to_json() for info in registry.all() if info.plugin == name
                    ],
                }
            )
        return rows

    def failures(self) -> list[PluginFailure]:
        """Plugins that failed to load or to register their components."""
        return [*self._load_failures, *self._build().failures]

    def components(self, kind: str | None = None) -> list[ComponentInfo]:
        """Every registered component (of one kind), conflicts included, sorted by name."""
        infos = [i for i in self._build().all() if kind is None or i.kind == kind]
        return sorted(infos, key=lambda i: (i.kind, i.name, i.plugin))

    def conflicts(self) -> dict[str, list[ComponentInfo]]:
        """Names registered by more than one plugin, as ``kind:name`` -> providers."""
        return {
            f"{kind}:{name}": infos
            for kind, by_name in self._build().components.items()
            for name, infos in by_name.items()
            if len(infos) > 1
        }

    # ---- lookups -------------------------------------------------------------------------
    def info(self, kind: str, name: str) -> ComponentInfo:
        """The one registered component ``name`` of ``kind`` with its provenance."""
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; known: {', '.join(KINDS)}")
        registry = self._build()
        infos = registry.components[kind].get(name)
        if not infos:
            raise UnknownComponentError(self._unknown_message(kind, name))
        if len(infos) > 1:
            providers = " and ".join(f"plugin {i.plugin!r} ({dist_label(i)})" for i in infos)
            raise DuplicateComponentError(
                f"{kind} {name!r} is registered by both {providers}; uninstall one, or skip one "
                f"with {DISABLE_ENV}=<plugin name>"
            )
        return infos[0]

    def create(self, kind: str, name: str, config: dict[str, Any] | None = None) -> Any:
        """An instance of component ``name`` with ``config`` merged over its defaults."""
        return self.info(kind, name).cls(config)

    def preprocessor(self, name: str, config: dict[str, Any] | None = None) -> Preprocessor:
        return self.create("preprocessor", name, config)

    def encoder(self, name: str, config: dict[str, Any] | None = None) -> Encoder:
        return self.create("encoder", name, config)

    def head(self, name: str, config: dict[str, Any] | None = None) -> Head:
        return self.create("head", name, config)

    def postprocess(self, assignment: dict[str, Any], product: Product) -> dict[str, Any]:
        """Run ``postprocess_assignment`` implementations in order, each on the last result."""
        for impl in in_call_order(self.pm.hook.postprocess_assignment.get_hookimpls()):
            try:
                result = impl.function(
                    **hook_args(impl, {"assignment": assignment, "product": product})
                )
            except ComponentError:
                raise
            except Exception as exc:  # noqa: BLE001 - the raising plugin is the dead letter's stage
                raise ComponentError(impl.plugin_name, f"{type(exc).__name__}: {exc}") from exc
            if result is None:
                continue
            if not isinstance(result, dict):
                raise TypeError(
                    f"plugin {impl.plugin_name!r}: postprocess_assignment returned "
                    f"{type(result).__name__}, expected a dict or None"
                )
            assignment = result
        return assignment

    # ---- registry ------------------------------------------------------------------------
    def _build(self) -> Registry:
        with self._lock:
            if self._registry is None:
                self._registry = collect(self.pm.hook, self._dists)
            return self._registry

    def _unknown_message(self, kind: str, name: str) -> str:
        available = sorted(self._build().components[kind])
        message = f"no plugin provides {kind} {name!r}; available: {', '.join(available) or 'none'}"
        failures = self.failures()
        if failures:
            message += "; plugins that failed to load: " + "; ".join(
                f"{f.name} ({f.error})" for f in failures
            )
        return message


def _name_set(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _ep_key(ep: importlib.metadata.EntryPoint) -> tuple[int, str]:
    """Built-ins first, then third-party plugins by name, so load order is reproducible."""
    own = ep.dist is not None and ep.dist.name == "prodcat"
    return (0 if own else 1, ep.name)


def _plugin_name(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin):x}"


def _distribution_of(plugin: object) -> tuple[str | None, str | None]:
    """The installed distribution that ships a directly registered plugin's module."""
    module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
    dists = _packages_distributions().get(module.split(".")[0], [])
    if not dists:
        return None, None
    try:
        return dists[0], importlib.metadata.version(dists[0])
    except importlib.metadata.PackageNotFoundError:
        return dists[0], None


@functools.cache
def _packages_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def create_plugin_manager(
    *, entry_points: bool = True, env: Mapping[str, str] | None = None
) -> PluginManager:
    """A fresh manager; with ``entry_points=False`` it starts empty (tests register into it)."""
    manager = PluginManager()
    if entry_points:
        manager.load_entry_points(env)
    return manager


_default: PluginManager | None = None
_default_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, loaded from entry points on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = create_plugin_manager()
        return _default


def set_plugin_manager(manager: PluginManager | None) -> PluginManager | None:
    """Replace the process-wide manager (None: reload on next use); returns the previous one.

    Tests use it to make code that calls :func:`get_plugin_manager` see temporary plugins.
    """
    global _default
    with _default_lock:
        previous, _default = _default, manager
        return previous
