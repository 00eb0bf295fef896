"""The dashboard's HTTP API: the page, its data as JSON, live events, photos, decisions."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from prodcat.dashboard.review import Item
from prodcat.dashboard.scrape import WorkerScraper
from prodcat.dashboard.security import Guard
from prodcat.dashboard.state import Dashboard, ReviewError
from prodcat.dashboard.thumbnails import PhotoSource

log = logging.getLogger(__name__)
STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "charts.js": "text/javascript",
    "style.css": "text/css",
}
KEEPALIVE_S = 15.0
MAX_LIMIT = 500
MAX_COMMENT = 500


def item_json(item: Item) -> dict[str, Any]:
    """What the page shows of an item; product text goes out as data, never markup."""
    a = item.assignment
    view = item.view
    shown = {
        "event_id": item.event_id,
        "product_id": item.product_id,
        "title": view.title if view else None,
        "description": view.description if view else None,
        "photo": bool(view and view.has_photo and not view.photo_error),
        "photo_error": view.photo_error if view else None,
        "path": a["category_path"],
        "top_k": a["top_k"],
        "needs_review": a["needs_review"],
        "queue": item.queue,
        "model": a["model"],
        "classified_at": a["classified_at"],
        "latency_ms": a.get("latency_ms"),
    }
    if "decided_by" in a:  # which path of a text-first cascade decided, when the worker says
        shown["decided_by"] = a["decided_by"]
    return shown


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class Routes:
    def __init__(
        self, dashboard: Dashboard, guard: Guard, photos: PhotoSource, scraper: WorkerScraper
    ) -> None:
        self.dashboard = dashboard
        self.guard = guard
        self.photos = photos
        self.scraper = scraper
        self.ready = lambda: False  # replaced by the server: the topics are being read

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/favicon.ico", self.no_content)
        app.router.add_get("/api/session", self.session)
        app.router.add_get("/api/feed", self.feed)
        app.router.add_get("/api/queue", self.queue)
        app.router.add_get("/api/stats", self.stats)
        app.router.add_get("/api/events", self.events)
        app.router.add_post("/api/decisions", self.decide)
        app.router.add_get("/photo/{event_id}", self.photo)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.readiness)

    async def index(self, request: web.Request) -> web.Response:
        return await self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return await self._file(name)

    async def _file(self, name: str) -> web.Response:
        body = (resources.files("prodcat.dashboard") / "static" / name).read_bytes()
        return web.Response(body=body, content_type=STATIC[name], charset="utf-8")

    async def no_content(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def session(self, request: web.Request) -> web.Response:
        taxonomy = self.dashboard.taxonomy
        return _json(
            {
                "can_review": self.guard.can_review,
                "reviewer": self.guard.reviewer(request),
                "levels": taxonomy.levels,
                "paths": taxonomy.paths,
                "model": self.dashboard.model,
            }
        )

    async def feed(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = min(int(query.get("limit", 100)), MAX_LIMIT)
            max_score = float(query["max_score"]) if query.get("max_score") else None
        except ValueError:
            raise web.HTTPBadRequest(text="limit and max_score must be numbers\n") from None
        label = query.get("label") or None
        review_only = query.get("needs_review") in ("1", "true")
        found = []
        for item in reversed(self.dashboard.feed.values()):
            if review_only and not item.assignment["needs_review"]:
                continue
            if max_score is not None and item.weakest > max_score:
                continue
            if label and label not in item.labels().values():
                continue
            found.append(item_json(item))
            if len(found) >= limit:
                break
        return _json({"items": found, "total": len(self.dashboard.feed)})

    async def queue(self, request: web.Request) -> web.Response:
        queue = self.dashboard.queue
        items = [item_json(item) for item in queue.listing()]
        return _json({"items": items[:MAX_LIMIT], "backlog": queue.backlog()})

    async def stats(self, request: web.Request) -> web.Response:
        d = self.dashboard
        d.refresh_gauges()
        return _json(
            {
                "counts": d.counts,
                "memory": {
                    "feed": len(d.feed),
                    "queue": len(d.queue),
                    "pending_products": len(d.store),
                    "pending_bytes": d.store.bytes,
                    "evicted_products": d.store.evicted,
                    "overflowed_reviews": d.queue.overflowed,
                },
                "drift": d.drift.report(),
                "accuracy": d.accuracy.report(),
                "workers": self.scraper.report(),
            }
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: new assignments, queue changes and decisions, as they happen."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        inbox = self.dashboard.hub.subscribe()
        try:
            await response.write(b"retry: 2000\n\n")
            while True:
                try:
                    message = await asyncio.wait_for(inbox.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if message is None:
                    break
                kind, data = message
                if isinstance(data, str):  # an event id: send the item as it is now
                    item = self.dashboard.item(data)
                    if item is None:
                        continue
                    data = item_json(item)
                await response.write(
                    b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps(data))
                )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.dashboard.hub.unsubscribe(inbox)
        return response

    async def decide(self, request: web.Request) -> web.Response:
        if not self.guard.can_review:
            raise web.HTTPForbidden(text="read-only: no [dashboard] review_tokens are set\n")
        reviewer = self.guard.reviewer(request)
        if reviewer is None:
            raise web.HTTPUnauthorized(text="sign in with a review token\n")
        try:
            body = orjson.loads(await request.read())
            event_id, labels = str(body["event_id"]), [str(x) for x in body["labels"]]
            comment = str(body.get("comment") or "")[:MAX_COMMENT] or None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='send {"event_id": ..., "labels": [...]}\n') from None
        try:
            correction = await self.dashboard.decide(event_id, labels, reviewer, comment)
        except ReviewError as exc:
            return _json({"error": str(exc)}, status=409)
        log.info(
            "%s %s product %s (%s)",
            reviewer,
            correction["decision"],
            correction["product_id"],
            correction["queue"],
        )
        return _json(correction, status=201)

    async def photo(self, request: web.Request) -> web.Response:
        item = self.dashboard.item(request.match_info["event_id"])
        if item is None or item.view is None:
            raise web.HTTPNotFound(text="no such product in memory\n")
        thumbnail = await self.photos.thumbnail(item.view)
        if thumbnail is None:
            raise web.HTTPNotFound(text=f"{item.view.photo_error or 'no photo'}\n")
        return web.Response(body=thumbnail, content_type="image/jpeg")

    async def metrics(self, request: web.Request) -> web.Response:
        self.dashboard.refresh_gauges()
        metrics = self.dashboard.metrics
        return web.Response(body=metrics.render(), content_type=metrics.content_type)

    async def health(self, request: web.Request) -> web.Response:
        return _json({"healthy": True})

    async def readiness(self, request: web.Request) -> web.Response:
        ready = self.ready()
        return _json({"ready": ready}, status=200 if ready else 503)
