"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

A real embedded broker, a real worker serving a real photo model and a real
``prodcat dashboard`` process; the page is loaded before the products are published, so
assignments must arrive live (server-sent events). The test checks that a product titled
with HTML is shown as text, that photos come from the dashboard itself, submits a correction
with the taxonomy picker and reads it back from the corrections topic.

``./run.sh test`` installs /usr/bin/chromium (Debian's package) when missing. With
``PRODCAT_SCREENSHOTS=DIR`` the screenshots go to DIR (docs/img/ holds the README's).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from bundles import photo_bundle
from harness import publish, read_topic, topic_settings, worker_env

from prodcat.core.events import validate
from prodcat.core.settings import Settings
from prodcat.dashboard.child import DashboardProcess
from prodcat.kafka.clients import ensure_topics
from prodcat.sources import read_source
from prodcat.worker.child import WorkerProcess

pytestmark = pytest.mark.integration
CHROMIUM = os.environ.get("PRODCAT_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS_TITLE = "<img src=x onerror=alert(1)>"
TOKEN = "browser-test-token"
PRODUCTS = 12
WAIT_MS = 120_000


def _products(data_dir: Path) -> list[dict[str, Any]]:
    """Real fashion products with photos, the last one retitled with HTML."""
    rows = read_source(data_dir / "fashion" / "catalog.csv", "fashion")
    picked = []
    for row in rows:
        if row.event is not None and row.event.get("image") and int(row.line) > 2000:
            picked.append(dict(row.event))
        if len(picked) == PRODUCTS:
            break
    picked[-1] = picked[-1] | {"title": XSS_TITLE, "event_id": str(uuid.uuid4())}
    return picked


@pytest.fixture(scope="module")
def chromium() -> str:
    if not shutil.which(CHROMIUM):
        message = f"{CHROMIUM} not found: ./run.sh test installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def stack(
    embedded_broker: str, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, DashboardProcess]]:
    """Topics, a worker and a dashboard (audit rate 1: every assignment can be reviewed)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    settings, names = topic_settings(f"ui-{uuid.uuid4().hex[:8]}")
    settings.topics.corrections = names["corrections"] = f"{names['categories']}.corrections"
    ensure_topics(settings, embedded_broker)
    bundle = photo_bundle(data_dir)
    env = worker_env(tmp, names, "ui-workers")
    env["PRODCAT_TOPICS__CORRECTIONS"] = names["corrections"]
    worker = WorkerProcess(bundle, embedded_broker, tmp / "worker.log", env=env).start()
    dashboard = DashboardProcess(
        bundle,
        embedded_broker,
        tmp / "dashboard.log",
        env=env
        | {
            "PRODCAT_DASHBOARD__REVIEW_TOKENS": f"tester:{TOKEN}",
            "PRODCAT_DASHBOARD__AUDIT_RATE": "1",
        },
        worker_metrics=[f"http://127.0.0.1:{worker.port}/metrics"],
    )
    try:
        dashboard.start()
        worker.wait_ready()
        dashboard.wait_ready()
        yield settings, dashboard
    finally:
        for process in (dashboard, worker):
            if process.process is not None:
                process.stop()


def test_live_feed_review_and_correction_in_chromium(
    chromium: str,
    stack: tuple[Settings, DashboardProcess],
    embedded_broker: str,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    settings, dashboard = stack
    shots = Path(os.environ.get("PRODCAT_SCREENSHOTS") or tmp_path)
    products = _products(data_dir)
    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(dashboard.url + "#token=" + TOKEN)
            expect(page.locator("#live.on")).to_be_visible(timeout=WAIT_MS)
            expect(page.locator("#reviewer")).to_have_text("reviewing as tester")
            assert "token" not in page.url, "the token must leave the address bar"
            assert page.locator("#feed-list li.card").count() == 0

            publish(
                settings,
                embedded_broker,
                [(p["product_id"].encode(), orjson.dumps(p), _traceparent()) for p in products],
            )

            # live: the cards arrive without a reload; the HTML title is text, not markup
            feed = page.locator("#feed-list li.card")
            expect(feed).to_have_count(PRODUCTS, timeout=WAIT_MS)
            expect(page.get_by_text(XSS_TITLE, exact=True)).to_be_visible()
            assert page.locator('img[src="x"]').count() == 0 and dialogs == []
            photo = feed.locator(".photo img").first
            expect(photo).to_have_attribute("src", _starts_with("/photo/"))
            page.wait_for_function(
                "() => [...document.querySelectorAll('#feed-list .photo img')]"
                ".some(img => img.complete && img.naturalWidth > 0)",
                timeout=WAIT_MS,
            )
            page.screenshot(path=str(shots / "dashboard-feed.png"))

            # review queue: correct the first product to another path of the taxonomy
            page.click("button[data-tab=queue]")
            card = page.locator("#queue-list li.card").first
            expect(card).to_be_visible(timeout=WAIT_MS)
            event_id = card.get_attribute("data-event-id")
            model_path = card.locator(".path > li").all_inner_texts()
            top = card.locator("select[data-level=masterCategory]")
            current = top.input_value()
            other = next(o for o in top.locator("option").all_inner_texts() if o != current)
            top.select_option(other)
            chosen = [s.input_value() for s in card.locator("select").all()]
            card.locator(".comment").fill("wrong department")
            page.screenshot(path=str(shots / "dashboard-review.png"))
            card.locator(".correct").click()
            expect(card.locator(".result")).to_contain_text("corrected to", timeout=WAIT_MS)
            page.click("button[data-tab=health]")
            expect(page.locator("#accuracy-note")).to_contain_text("of 1 reviewed")
            page.screenshot(path=str(shots / "dashboard-health.png"), full_page=True)
        finally:
            browser.close()

    (message,) = read_topic(settings, embedded_broker, settings.topics.corrections, 1, 60)
    correction = message["value"]
    validate("correction", correction)
    assert correction["source_event_id"] == event_id
    assert message["key"] == correction["product_id"].encode()
    assert correction["reviewer"] == "tester" and correction["decision"] == "correct"
    assert [s["label"] for s in correction["new_path"]] == chosen
    assert chosen[0] == other and chosen[0] != model_path[0]
    assert correction["comment"] == "wrong department"
    assert correction["queue"] in ("needs_review", "audit")


def _traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-00f067aa0ba902b7-01"


def _starts_with(prefix: str) -> Any:
    import re

    return re.compile("^" + re.escape(prefix))
