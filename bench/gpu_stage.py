"""Stage a bundle for the GPU benchmark: a copy whose graphs are float16.

``bench/gpu.sh prepare`` runs it. A split bundle (format 2) is converted graph by graph
(``prodcat.training.graph_precision.to_fp16``: float16 weights and arithmetic, float32
inputs and outputs, lookup tables in int8), re-hashed and re-fingerprinted: it is another
model, so the evaluation of the original (``metrics.json``) does not travel with it. The
copy is loaded as the worker would load it and answers one product, or the staging fails.
A format-1 bundle is copied as it is.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from prodcat.model.bundle import ModelBundle
from prodcat.model.graphs import open_graphs


def stage(model: Path, out: Path) -> ModelBundle:
    from prodcat.training.bundle_writer import METRICS_FILE, write_manifest
    from prodcat.training.graph_precision import to_fp16

    original = ModelBundle.load(model)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model, out, ignore=shutil.ignore_patterns("*.png", "eval-*"))
    if original.split:
        manifest = dict(original.manifest)
        to_fp16(out, manifest["graphs"])
        manifest["training"] = {**manifest["training"], "fp16_from": original.fingerprint}
        manifest["metrics"] = {}
        (out / METRICS_FILE).unlink(missing_ok=True)
        write_manifest(out, manifest)
    staged = ModelBundle.load(out)
    probe = {"event_id": "stage-probe", "product_id": "p", "title": "Blue cotton shirt"}
    open_graphs(staged, "cpu", 1).probs(staged.collate([staged.featurize(probe)]))
    return staged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    staged = stage(args.model, args.out)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 2**20
    print(f"staged {args.out} ({staged.precision}, {size:.1f} MiB, {staged.fingerprint})")


if __name__ == "__main__":
    main()
