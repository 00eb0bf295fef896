"""The plugin manager: discovery, selection, failures, lookups, provenance, postprocess."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import types
from typing import Any

import pytest

from prodcat.contract.components import ComponentError, Encoder, Preprocessor
from prodcat.contract.hookspecs import hookimpl
from prodcat.contract.manager import create_plugin_manager, get_plugin_manager
from prodcat.contract.manifest import ComponentMismatchError, from_manifest, manifest_entry
from prodcat.contract.pipeline import Pipeline
from prodcat.contract.registry import DuplicateComponentError, PluginError, UnknownComponentError

BUILTINS = {"builtin_preprocessors", "builtin_text_encoders", "builtin_image_encoders"}


def _plugin(**hooks: Any) -> types.SimpleNamespace:
    """A plugin object whose attributes are the given hook implementations."""
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


class Shouty(Preprocessor):
    name = "text.normalize"  # the built-in's name: a conflict
    version = "1"

    def process(self, product: dict[str, Any]) -> dict[str, Any]:
        return {**product, "title": product["title"].upper()}


def test_builtins_and_example_come_from_entry_points(plugin_manager) -> None:
    plugins = {p["name"]: p for p in plugin_manager.plugins()}
    prodcat_version = importlib.metadata.version("prodcat")
    for name in BUILTINS & set(plugins):
        assert plugins[name]["distribution"] == "prodcat"
        assert plugins[name]["version"] == prodcat_version
    assert "builtin_preprocessors" in plugins
    assert plugins["builtin_preprocessors"]["hooks"] == ["register_preprocessors"]
    assert {c["name"] for c in plugins["builtin_preprocessors"]["components"]} == {
        "text.normalize",
        "image.decode",
    }
    example = plugins["attributes"]
    assert (example["distribution"], example["version"]) == ("prodcat-attributes", "0.1.0")
    encoder = plugin_manager.encoder("tabular.attributes")
    assert type(encoder).__module__ == "prodcat_attributes.encoder"
    assert plugin_manager.info("encoder", "tabular.attributes").provenance() == {
        "plugin": "attributes",
        "distribution": "prodcat-attributes",
        "distribution_version": "0.1.0",
    }


def test_prodcat_plugins_selects_by_entry_point_or_distribution_name() -> None:
    only_example = create_plugin_manager(env={"PRODCAT_PLUGINS": "attributes"})
    assert [p["name"] for p in only_example.plugins()] == ["attributes"]
    with pytest.raises(UnknownComponentError, match="available: none"):
        only_example.preprocessor("text.normalize")

    only_prodcat = create_plugin_manager(env={"PRODCAT_PLUGINS": " prodcat , "})
    names = {p["name"] for p in only_prodcat.plugins()}
    assert "builtin_preprocessors" in names and "attributes" not in names

    typo = create_plugin_manager(env={"PRODCAT_PLUGINS": "attributes,atributes"})
    assert [(f.name, f.error) for f in typo.failures()] == [
        ("atributes", "PRODCAT_PLUGINS names it but it is not installed")
    ]


def test_prodcat_disable_plugins_skips_them() -> None:
    manager = create_plugin_manager(
        env={"PRODCAT_DISABLE_PLUGINS": "attributes,builtin_preprocessors"}
    )
    names = {p["name"] for p in manager.plugins()}
    assert not names & {"attributes", "builtin_preprocessors"}
    with pytest.raises(UnknownComponentError):
        manager.encoder("tabular.attributes")


def test_plugin_failing_to_import_is_reported_not_fatal(broken_plugin) -> None:
    manager = create_plugin_manager(env={})
    [failure] = [f for f in manager.failures() if f.name == "broken"]
    assert failure.distribution == "prodcat-test-broken"
    assert failure.version == "2.3"
    assert failure.error == "ImportError: prodcat_broken needs libfoo, which is not installed"
    assert manager.preprocessor("text.normalize").process({"title": " a  b "})["title"] == "a b"
    assert manager.encoder("tabular.attributes").name == "tabular.attributes"
    with pytest.raises(UnknownComponentError, match="broken .ImportError: prodcat_broken needs"):
        manager.encoder("text.from_broken_plugin")


def test_unknown_component_lists_what_is_available(plugin_manager) -> None:
    available = sorted(info.name for info in plugin_manager.components("encoder"))
    with pytest.raises(UnknownComponentError) as caught:
        plugin_manager.encoder("text.nope")
    assert f"no plugin provides encoder 'text.nope'; available: {', '.join(available)}" in str(
        caught.value
    )
    with pytest.raises(ValueError, match="unknown component kind 'decoder'"):
        plugin_manager.create("decoder", "x.y")


def test_duplicate_names_error_names_both_plugins(register_plugin) -> None:
    plugin = _plugin(register_preprocessors=lambda register: register(Shouty))
    manager = register_plugin(plugin, "shouty")
    assert manager.info("preprocessor", "image.decode").plugin == "builtin_preprocessors"
    with pytest.raises(DuplicateComponentError) as caught:
        manager.preprocessor("text.normalize")
    message = str(caught.value)
    assert "plugin 'builtin_preprocessors' (prodcat " in message
    assert "plugin 'shouty' (not from an installed distribution)" in message
    assert "PRODCAT_DISABLE_PLUGINS" in message
    assert list(manager.conflicts()) == ["preprocessor:text.normalize"]


def test_invalid_registrations_are_reported_with_the_reason(register_plugin) -> None:
    class NoDots(Encoder):
        name = "attributes"

    manager = register_plugin(
        _plugin(register_encoders=lambda register: register(NoDots)), "nodots"
    )
    register_plugin(_plugin(register_heads=lambda register: register(Shouty())), "instance")
    errors = {f.name: f.error for f in manager.failures()}
    assert "a component name is dotted lower-case" in errors["nodots"]
    assert "register_heads got <" in errors["instance"]
    assert "subclass of prodcat.Head" in errors["instance"]
    assert manager.encoder("tabular.attributes").name == "tabular.attributes"


def test_unknown_hook_is_refused_by_name(plugin_manager, register_plugin) -> None:
    typo = _plugin(register_encoder=lambda register: None)
    with pytest.raises(PluginError, match="unknown hook.s. register_encoder; known: "):
        register_plugin(typo, "typo")
    assert plugin_manager.register(typo, "typo") is None
    assert "register_encoder" in plugin_manager.failures()[-1].error


def test_bad_config_key_is_refused_with_known_keys(plugin_manager) -> None:
    with pytest.raises(ValueError, match="unknown config key.s. bukets; known: buckets, "):
        plugin_manager.encoder("tabular.attributes", {"bukets": 3})


def test_registered_plugin_is_seen_by_the_default_manager(register_plugin) -> None:
    class Reverse(Preprocessor):
        name = "test.reverse"

        def process(self, product: dict[str, Any]) -> dict[str, Any]:
            return {**product, "title": product["title"][::-1]}

    register_plugin(_plugin(register_preprocessors=lambda register: register(Reverse)))
    assert get_plugin_manager().preprocessor("test.reverse").process({"title": "ab"}) == {
        "title": "ba"
    }


def test_postprocess_chains_in_registration_order(register_plugin) -> None:
    def tag(assignment: dict[str, Any], product: dict[str, Any]) -> dict[str, Any]:
        return {**assignment, "tags": [*assignment.get("tags", []), product["title"]]}

    def keep(assignment: dict[str, Any]) -> None:
        assignment["seen_by_keep"] = len(assignment["tags"])

    def review(assignment: dict[str, Any], product: dict[str, Any]) -> dict[str, Any]:
        return {**assignment, "tags": [*assignment["tags"], "review"]}

    manager = register_plugin(_plugin(postprocess_assignment=tag), "first")
    register_plugin(_plugin(postprocess_assignment=keep), "second")
    register_plugin(_plugin(postprocess_assignment=review), "third")
    result = manager.postprocess({"product_id": "1"}, {"title": "gift card"})
    assert result == {"product_id": "1", "tags": ["gift card", "review"], "seen_by_keep": 1}


def test_postprocess_result_must_be_a_dict(register_plugin) -> None:
    manager = register_plugin(_plugin(postprocess_assignment=lambda assignment: "nope"), "bad")
    with pytest.raises(TypeError, match="plugin 'bad': postprocess_assignment returned str"):
        manager.postprocess({"product_id": "1"}, {})


def test_a_raising_postprocess_plugin_is_named_in_the_error(register_plugin) -> None:
    def boom(assignment: dict[str, Any]) -> None:
        raise KeyError("price")

    manager = register_plugin(_plugin(postprocess_assignment=boom), "pricing")
    with pytest.raises(ComponentError, match="KeyError") as raised:
        manager.postprocess({"product_id": "1"}, {})
    assert raised.value.stage == "pricing"


def test_a_raising_preprocessor_is_named_in_the_error(plugin_manager) -> None:
    class Fragile(Preprocessor):
        name = "test.fragile"

        def process(self, product: dict[str, Any]) -> dict[str, Any]:
            return {**product, "title": product["title"].upper()}

    pipeline = Pipeline([Fragile()], [plugin_manager.encoder("text.hashgram", {})])
    assert pipeline.featurize({"title": "ok"})
    with pytest.raises(ComponentError, match="KeyError") as raised:
        pipeline.featurize({})
    assert raised.value.stage == "test.fragile"


def test_manifest_entry_round_trip_and_skew_detection(plugin_manager) -> None:
    encoder = plugin_manager.encoder("tabular.attributes", {"buckets": 16})
    entry = manifest_entry(plugin_manager, "encoder", encoder)
    assert entry["distribution"] == "prodcat-attributes"
    rebuilt = from_manifest(plugin_manager, "encoder", json.loads(json.dumps(entry)))
    assert rebuilt.config == encoder.config
    with pytest.raises(ComponentMismatchError, match="built with version 0"):
        from_manifest(plugin_manager, "encoder", {**entry, "version": "0"})
    with pytest.raises(ComponentMismatchError, match="fingerprint"):
        from_manifest(plugin_manager, "encoder", {**entry, "fingerprint": "0" * 16})


FINGERPRINT_SCRIPT = """
import json, sys
from prodcat.contract.manager import get_plugin_manager
config = json.loads(sys.argv[1])
print(get_plugin_manager().encoder("tabular.attributes", config).fingerprint())
"""


def test_fingerprint_is_stable_across_processes_and_key_order(plugin_manager) -> None:
    config = {"buckets": 32, "fields": ["gender", "usage"], "vocab": {"gender": ["Men"]}}
    reordered = {"vocab": {"gender": ["Men"]}, "fields": ["gender", "usage"], "buckets": 32}
    here = plugin_manager.encoder("tabular.attributes", config).fingerprint()
    for seed, cfg in (("1", config), ("2", reordered)):
        out = subprocess.run(
            [sys.executable, "-c", FINGERPRINT_SCRIPT, json.dumps(cfg)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == here
    changed = plugin_manager.encoder("tabular.attributes", {**config, "buckets": 33})
    assert changed.fingerprint() != here
    field_order = plugin_manager.encoder(
        "tabular.attributes", {**config, "fields": ["usage", "gender"]}
    )
    assert field_order.fingerprint() != here  # field order changes the input layout
