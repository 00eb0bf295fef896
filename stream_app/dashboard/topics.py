"""The dashboard's Kafka side: reading the four topics, publishing decisions.

No consumer group: the dashboard commits nothing and any number of them can run. Products
and assignments are read from ``[dashboard] history`` messages before each partition's end
(the whole log on the embedded broker, which does not report log ends), corrections from
the beginning (decisions are few and the accuracy chart needs them all).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from prodcat.core import events
from prodcat.core.settings import Settings
from prodcat.dashboard.state import Dashboard
from prodcat.kafka.clients import aiokafka_options

log = logging.getLogger(__name__)
BATCH = 500


class TopicReader:
    """Feeds the dashboard from products, categories and corrections."""

    def __init__(self, settings: Settings, bootstrap: str, dashboard: Dashboard) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.dashboard = dashboard
        self.assigned = False
        topics = settings.topics
        self.order = [topics.products, topics.categories, topics.corrections]

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **aiokafka_options(self.settings, self.bootstrap),
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=self.settings.kafka.max_message_bytes,
            fetch_max_bytes=max(self.settings.kafka.max_message_bytes, 52428800),
        )
        await consumer.start()
        try:
            await self._assign(consumer)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=BATCH)
                # products first, so a batch's assignments find their product
                for tp in sorted(batches, key=lambda tp: self.order.index(tp.topic)):
                    for record in batches[tp]:
                        await self._handle(tp.topic, record.value)
        finally:
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        partitions: list[TopicPartition] = []
        for topic in self.order:
            while not (found := consumer.partitions_for_topic(topic)):
                await asyncio.sleep(0.5)  # not created yet (`prodcat topics` creates it)
                await consumer.topics()  # refreshes the metadata
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        history = [tp for tp in partitions if tp.topic != self.settings.topics.corrections]
        begin = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(history)
        per_partition = max(1, self.settings.dashboard.history // max(1, len(history) // 2))
        for tp in partitions:
            start = end[tp] - per_partition if tp in end else begin[tp]
            consumer.seek(tp, max(begin[tp], start))
        self.assigned = True

    async def _handle(self, topic: str, raw: bytes | None) -> None:
        try:
            value = events.decode_json(raw, self.settings.kafka.max_message_bytes)
        except events.EventError:
            return  # malformed: the worker dead-letters products; others are logged there
        topics = self.settings.topics
        if topic == topics.products:
            await self.dashboard.on_product(value)
        elif topic == topics.categories:
            await self.dashboard.on_assignment(value)
        else:
            self.dashboard.on_correction(value)


class CorrectionProducer:
    """Publishes corrections (key = product id) and waits for the broker's acknowledgement."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.topic = settings.topics.corrections
        self._producer = AIOKafkaProducer(
            **aiokafka_options(settings, bootstrap),
            acks="all",
            enable_idempotence=False,  # the embedded broker has no idempotent producers
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __call__(self, correction: dict[str, Any]) -> None:
        await self._producer.send_and_wait(
            self.topic,
            value=orjson.dumps(correction),
            key=str(correction["product_id"]).encode(),
            headers=[("content-type", events.CONTENT_TYPE.encode())],
        )
