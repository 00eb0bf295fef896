"""Run the dashboard: the topic reader, the corrections producer, the scraper, the web app.

One asyncio loop holds everything. SIGTERM/SIGINT stop it cleanly: open pages' streams end,
the producer flushes, the consumer closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from prodcat.core.settings import Settings
from prodcat.dashboard.drift import training_distribution
from prodcat.dashboard.routes import Routes
from prodcat.dashboard.scrape import WorkerScraper
from prodcat.dashboard.security import Guard, add_headers, parse_tokens
from prodcat.dashboard.state import Dashboard
from prodcat.dashboard.thumbnails import PhotoSource
from prodcat.dashboard.topics import CorrectionProducer, TopicReader
from prodcat.worker.image_fetch import ImageFetcher

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 64 * 1024  # decisions are small JSON documents


def build_app(
    settings: Settings, dashboard: Dashboard, photos: PhotoSource, scraper: WorkerScraper
) -> tuple[web.Application, Routes]:
    """The aiohttp application with the security middleware and every route."""
    guard = Guard(
        settings.dashboard.host,
        settings.dashboard.allowed_hosts,
        parse_tokens(settings.dashboard.review_tokens),
    )
    app = web.Application(middlewares=[guard.middleware], client_max_size=MAX_REQUEST_BYTES)
    app.on_response_prepare.append(add_headers)
    routes = Routes(dashboard, guard, photos, scraper)
    routes.add_to(app)

    async def end_streams(_app: web.Application) -> None:
        for inbox in list(dashboard.hub.subscribers):
            inbox.put_nowait(None)

    app.on_shutdown.append(end_streams)
    return app, routes


async def serve(settings: Settings, bootstrap: str, manifest: Mapping[str, Any]) -> None:
    """Run until SIGTERM or SIGINT; the address is logged once the server listens."""
    options = settings.dashboard
    dashboard = Dashboard(options, manifest)
    scraper = WorkerScraper(options.worker_metrics, options.scrape_interval_s)
    reader = TopicReader(settings, bootstrap, dashboard)
    producer = CorrectionProducer(settings, bootstrap)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ImageFetcher(settings.images) as fetcher:
        app, routes = build_app(settings, dashboard, PhotoSource(fetcher), scraper)
        routes.ready = lambda: reader.assigned
        await producer.start()
        dashboard.publish = producer
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        tasks: list[asyncio.Task[Any]] = []
        try:
            await web.TCPSite(runner, options.host, options.port).start()
            log.info("dashboard on http://%s:%d/", options.host, options.port)
            tasks = [
                asyncio.create_task(reader.run(), name="topics"),
                asyncio.create_task(scraper.run(), name="scraper"),
                asyncio.create_task(_load_training(dashboard, manifest), name="training"),
            ]
            done = asyncio.create_task(stop.wait())
            finished, _ = await asyncio.wait([done, *tasks[:2]], return_when="FIRST_COMPLETED")
            for task in finished - {done}:
                task.result()  # a reader or scraper that died: raise its error
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runner.cleanup()
            await producer.stop()


async def _load_training(dashboard: Dashboard, manifest: Mapping[str, Any]) -> None:
    """The drift baseline; may read the data file for older bundles, so off the loop."""
    dashboard.drift.train = await asyncio.to_thread(training_distribution, manifest)
    if dashboard.drift.train is None:
        log.warning("the model's training distribution is unknown: no drift scores")
