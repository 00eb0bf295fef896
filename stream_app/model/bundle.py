"""Model bundles: load one, check it, rebuild its featurizers. No torch here.

A bundle is a folder written by ``prodcat.training.bundle_writer``::

    model.onnx       the full model (frozen encoders included); inputs <slug>__<input>,
                     outputs probs__<level> (softmax), dynamic batch axis
    manifest.json    everything needed to serve it (keys below)
    assets/<slug>/   files a component's featurizer needs (e.g. text_minilm/tokenizer.json)
    metrics.json     evaluation of the bundle on its test split
    README.md        the model card, with plots (*.png)

manifest.json keys: ``format`` ("prodcat-bundle/1"), ``fingerprint`` (the overall
fingerprint, see :func:`bundle_fingerprint`), ``created``, ``model`` ({file, sha256,
quantized}), ``levels`` (taxonomy level names, coarse to fine), ``labels`` ({level: [class
names in output order]}), ``taxonomy`` ({paths: [[label per level], ...]}: every category
path seen in training), ``preprocessors`` / ``encoders`` (lists, in pipeline order) and
``head``: each entry is ``component.describe()`` (name, version, config, fingerprint; for
encoders also modality, output_dim, inputs) plus ``plugin``, ``distribution``,
``distribution_version`` and, for encoders, ``slug``; ``inputs`` ([{name, encoder, input,
dtype, shape}] in graph order, shape without the batch axis), ``outputs`` ([{name, level,
size}]), ``dataset`` (source, filters, split description, rare classes), ``training``
(config, best epoch, history, parity check, quantisation) and ``metrics``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.contract.components import Component, Product, fingerprint_of
from prodcat.contract.pipeline import Pipeline
from prodcat.model.decoding import TOP_K, decode_paths, path_index

FORMAT = "prodcat-bundle/1"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
ASSETS_DIR = "assets"


class BundleError(Exception):
    """The bundle cannot be served as it is; the message says what to fix."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_fingerprint(manifest: Mapping[str, Any]) -> str:
    """Hash of what decides the model's answers: components, label spaces, graph bytes."""
    return fingerprint_of(
        {
            "format": manifest["format"],
            "model_sha256": manifest["model"]["sha256"],
            "levels": manifest["levels"],
            "labels": manifest["labels"],
            "taxonomy": manifest["taxonomy"],
            "components": [
                entry["fingerprint"]
                for entry in [*manifest["preprocessors"], *manifest["encoders"], manifest["head"]]
            ],
            "inputs": manifest["inputs"],
        }
    )


def asset_dir(root: Path, kind: str, slug: str) -> Path:
    """Where a component's assets live: assets/<slug> for encoders, assets/pre_<slug>."""
    return root / ASSETS_DIR / (slug if kind == "encoder" else f"pre_{slug}")


