"""Hostile input through a running worker (issue 7): every event ends as one outcome.

A fixed corpus (broken JSON and UTF-8, wrong types, missing and extra fields, a 10 MB
string, deep nesting, invalid base64, truncated and corrupt JPEG/PNG/WebP, a decompression
bomb, photo URLs at loopback, link-local, private and IPv6 loopback addresses, a redirect
loop, a redirect to a private address, a server that trickles bytes) plus events generated
by hypothesis, all through one worker process. Only this module's photo server port is
allow-listed (``127.0.0.1:<port>``), so the guard must refuse 127.0.0.1 on any other port;
a sentinel server on such a port proves no connection was ever made. Non-loopback URLs are
refused before any traffic (IP literals are checked before the request).

Then a plugin that raises on some events, installed like a pip package and loaded by the
worker process from its entry point: those events are dead-lettered under its name.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from bundles import hashgram_bundle
from harness import (
    LocalServer,
    QuietHandler,
    read_topic,
    text_products,
    topic_settings,
    worker_env,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from prodcat.contract.manager import create_plugin_manager, set_plugin_manager
from prodcat.core.settings import Settings
from prodcat.kafka.clients import ensure_topics
from prodcat.kafka.clients import producer as kafka_producer
from prodcat.worker.child import WorkerProcess
from prodcat.worker.memory import rss_bytes

pytestmark = [pytest.mark.integration, pytest.mark.training]

WAIT_S = 120.0  # upper bound of any wait for outcomes
BIG = 10 * 1024 * 1024
DLQ_ORIGINAL_MAX = 1024 * 1024  # [worker] dlq_max_original_bytes default
RSS_GROWTH_MAX = 300 * 2**20
MEMORY_LIMIT_MB = 1024


class Sentinel:
    """A TCP listener on 127.0.0.1 that counts connections; the guard must never reach it."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


class HostileServer(LocalServer):
    """127.0.0.1 photo server with hostile routes: loops, redirects inward, trickling."""

    def __init__(self, photo: bytes) -> None:
        stop = self.stopping = threading.Event()

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/photo.jpg":
                    self.reply(200, "image/jpeg", photo)
                elif self.path == "/loop":
                    self.redirect("/loop")
                elif self.path == "/inward":
                    self.redirect("http://10.0.0.1/photo.jpg")
                elif self.path == "/trickle":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    while not stop.wait(0.2):
                        try:
                            self.wfile.write(b"\xff")
                            self.wfile.flush()
                        except OSError:
                            return
                else:
                    self.reply(404, "text/plain", b"not found")

        super().__init__(Handler)

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        super().__exit__(*exc_info)


@pytest.fixture(scope="module")
def bundle(data_dir: Path) -> Path:
    return hashgram_bundle(data_dir, "rel-hashgram-a", seed=0)


@pytest.fixture(scope="module")
def jpeg(data_dir: Path) -> bytes:
    return next((data_dir / "fashion" / "images").glob("*.jpg")).read_bytes()


@pytest.fixture(scope="module")
def servers(jpeg: bytes) -> Iterator[tuple[HostileServer, Sentinel]]:
    sentinel = Sentinel()
    with HostileServer(jpeg) as server:
        yield server, sentinel
    sentinel.close()


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, fmt)
    return out.getvalue()


