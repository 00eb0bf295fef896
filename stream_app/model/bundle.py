"""Model bundles: load one, check it, rebuild its featurizers. No torch here.

A bundle is a folder written by ``prodcat.training.bundle_writer``, in one of two formats.
Format 2 (``prodcat-bundle/2``, what training writes) has one graph per encoder plus a head
graph, so the worker runs an encoder only for products that have its modality and can stop
after the cheap ones (``prodcat.model.cascade``)::

    encoders/<slug>.onnx  one encoder: inputs <slug>__<input> (its mask excluded), output
                          <slug>__embedding (batch, output_dim); the encoder's own module,
                          frozen or fine-tuned, as trained
    head.onnx             the fusion and the head: inputs <slug>__embedding and <slug>__mask
                          for every encoder, outputs probs__<level> (softmax)
    manifest.json, assets/<slug>/, metrics.json, README.md (the model card), plots

Format 1 (``prodcat-bundle/1``) has one ``model.onnx`` from every featurizer input
(``<slug>__<input>``, masks included) to ``probs__<level>``; it is still loaded and served,
always by the full path. Every graph has a dynamic batch axis.

manifest.json keys: ``format``, ``fingerprint`` (the overall fingerprint, see
:func:`bundle_fingerprint`), ``created``, ``levels`` (taxonomy level names, coarse to fine),
``labels`` ({level: [class names in output order]}), ``taxonomy`` ({paths: [[label per
level], ...]}: every category path seen in training), ``preprocessors`` / ``encoders``
(lists, in pipeline order) and ``head``: each entry is ``component.describe()`` (name,
version, config, fingerprint; for encoders also modality, output_dim, inputs) plus
``plugin``, ``distribution``, ``distribution_version`` and, for encoders, ``slug``;
``inputs`` ([{name, encoder, input, dtype, shape}]: what the featurizers produce, shape
without the batch axis), ``outputs`` ([{name, level, size}]), ``dataset`` (source, filters,
split description, rare classes), ``training`` (config, best epoch, history, parity checks,
quantisation) and ``metrics``. Format 1 adds ``model`` ({file, sha256, quantized}). Format 2
adds ``graphs`` ({encoders: {slug: {file, sha256, precision, inputs, output, dim}}, head:
{file, sha256, precision, inputs}}) and ``cascade`` (null, or the calibrated text-first
cascade: first-stage encoders, a score threshold per level, the tolerance it was calibrated
for and its validation figures; see ``prodcat.model.cascade``).
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

FORMAT_1 = "prodcat-bundle/1"
FORMAT = "prodcat-bundle/2"
FORMATS = (FORMAT_1, FORMAT)
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"  # format 1
HEAD_FILE = "head.onnx"  # format 2
ENCODERS_DIR = "encoders"  # format 2
ASSETS_DIR = "assets"
EMBEDDING = "embedding"
# needs_review below this score, for bundles trained before the threshold was fitted
DEFAULT_REVIEW_THRESHOLD = 0.5


class BundleError(Exception):
    """The bundle cannot be served as it is; the message says what to fix."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_fingerprint(manifest: Mapping[str, Any]) -> str:
    """Hash of what decides the model's answers: components, label spaces, graph bytes,
    (format 2) the cascade's thresholds, and the fitted ``needs_review`` threshold."""
    identity: dict[str, Any] = {
        "format": manifest["format"],
        "levels": manifest["levels"],
        "labels": manifest["labels"],
        "taxonomy": manifest["taxonomy"],
        "components": [
            entry["fingerprint"]
            for entry in [*manifest["preprocessors"], *manifest["encoders"], manifest["head"]]
        ],
        "inputs": manifest["inputs"],
    }
    if manifest["format"] == FORMAT_1:
        identity["model_sha256"] = manifest["model"]["sha256"]
    else:
        identity["graphs"] = {name: g["sha256"] for name, g in graph_entries(manifest).items()}
        identity["cascade"] = manifest.get("cascade") and {
            key: manifest["cascade"][key] for key in ("first", "thresholds")
        }
    if manifest.get("review"):  # added later: bundles without one keep their fingerprint
        identity["review_threshold"] = manifest["review"]["threshold"]
    return fingerprint_of(identity)


def graph_entries(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every graph of a bundle by name: encoder slugs and ``head`` (format 2), ``model`` (1)."""
    if manifest["format"] == FORMAT_1:
        return {"model": manifest["model"]}
    graphs = manifest["graphs"]
    return {**graphs["encoders"], "head": graphs["head"]}


def embedding_name(slug: str) -> str:
    """The head graph's input (and the encoder graph's output) carrying ``slug``'s vector."""
    return f"{slug}__{EMBEDDING}"


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
        for entry in graph_entries(manifest).values():
            graph = root / entry["file"]
            if not graph.is_file():
                raise BundleError(f"{root}: {entry['file']} is missing")
            if file_sha256(graph) != entry["sha256"]:
                raise BundleError(f"{graph}: contents differ from the manifest's sha256")
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
    def split(self) -> bool:
        """True for format 2: a graph per encoder plus a head graph."""
        return self.manifest["format"] != FORMAT_1

    def graph_path(self, name: str) -> Path:
        """The ONNX file of graph ``name`` (an encoder slug or ``head``; ``model`` in format 1)."""
        return self.path / graph_entries(self.manifest)[name]["file"]

    @property
    def precision(self) -> str:
        """fp32, int8, fp16 or mixed (e.g. an int8 image encoder beside a float32 head)."""
        if not self.split:
            return "int8" if self.manifest["model"].get("quantized") else "fp32"
        found = {g.get("precision", "fp32") for g in graph_entries(self.manifest).values()}
        return found.pop() if len(found) == 1 else "mixed"

    @property
    def levels(self) -> list[str]:
        return list(self.manifest["levels"])

    @property
    def review_threshold(self) -> float:
        """The score under which an answer needs review: fitted on the validation split
        (``prodcat.training.review``), else :data:`DEFAULT_REVIEW_THRESHOLD`."""
        review = self.manifest.get("review") or {}
        return float(review.get("threshold", DEFAULT_REVIEW_THRESHOLD))

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
    if manifest.get("format") not in FORMATS:
        raise BundleError(
            f"{file}: format {manifest.get('format')!r}, this prodcat reads "
            f"{' and '.join(repr(f) for f in FORMATS)}"
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
    except ValueError as exc:  # the component refuses to be built here (a missing package)
        raise BundleError(f"{kind} {entry['name']!r}: {exc}") from None


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