@dataclass
class ModelBundle:
    path: Path
    manifest: dict[str, Any]
    pipeline: Pipeline
    _paths: np.ndarray | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, path: str | Path, plugin_manager: Any = None) -> ModelBundle:
        """Read and verify a bundle; raise BundleError on anything that would cause skew."""
        from prodcat.contract.manager import PluginError, get_plugin_manager

        root = Path(path)
        manifest = _read_manifest(root)
        model = root / manifest["model"]["file"]
        if not model.is_file():
            raise BundleError(f"{root}: {manifest['model']['file']} is missing")
        if file_sha256(model) != manifest["model"]["sha256"]:
            raise BundleError(f"{model}: contents differ from the manifest's sha256")
        if bundle_fingerprint(manifest) != manifest["fingerprint"]:
            raise BundleError(f"{root}/{MANIFEST_FILE}: edited after export (fingerprint)")
        pm = plugin_manager or get_plugin_manager()
        try:
            pre = [_component(pm, "preprocessor", e) for e in manifest["preprocessors"]]
            enc = [_component(pm, "encoder", e) for e in manifest["encoders"]]
            _component(pm, "head", manifest["head"])
        except (PluginError, ValueError) as exc:
            raise BundleError(f"model {root} cannot be served here: {exc}") from None
        slugs = [e["slug"] for e in manifest["encoders"]]
        for kind, components, entries in (
            ("preprocessor", pre, manifest["preprocessors"]),
            ("encoder", enc, manifest["encoders"]),
        ):
            for component, entry in zip(components, entries, strict=True):
                _load_assets(component, asset_dir(root, kind, entry["slug"]))
        pipeline = Pipeline(pre, enc, slugs)
        _check_inputs(pipeline, manifest)
        return cls(root, manifest, pipeline)

    # ---- identity ------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model"]["file"]

    @property
    def levels(self) -> list[str]:
        return list(self.manifest["levels"])

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.manifest["outputs"]]

    # ---- featurize -----------------------------------------------------------------------
    def featurize(self, product: Product) -> dict[str, np.ndarray]:
        """The graph inputs of one product; raises ComponentError for a bad product."""
        return self.pipeline.featurize(product)

    def collate(self, items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return self.pipeline.collate(items)

    # ---- decode --------------------------------------------------------------------------
    def decode(
        self, outputs: Mapping[str, np.ndarray] | Sequence[np.ndarray], top_k: int = TOP_K
    ) -> list[dict[str, Any]]:
        """Per item: the best category path *seen in training* plus the top-k per level.

        The path maximises the product of its levels' probabilities over the taxonomy's
        paths, so the answer is never an impossible combination (a "Topwear" "Jeans"),
        even when the per-level argmaxes disagree. Each path entry's ``score`` is that
        level's probability of the chosen label; ``path_score`` is their product.
        """
        probs = _per_level(outputs, self.output_names)
        return decode_paths(probs, self.levels, self._labels(), self._path_index(), top_k)

    def _labels(self) -> list[list[str]]:
        return [self.manifest["labels"][level] for level in self.levels]

    def _path_index(self) -> np.ndarray:
        if self._paths is None:
            self._paths = path_index(self.manifest["taxonomy"]["paths"], self._labels())
        return self._paths


def _per_level(
    outputs: Mapping[str, np.ndarray] | Sequence[np.ndarray], names: Sequence[str]
) -> list[np.ndarray]:
    if isinstance(outputs, Mapping):
        missing = [n for n in names if n not in outputs]
        if missing:
            raise ValueError(f"model outputs missing: {', '.join(missing)}")
        return [np.asarray(outputs[n]) for n in names]
    if len(outputs) != len(names):
        raise ValueError(f"expected {len(names)} outputs (one per level), got {len(outputs)}")
    return [np.asarray(o) for o in outputs]


def _read_manifest(root: Path) -> dict[str, Any]:
    file = root / MANIFEST_FILE
    if not file.is_file():
        raise BundleError(f"{root} is not a model bundle: no {MANIFEST_FILE} (train one first)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{file}: unreadable: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(
            f"{file}: format {manifest.get('format')!r}, this prodcat reads {FORMAT!r}"
        )
    return manifest


def _component(pm: Any, kind: str, entry: Mapping[str, Any]) -> Component:
    """Rebuild a manifest component, naming the distribution to install when it is missing."""
    from prodcat.contract.manifest import from_manifest
    from prodcat.contract.registry import UnknownComponentError

    try:
        return from_manifest(pm, kind, entry)
    except UnknownComponentError as exc:
        origin = entry.get("distribution")
        if origin:
            version = entry.get("distribution_version")
            exc.args = (f"{exc}; it came from {origin}{f'=={version}' if version else ''}",)
        raise


def _load_assets(component: Component, folder: Path) -> None:
    if not folder.is_dir():
        return
    try:
        component.load_assets(folder)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{component.name}: cannot load assets from {folder}: {exc}") from None


def _check_inputs(pipeline: Pipeline, manifest: Mapping[str, Any]) -> None:
    """The rebuilt featurizers must produce exactly the graph's inputs."""
    built = [
        {"name": name, "dtype": spec.dtype, "shape": list(spec.shape)}
        for name, _, spec in pipeline.inputs()
    ]
    recorded = [
        {"name": i["name"], "dtype": i["dtype"], "shape": list(i["shape"])}
        for i in manifest["inputs"]
    ]
    if built != recorded:
        raise BundleError(
            "the installed encoders produce inputs that differ from the model's graph inputs "
            f"(installed {built}, model {recorded}); retrain or install the model's plugins"
        )