def corpus(
    good: dict[str, Any], jpeg: bytes, server: HostileServer, sentinel: Sentinel
) -> list[tuple[bytes, str, str]]:
    """(raw value, expected stage, words the reason must contain) for each hostile event."""

    def event(**fields: Any) -> bytes:
        merged = {**good, **fields}
        return orjson.dumps({k: v for k, v in merged.items() if v is not None})

    def inline(data: bytes, media: str = "image/jpeg") -> dict[str, str]:
        return {"data": base64.b64encode(data).decode(), "media_type": media}

    png, webp = image_bytes("PNG"), image_bytes("WEBP")
    bomb = image_bytes("PNG", (12_000, 12_000), "1")  # 144 Mpx in about 20 KB
    sentinel_url = f"127.0.0.1:{sentinel.port}/photo.jpg"
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        (b"{not json", "decode", "not valid UTF-8 JSON"),
        (b'{"title": "\xff\xfe"}', "decode", "not valid UTF-8 JSON"),
        (b"", "decode", ""),
        (deep, "decode", "not valid UTF-8 JSON"),
        (event(title=42), "schema", "title"),
        (event(product_id=None), "schema", "product_id"),
        (event(colour="blue"), "schema", "colour"),
        (event(attributes={"a": {"b": {"c": {"d": [[[[1]]]]}}}}), "schema", "attributes"),
        (event(title="x" * BIG), "decode", "bytes"),
        (
            event(image={"data": "%%% not base64 %%%", "media_type": "image/jpeg"}),
            "schema",  # the event schema's base64 pattern refuses it first
            "data",
        ),
        (event(image=inline(jpeg[: len(jpeg) // 3])), "image.decode", ""),
        (event(image=inline(b"\xff\xd8\xff\xe0" + b"\0" * 200)), "image.decode", ""),
        (event(image=inline(png[:40], "image/png")), "image.decode", ""),
        (event(image=inline(png[:20] + b"\0" * 100, "image/png")), "image.decode", ""),
        (event(image=inline(webp[: len(webp) // 2], "image/webp")), "image.decode", ""),
        (event(image=inline(bomb, "image/png")), "image.decode", "max_pixels"),
        (event(image={"url": f"http://{sentinel_url}"}), "image_fetch", "loopback"),
        (event(image={"url": f"http://localhost:{sentinel.port}/p"}), "image_fetch", "loopback"),
        (event(image={"url": f"http://[::1]:{sentinel.port}/p"}), "image_fetch", "loopback"),
        (event(image={"url": "http://169.254.169.254/latest/meta-data/"}), "image_fetch", "link"),
        (event(image={"url": "http://10.12.0.7/photo.jpg"}), "image_fetch", "private"),
        (event(image={"url": server.url("/loop")}), "image_fetch", "redirect loop"),
        (event(image={"url": server.url("/inward")}), "image_fetch", "private"),
        (event(image={"url": server.url("/trickle")}), "image_fetch", "timed out"),
    ]


def generated_events(good: dict[str, Any]) -> list[bytes]:
    """Events hypothesis makes up: arbitrary bytes, arbitrary JSON (stdlib json: integers
    of any size, Infinity), valid events with arbitrary values in their fields."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
    mutated = st.builds(
        lambda field, value: json.dumps({**good, field: value}).encode(),
        st.sampled_from([*good, "image", "extra"]),
        json_values,
    )
    anything = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()) | mutated
    found: list[bytes] = []

    @settings(max_examples=150, database=None, suppress_health_check=list(HealthCheck))
    @given(anything)
    def collect(raw: bytes) -> None:
        found.append(raw)

    collect()
    return found


def send(settings_: Settings, bootstrap: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = kafka_producer(settings_, bootstrap, max_request_size=BIG + 2**20)
    try:
        for key, value in values:
            producer.send(settings_.topics.products, key=key, value=value)
        producer.flush(60)
    finally:
        producer.close()


def original_key(letter: dict[str, Any]) -> str:
    return base64.b64decode(letter["value"]["original"]["key"]).decode()


def test_hostile_corpus_and_generated_events_each_end_as_one_outcome(
    bundle: Path,
    data_dir: Path,
    jpeg: bytes,
    servers: tuple[HostileServer, Sentinel],
    broker: str,
    tmp_path: Path,
) -> None:
    server, sentinel = servers
    cfg, topics = topic_settings("hostile")
    ensure_topics(cfg, broker)
    good = text_products(data_dir, 20)
    cases = corpus(good[0], jpeg, server, sentinel)
    generated = generated_events(good[1])
    values = [(f"good-{i}".encode(), orjson.dumps(e)) for i, e in enumerate(good[2:])]
    values.append(
        (b"good-url", orjson.dumps({**good[0], "image": {"url": server.url("/photo.jpg")}}))
    )
    values += [(f"case-{i}".encode(), raw) for i, (raw, _, _) in enumerate(cases)]
    values += [(f"gen-{i}".encode(), raw) for i, raw in enumerate(generated)]
    env = worker_env(tmp_path, topics, "hostile") | {
        "PRODCAT_IMAGES__ALLOW_HOSTS": f"127.0.0.1:{server.port}",
        "PRODCAT_IMAGES__FETCH_TIMEOUT_S": "2",
        "PRODCAT_WORKER__MEMORY_LIMIT_MB": str(MEMORY_LIMIT_MB),
    }
    worker = WorkerProcess(bundle, broker, tmp_path / "worker.log", env).start()
    try:
        worker.wait_ready()
        send(cfg, broker, values[:5])  # warm up before the first memory reading
        read_topic(cfg, broker, topics["categories"], 5, WAIT_S)
        assert worker.process is not None
        rss_before = rss_bytes(worker.process.pid)
        send(cfg, broker, values[5:])
        total = len(values)
        deadline = time.monotonic() + WAIT_S
        while worker_outcomes(worker) < total and time.monotonic() < deadline:
            time.sleep(0.5)
        consumed = worker_outcomes(worker)
        rss_after = rss_bytes(worker.process.pid)
        assignments = read_topic(cfg, broker, topics["categories"], total, 10)
        letters = read_topic(cfg, broker, topics["dlq"], total - len(assignments), 10)
        assert worker.get("/health")[0] == 200 and worker.ready() is not None
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()

    print(
        f"hostile: {total} events ({len(cases)} corpus, {len(generated)} generated): "
        f"{len(assignments)} assignments, {len(letters)} dead letters; worker RSS "
        f"{rss_before / 2**20:.0f} MiB -> {rss_after / 2**20:.0f} MiB"
    )
    assert consumed == total == len(assignments) + len(letters)
    outcomes = assignments + letters
    sources = {
        (o["value"]["source"]["partition"], o["value"]["source"]["offset"]) for o in outcomes
    }
    assert len(sources) == total, "an event has two outcomes, so another has none"
    assert {a["value"]["product_id"] for a in assignments} >= {
        g["product_id"] for g in [good[0], *good[2:]]
    }
    by_key = {original_key(d): d["value"] for d in letters}
    wrong = [
        (i, stage, words, by_key.get(f"case-{i}"))
        for i, (_, stage, words) in enumerate(cases)
        if f"case-{i}" not in by_key
        or by_key[f"case-{i}"]["stage"] != stage
        or words not in by_key[f"case-{i}"]["error"]["message"]
    ]
    assert not wrong, wrong
    big = by_key[f"case-{[words for _, _, words in cases].index('bytes')}"]
    assert big["original"]["truncated_from"] > BIG
    assert len(base64.b64decode(big["original"]["value"])) == DLQ_ORIGINAL_MAX
    assert sentinel.connections == 0, "the guard let a request reach a loopback service"
    assert rss_after - rss_before < RSS_GROWTH_MAX
    assert rss_after < MEMORY_LIMIT_MB * 2**20


def worker_outcomes(worker: WorkerProcess) -> float:
    """Assignments + dead letters the worker has published (all stages)."""
    _, body = worker.get("/metrics")
    return sum(
        float(line.split()[-1])
        for line in body.decode().splitlines()
        if line.startswith("prodcat_events_total{")
    )


FLAKY_PLUGIN = '''
from prodcat.contract.components import Preprocessor
from prodcat.contract.hookspecs import hookimpl


class Flaky(Preprocessor):
    """Refuses titles with EXPLODE the way a buggy plugin does: a plain exception."""

    name = "test.flaky"
    version = "1.0"

    def process(self, product):
        if "EXPLODE" in product.get("title", ""):
            raise RuntimeError("flaky cannot handle this title")
        return product


@hookimpl
def register_preprocessors(register):
    register(Flaky)


@hookimpl
def postprocess_assignment(assignment, product):
    if "POSTBOOM" in product.get("title", ""):
        raise ValueError("postprocess refuses this product")
'''


def test_a_raising_plugin_dead_letters_its_events_under_its_name(
    installed_plugin: Callable[..., Path], data_dir: Path, embedded_broker: str, tmp_path: Path
) -> None:
    """A preprocessor in the model and a postprocess hook, installed as a package (entry
    point ``flaky``) and loaded by the worker process, raise on some events."""
    folder = installed_plugin("flaky", "prodcat_flaky", FLAKY_PLUGIN)
    previous = set_plugin_manager(create_plugin_manager())
    try:
        model = hashgram_bundle(
            data_dir,
            "rel-hashgram-flaky",
            preprocessors=[("text.normalize", {}), ("test.flaky", {}), ("image.decode", {})],
        )
    finally:
        set_plugin_manager(previous)
    cfg, topics = topic_settings("flaky")
    ensure_topics(cfg, embedded_broker)
    products = text_products(data_dir, 60, skip=500)
    marks = {0: "EXPLODE", 1: "POSTBOOM"}
    for i, product in enumerate(products):
        if i % 5 in marks:
            product["title"] = f"{marks[i % 5]} {product['title']}"
    env = worker_env(tmp_path, topics, "flaky") | {"PYTHONPATH": str(folder)}
    worker = WorkerProcess(model, embedded_broker, tmp_path / "worker.log", env).start()
    try:
        worker.wait_ready()
        send(cfg, embedded_broker, [(p["product_id"].encode(), orjson.dumps(p)) for p in products])
        assignments = read_topic(cfg, embedded_broker, topics["categories"], 36, WAIT_S)
        letters = read_topic(cfg, embedded_broker, topics["dlq"], 24, WAIT_S)
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.tail()
    stage_of = {original_key(d): d["value"]["stage"] for d in letters}
    expected = {
        p["product_id"]: ("test.flaky" if i % 5 == 0 else "flaky")
        for i, p in enumerate(products)
        if i % 5 in marks
    }
    assert stage_of == expected
    assert {a["value"]["product_id"] for a in assignments} == {
        p["product_id"] for i, p in enumerate(products) if i % 5 not in marks
    }
