"""The dashboard's parts without a browser: drift, the review queue, bounded memory, photos,
the worker scraper and the HTTP layer's safety (served in-process by aiohttp's test server).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import math
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from harness import PhotoServer
from PIL import Image

from prodcat.cli.main import cli
from prodcat.core.events import load_schema, make_correction, now_rfc3339
from prodcat.core.settings import DashboardSettings, Settings
from prodcat.dashboard.drift import MIN_SAMPLE, DriftWindow, psi
from prodcat.dashboard.review import Item, ReviewQueue, audited
from prodcat.dashboard.routes import item_json
from prodcat.dashboard.scrape import WorkerScraper, delta, parse, quantile
from prodcat.dashboard.server import build_app
from prodcat.dashboard.state import Dashboard
from prodcat.dashboard.store import ProductStore, product_view
from prodcat.dashboard.thumbnails import SIZE, PhotoSource, ThumbnailError, make_thumbnail
from prodcat.worker.image_fetch import ImageFetcher
from prodcat.worker.monitoring import WorkerMetrics

EXAMPLE = load_schema("assignment")["examples"][0]
PRODUCT = load_schema("product")["examples"][0]
LEVELS = [step["level"] for step in EXAMPLE["category_path"]]
PATHS = [
    ["Apparel", "Topwear", "Shirts"],
    ["Apparel", "Topwear", "Tshirts"],
    ["Footwear", "Shoes", "Heels"],
]
MANIFEST = {"levels": LEVELS, "taxonomy": {"paths": PATHS}, "fingerprint": "f00d"}


def assignment(n: int, labels: list[str] | None = None, score: float = 0.9, **extra: Any) -> dict:
    value = copy.deepcopy(EXAMPLE) | {"source_event_id": f"e{n}", "product_id": f"p{n}"}
    for step, label in zip(value["category_path"], labels or PATHS[0], strict=True):
        step["label"], step["score"] = label, score
    value["needs_review"] = score < 0.5
    value["classified_at"] = now_rfc3339()
    return value | extra


# --- drift -----------------------------------------------------------------------------------


def test_psi_is_zero_for_the_same_mix_and_grows_with_the_shift() -> None:
    train = {"a": 50, "b": 30, "c": 20}
    assert psi({"a": 5, "b": 3, "c": 2}, train) == pytest.approx(0.0)
    shifted = {"a": 20, "b": 30, "c": 50}
    expected = sum(
        (now - was) * math.log(now / was) for now, was in ((0.2, 0.5), (0.3, 0.3), (0.5, 0.2))
    )
    assert psi(shifted, train) == pytest.approx(expected)
    assert psi({"new": 10}, train) > 5  # a label never seen in training: a big shift


def test_drift_window_keeps_only_the_last_assignments() -> None:
    window = DriftWindow(LEVELS, size=MIN_SAMPLE)
    window.train = {level: {label: 1} for level, label in zip(LEVELS, PATHS[0], strict=True)}
    for n in range(MIN_SAMPLE - 1):
        window.add(assignment(n, PATHS[2]))
    assert set(window.scores().values()) == {None}  # too few for a score
    for n in range(MIN_SAMPLE):
        window.add(assignment(n, PATHS[0]))
    assert len(window) == MIN_SAMPLE
    assert window.scores() == {level: pytest.approx(0.0) for level in LEVELS}
    report = window.report()
    assert report["confidence"][LEVELS[0]][9] == MIN_SAMPLE  # every score was 0.9


# --- review queue ----------------------------------------------------------------------------


def test_unsure_products_come_first_then_a_deterministic_audit_sample() -> None:
    queue = ReviewQueue(size=100, audit_rate=0.5)
    for n, score in enumerate([0.4, 0.1, 0.3]):
        queue.offer(Item(assignment(n, score=score), None))
    confident = [Item(assignment(10 + n), None) for n in range(20)]
    audits = [item for item in confident if queue.offer(item)]
    assert [i.weakest for i in queue.listing()][:3] == [0.1, 0.3, 0.4]
    assert [i.queue for i in queue.listing()][3:] == ["audit"] * len(audits)
    assert all(audited(item.event_id, 0.5) for item in audits)
    drawn = sum(audited(str(uuid.uuid4()), 0.02) for _ in range(20_000))
    assert 300 < drawn < 500  # about 2 %


def test_a_decision_takes_the_product_out_and_keeps_it_out() -> None:
    queue = ReviewQueue(size=2, audit_rate=0.0)
    first = assignment(1, score=0.2)
    queue.offer(Item(first, None))
    correction = make_correction(first, new_labels=PATHS[1], reviewer="a", queue="needs_review")
    assert queue.resolve(correction) is not None and len(queue) == 0
    assert queue.offer(Item(first, None)) is None  # read again (history): already decided
    for n in range(2, 6):
        queue.offer(Item(assignment(n, score=0.2), None))
    assert len(queue) == 2 and queue.overflowed == 2


# --- bounded memory --------------------------------------------------------------------------


def test_product_store_is_bounded_by_count_and_bytes() -> None:
    store = ProductStore(max_items=10, max_bytes=50_000)
    for n in range(30):
        store.add(product_view(PRODUCT | {"event_id": f"e{n}"}, 1 << 20))
    assert len(store) == 10 and store.evicted == 20
    big = base64.b64encode(b"x" * 20_000).decode()
    for n in range(5):
        event = PRODUCT | {"event_id": f"b{n}", "image": {"data": big, "media_type": "image/jpeg"}}
        store.add(product_view(event, 1 << 20))
    assert store.bytes <= 50_000 and store.take("b4") is not None and store.take("e0") is None


def test_feed_and_pending_products_stay_within_their_settings() -> None:
    settings = DashboardSettings(feed_size=50, pending_products=20, queue_size=10)
    dashboard = Dashboard(settings, MANIFEST)

    async def run() -> None:
        for n in range(200):
            await dashboard.on_product(PRODUCT | {"event_id": f"x{n}"})
            await dashboard.on_assignment(assignment(n, score=0.2))

    asyncio.run(run())
    assert len(dashboard.feed) == 50 and len(dashboard.store) == 20 and len(dashboard.queue) == 10
    assert dashboard.queue.overflowed == 190


# --- photos ----------------------------------------------------------------------------------


def test_thumbnails_are_small_jpegs_and_garbage_is_refused(data_dir: Path) -> None:
    photo = next((data_dir / "fashion" / "images").glob("*.jpg")).read_bytes()
    with Image.open(io.BytesIO(make_thumbnail(photo))) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= SIZE
    with pytest.raises(ThumbnailError):
        make_thumbnail(b"<svg onload=alert(1)>")


# --- worker metrics --------------------------------------------------------------------------


def test_scraper_reads_a_real_worker_registry() -> None:
    metrics = WorkerMetrics()
    before = parse(metrics.render().decode())
    for _ in range(4):
        metrics.assigned(orjson.dumps(EXAMPLE))
        metrics.latency.observe(0.2)
    metrics.dead_letter("schema")
    after = parse(metrics.render().decode())
    changed = delta(after.events, before.events)
    assert changed[("assigned", "")] == 4 and changed[("dead_letter", "schema")] == 1
    assert 0.1 < quantile(0.5, delta(after.latency, before.latency)) <= 0.25
    assert delta({"k": 1.0}, {"k": 7.0}) == {"k": 1.0}  # a restarted worker's reset counter


# --- the HTTP layer --------------------------------------------------------------------------

Call = Callable[[TestClient], Awaitable[None]]


def serve(
    call: Call, tokens: list[str], allow_hosts: list[str] | None = None, image: dict | None = None
) -> list[dict]:
    """Run ``call`` against the dashboard app in-process, after one product (``image``
    replaces its photo) and its assignment (event id e1); returns what it published."""
    settings = Settings()
    settings.dashboard.review_tokens = tokens
    settings.images.allow_hosts = allow_hosts or []
    published: list[dict] = []

    async def run() -> None:
        dashboard = Dashboard(settings.dashboard, MANIFEST)

        async def publish(correction: dict) -> None:
            published.append(correction)

        dashboard.publish = publish
        product = PRODUCT | {"event_id": "e1"} | ({"image": image} if image else {})
        await dashboard.on_product(product)
        await dashboard.on_assignment(assignment(1, score=0.3) | {"source_event_id": "e1"})
        async with ImageFetcher(settings.images) as fetcher:
            scraper = WorkerScraper([], 5.0)
            app, _ = build_app(settings, dashboard, PhotoSource(fetcher), scraper)
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                await call(client)

    asyncio.run(run())
    return published


DECISION = {"event_id": "e1", "labels": PATHS[1]}
JSON = {"Content-Type": "application/json"}


def test_reviews_need_a_token_and_same_origin_json() -> None:
    async def call(client: TestClient) -> None:
        page = await client.get("/")
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
        body = orjson.dumps(DECISION)
        assert (await client.post("/api/decisions", data=body, headers=JSON)).status == 401
        wrong = JSON | {"Authorization": "Bearer nope"}
        assert (await client.post("/api/decisions", data=body, headers=wrong)).status == 401
        good = JSON | {"Authorization": "Bearer t0k"}
        form = {"Authorization": "Bearer t0k", "Content-Type": "application/x-www-form-urlencoded"}
        assert (await client.post("/api/decisions", data=body, headers=form)).status == 415
        evil = good | {"Origin": "http://evil.example"}
        assert (await client.post("/api/decisions", data=body, headers=evil)).status == 403
        rebinding = await client.get("/api/feed", headers={"Host": "evil.example"})
        assert rebinding.status == 421
        bad_path = orjson.dumps({"event_id": "e1", "labels": ["Apparel", "Shoes", "Heels"]})
        refused = await client.post("/api/decisions", data=bad_path, headers=good)
        assert refused.status == 409 and "not a category path" in (await refused.json())["error"]
        done = await client.post("/api/decisions", data=body, headers=good)
        assert done.status == 201 and (await done.json())["reviewer"] == "alice"
        session = await (await client.get("/api/session", headers=good)).json()
        assert session["reviewer"] == "alice" and session["paths"] == PATHS

    published = serve(call, ["alice:t0k"])
    assert len(published) == 1 and published[0]["decision"] == "correct"


def test_without_tokens_the_page_is_read_only() -> None:
    async def call(client: TestClient) -> None:
        feed = await (await client.get("/api/feed")).json()
        assert feed["items"][0]["title"] == PRODUCT["title"]
        post = await client.post("/api/decisions", data=orjson.dumps(DECISION), headers=JSON)
        assert post.status == 403

    assert serve(call, []) == []


def test_photos_are_served_by_the_dashboard_and_urls_go_through_the_guard(
    data_dir: Path,
) -> None:
    photo = next((data_dir / "fashion" / "images").glob("*.jpg"))
    inline = {"data": base64.b64encode(photo.read_bytes()).decode(), "media_type": "image/jpeg"}
    with PhotoServer(photo.parent) as photos:
        url = photos.url(f"/photos/{photo.name}")
        for image, allow, status in (
            (inline, [], 200),
            ({"url": url}, [f"127.0.0.1:{photos.port}"], 200),
            ({"url": url}, [], 404),  # loopback without the allow-list: never fetched
        ):

            async def call(client: TestClient, status: int = status) -> None:
                response = await client.get("/photo/e1")
                assert response.status == status, await response.text()
                if status == 200:
                    assert response.headers["Content-Type"] == "image/jpeg"
                    with Image.open(io.BytesIO(await response.read())) as thumb:
                        assert max(thumb.size) <= SIZE  # re-encoded, not the shop's bytes
                else:
                    assert "loopback" in await response.text()

            serve(call, [], allow, image)


def test_the_feed_shows_which_path_decided_when_the_worker_says() -> None:
    older = {k: v for k, v in assignment(1).items() if k != "decided_by"}  # a format-1 worker
    plain = item_json(Item(older, None))
    assert "decided_by" not in plain and plain["title"] is None  # product not in memory
    cascade = item_json(Item(assignment(2) | {"decided_by": "text"}, None))
    assert cascade["decided_by"] == "text"


def test_dashboard_command_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dashboard", "--model", str(tmp_path), "-b", "x:1"])
    assert result.exit_code == 1 and "no model bundle" in result.output
    (tmp_path / "manifest.json").write_text("{}", encoding="utf-8")
    result = CliRunner().invoke(cli, ["dashboard", "--model", str(tmp_path), "-b", "x:1"])
    assert result.exit_code == 1 and "not a prodcat model manifest" in result.output
