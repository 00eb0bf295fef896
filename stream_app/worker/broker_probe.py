"""Consumer-side readiness: is the broker there, and does it have our products topic?

Faust's consumer runs in its own thread and retries a lost broker silently, so the app sees
nothing while the broker is away; the producer notices only when an outcome is sent. So the
worker asks the broker itself: every ``[worker] broker_probe_s`` one metadata request from a
small aiokafka client on the worker's event loop (same address and security options as
the consumer). The broker is "up" when the request is answered and lists the products topic
(a broker that came back empty, like the embedded one after a restart, has nothing to
consume until the topics exist again). ``/ready`` turns 503 while it is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from prodcat.core.settings import Settings
from prodcat.kafka.clients import aiokafka_options

log = logging.getLogger(__name__)


class BrokerProbe:
    """Periodic metadata probe; ``up`` is the last answer (True until the first failure)."""

    def __init__(
        self, settings: Settings, bootstrap: str, on_change: Callable[[bool], None]
    ) -> None:
        self.topic = settings.topics.products
        self.interval = settings.worker.broker_probe_s
        self.timeout = max(self.interval, 1.0)
        self._options = aiokafka_options(settings, bootstrap)
        self._client: Any = None
        self._on_change = on_change
        self.up = True

    async def run(self) -> None:
        """Probe forever (cancelled at shutdown); logs each change of state once."""
        try:
            while True:
                up = await self.probe()
                if up != self.up:
                    log.warning("broker %s", "is back" if up else "is unreachable: not ready")
                    self._on_change(up)
                self.up = up
                await asyncio.sleep(self.interval)
        finally:
            await self.close()

    async def probe(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                client = await self._connected()
                metadata = await client.fetch_all_metadata()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable now"
            log.debug("broker probe failed: %s", exc)
            await self.close()  # a fresh client next time: the broker may be a new one
            return False
        return self.topic in metadata.topics()

    async def _connected(self) -> Any:
        from aiokafka.client import AIOKafkaClient

        if self._client is None:
            client = AIOKafkaClient(**self._options)
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            self._client = client
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
