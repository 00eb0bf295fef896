"""Write the bench's products as product-event JSONL, to carry where the data set is not.

``bench/gpu.sh prepare`` uses it: the GPU machine gets only what travels with the working
tree, so the products go as one small file (``--data`` of ``prodcat bench`` reads it). With
``--model``, they are that bundle's test-split rows with a photo (bench.data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from bench.data import photo_products
from prodcat.core.settings import load_settings
from prodcat.model.bundle import ModelBundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, help="take the products from its test split")
    args = parser.parse_args()
    source = load_settings().data_path() / "fashion" / "catalog.csv"
    bundle = ModelBundle.load(args.model) if args.model else None
    products = photo_products(source, args.count, bundle)
    with args.out.open("wb") as handle:
        for product in products:
            handle.write(orjson.dumps(product) + b"\n")
    print(f"wrote {len(products)} products to {args.out}")


if __name__ == "__main__":
    main()
