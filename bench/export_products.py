"""Write the bench's products as product-event JSONL, to carry where the data set is not.

``bench/gpu.sh prepare`` uses it: the GPU machine gets only what travels with the working
tree, so the products go as one small file (``--data`` of ``prodcat bench`` reads it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from bench.data import photo_products
from prodcat.core.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    source = load_settings().data_path() / "fashion" / "catalog.csv"
    products = photo_products(source, args.count)
    with args.out.open("wb") as handle:
        for product in products:
            handle.write(orjson.dumps(product) + b"\n")
    print(f"wrote {len(products)} products to {args.out}")


if __name__ == "__main__":
    main()
