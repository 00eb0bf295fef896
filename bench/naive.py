"""The naive baseline: the consumer loop a user writes by hand, one message at a time.

Plain kafka-python, no batching, no overlap: consume one product event, featurise it, run
the ONNX model on a batch of one (every graph of a split bundle the product has a modality
for: always fusing, no cascade), build the assignment, produce it, next. The same bundle,
featurizers, session settings and assignment format as the worker, so the only difference
the benchmark sees is the worker's micro-batching and pipelining. Run as its own process
(``python -m bench.naive ...``), like the worker, against the same broker.
"""

from __future__ import annotations

import argparse

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from prodcat.core import events
from prodcat.model.bundle import ModelBundle
from prodcat.model.graphs import open_graphs


def main() -> None:
    args = _parser().parse_args()
    bundle = ModelBundle.load(args.model)
    graphs = open_graphs(bundle, args.providers, args.threads)
    consumer = KafkaConsumer(
        bootstrap_servers=args.broker,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    partitions = sorted(consumer.partitions_for_topic(args.products) or [])
    consumer.assign([TopicPartition(args.products, p) for p in partitions])
    producer = KafkaProducer(bootstrap_servers=args.broker, acks="all", linger_ms=5)
    identity = {"name": bundle.path.name, "version": "naive", "fingerprint": bundle.fingerprint}
    print(f"naive consumer ready on {len(partitions)} partitions", flush=True)
    for record in consumer:
        product = orjson.loads(record.value)
        result = bundle.decode(graphs.probs(bundle.collate([bundle.featurize(product)])))[0]
        assignment = events.make_assignment(
            product,
            category_path=[(c["level"], c["label"], c["score"]) for c in result["category_path"]],
            top_k={
                level: [(c["label"], c["score"]) for c in candidates]
                for level, candidates in result["top_k"].items()
            },
            model=identity,
            needs_review=False,
        )
        producer.send(args.categories, key=record.key, value=events.encode(assignment))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--products", required=True, help="topic to consume")
    parser.add_argument("--categories", required=True, help="topic to produce to")
    parser.add_argument("--providers", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    return parser


if __name__ == "__main__":
    main()
