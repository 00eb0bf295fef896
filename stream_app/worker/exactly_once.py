"""Exactly-once on Apache Kafka: each outcome and its event's offset in one transaction.

With ``[worker] processing_guarantee = "exactly_once"`` Faust gives every products
partition the worker owns a transactional producer (id ``<group>-<topic group>-<partition>``),
commits by adding the consumed offsets to that producer's transaction and committing it,
reads with isolation ``read_committed``, and fences a crashed worker's producer (aborting
its open transaction) when the partition's next owner starts. prodcat adds what makes a
read_committed consumer of ``categories`` and ``products.dlq`` see every event's outcome
exactly once, whatever moment a worker dies at:

- an outcome joins the transaction of the partition its *event* came from (Faust's own
  send would pick the transaction of the partition its key hashes to in the output topic,
  which another worker may own), so offset and outcome commit together;
- a partition's outcomes are sent in consumption order (the dispatcher's ``per_partition``
  ordering) and each event is acked as soon as its outcome is in the transaction, so the
  offsets a commit covers (a run of acked events) are exactly the events whose outcomes
  the transaction holds;
- sending + acking and committing exclude each other (:class:`CommitGate`): an outcome sent
  between Faust computing the offsets and committing would otherwise be committed without
  its offset, and redone after a crash.

Delivery is awaited after the ack: if it fails, the transaction cannot commit, the commit
raises and the worker stops; its replacement redoes the uncommitted events. The embedded
broker has no transactions: :func:`require_transactions` refuses it in one line.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from prodcat.core.settings import Settings
from prodcat.kafka.clients import aiokafka_options
from prodcat.worker.classifier import ASSIGNED, Outcome, Source
from prodcat.worker.dispatcher import Settle
from prodcat.worker.publishing import until_it_works
from prodcat.worker.runtime import Runtime

log = logging.getLogger(__name__)

EXACTLY_ONCE = "exactly_once"
PROBE_TIMEOUT_S = 15.0
NO_TRANSACTIONS = (
    "processing_guarantee = exactly_once needs Apache Kafka's transactions, which {where}; "
    "use a Kafka broker or set [worker] processing_guarantee = at_least_once"
)


class TransactionsUnsupported(RuntimeError):
    """The broker cannot run transactions; the message says what to do."""


def require_transactions(settings: Settings, bootstrap: str, embedded: bool) -> None:
    """Refuse exactly-once where transactions cannot work: the embedded broker, or a broker
    that will not start a transactional producer (checked with a real one)."""
    if embedded:
        raise TransactionsUnsupported(NO_TRANSACTIONS.format(where="the embedded broker lacks"))
    try:
        asyncio.run(_start_transactional_producer(settings, bootstrap))
    except Exception as exc:  # noqa: BLE001 - whatever the broker answered, it is a no
        reason = f"{type(exc).__name__}: {exc}".strip(": ")
        where = f"the broker at {bootstrap} refused ({reason}; the embedded broker does)"
        raise TransactionsUnsupported(NO_TRANSACTIONS.format(where=where)) from None


async def _start_transactional_producer(settings: Settings, bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer

    transactional_id = f"{settings.worker.group_id}-probe-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(
        **aiokafka_options(settings, bootstrap), transactional_id=transactional_id
    )
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await producer.start()
            await producer.begin_transaction()
            await producer.commit_transaction()
    finally:
        await producer.stop()


class CommitGate:
    """One lock for "send an outcome and ack its event" and "compute offsets and commit"."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()

    def install(self, consumer: Any) -> None:
        """Run every commit of Faust's ``consumer`` under the gate (timer, rebalance, stop).

        Idempotent. Not before Faust's worker started: the consumer reads the processing
        guarantee when it is created, and a consumer made earlier would not be transactional.
        """
        original = consumer._commit_tps
        if getattr(original, "__wrapped__", None) is not None:
            return
        lock = self.lock

        async def gated(tps: Any, start_new_transaction: bool = True) -> bool:
            async with lock:
                return await original(tps, start_new_transaction=start_new_transaction)

        gated.__wrapped__ = original  # type: ignore[attr-defined]
        consumer._commit_tps = gated


class ExactlyOncePublisher:
    """Sends each outcome in its source partition's transaction and settles at once."""

    def __init__(self, app: Any, runtime: Runtime, settings: Settings, gate: CommitGate) -> None:
        self.app = app
        self.runtime = runtime
        self.gate = gate
        topics = settings.topics
        self.source_topic = topics.products
        self.categories = topics.categories
        self.dlq = topics.dlq

    def transactional_id(self, partition: int) -> str:
        """Faust's id for the transaction of a products partition (TransactionManager)."""
        group = self.app.assignor.group_for_topic(self.source_topic)
        return f"{self.app.conf.id}-{group}-{partition}"

    async def publish(self, outcome: Outcome, source: Source, settle: Settle) -> None:
        topic = self.categories if outcome.kind == ASSIGNED else self.dlq
        transactional_id = self.transactional_id(source.partition)

        async def send_and_settle() -> Any:
            async with self.gate.lock:
                delivery = await self.app.producer.send(
                    topic,
                    outcome.key,
                    outcome.value,
                    None,
                    None,
                    outcome.headers,
                    transactional_id=transactional_id,
                )
                await settle()
            return delivery

        delivery = await until_it_works(self.runtime, topic, send_and_settle)
        try:
            await delivery
        except Exception as exc:  # noqa: BLE001 - the transaction's commit fails on it too
            self.runtime.publishing_ok = False
            log.error(
                "outcome of %s[%d]@%d not delivered in transaction %s (%s): the commit "
                "will fail and the worker stop; its events are redone",
                source.topic,
                source.partition,
                source.offset,
                transactional_id,
                exc,
            )
