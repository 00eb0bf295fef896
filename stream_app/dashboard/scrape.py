"""Throughput, latency and dead letters by reason, from the workers' own /metrics.

The dashboard scrapes each URL in ``[dashboard] worker_metrics`` every
``scrape_interval_s``. A host name that resolves to several addresses (docker-compose's
``worker`` service, one A record per replica) is scraped at each, as Prometheus' DNS
discovery does. Counters are differenced per target (a restarted worker's reset counts as
a fresh start), summed over the workers and kept as a bounded series for the charts.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

log = logging.getLogger(__name__)
POINTS = 360  # samples kept per series (30 minutes at the default 5 s)
QUANTILES = (0.5, 0.95, 0.99)
EVENTS = "prodcat_events_total"
LATENCY = "prodcat_end_to_end_seconds_bucket"


@dataclass
class Sample:
    """The counters of one scrape of one worker."""

    events: dict[tuple[str, str], float] = field(default_factory=dict)  # (outcome, stage)
    latency: dict[float, float] = field(default_factory=dict)  # le -> cumulative count


def parse(text: str) -> Sample:
    sample = Sample()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == EVENTS:
                sample.events[(s.labels.get("outcome", ""), s.labels.get("stage", ""))] = s.value
            elif s.name == LATENCY:
                sample.latency[float(s.labels["le"])] = s.value
    return sample


def delta(now: dict[Any, float], before: dict[Any, float] | None) -> dict[Any, float]:
    """Per-key increase; a counter that went down was reset, so it all counts as new."""
    if before is None:
        return {key: 0.0 for key in now}
    out = {}
    for key, value in now.items():
        previous = before.get(key, 0.0)
        out[key] = value - previous if value >= previous else value
    return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative bucket counts (linear inside a bucket)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


class WorkerScraper:
    """Scrapes the workers and keeps the series the page charts."""

    def __init__(self, urls: list[str], interval_s: float) -> None:
        self.urls = urls
        self.interval_s = interval_s
        self.series: deque[dict[str, Any]] = deque(maxlen=POINTS)
        self.dead_letters: dict[str, float] = {}  # stage -> count since the dashboard started
        self.targets: dict[str, str | None] = {}  # target -> last error (None = up)
        self._previous: dict[str, Sample] = {}
        self._last = time.monotonic()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(1.0, self.interval_s))
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            while True:
                await self.scrape(session)
                # until every worker answered once, retry soon: work done before the first
                # answer is only the baseline, invisible on the charts
                baseline = all(t in self._previous for t in self.targets)
                await asyncio.sleep(self.interval_s if baseline else min(1.0, self.interval_s))

    async def scrape(self, session: aiohttp.ClientSession) -> None:
        targets = [t for url in self.urls for t in await _expand(url)]
        samples = await asyncio.gather(*(self._fetch(session, t) for t in targets))
        now = time.monotonic()
        elapsed, self._last = max(now - self._last, 1e-3), now
        events: dict[tuple[str, str], float] = {}
        latency: dict[float, float] = {}
        for target, sample in zip(targets, samples, strict=True):
            if sample is None:
                continue
            before = self._previous.get(target)
            for key, value in delta(sample.events, before.events if before else None).items():
                events[key] = events.get(key, 0.0) + value
            for key, value in delta(sample.latency, before.latency if before else None).items():
                latency[key] = latency.get(key, 0.0) + value
            self._previous[target] = sample
        assigned = sum(v for (outcome, _), v in events.items() if outcome == "assigned")
        dead = {stage: v for (outcome, stage), v in events.items() if outcome == "dead_letter"}
        for stage, value in dead.items():
            if value:
                self.dead_letters[stage] = self.dead_letters.get(stage, 0.0) + value
        self.series.append(
            {
                "at": time.time(),
                "assigned_per_s": assigned / elapsed,
                "dead_letters_per_s": sum(dead.values()) / elapsed,
                "latency_s": {f"p{round(q * 100)}": quantile(q, latency) for q in QUANTILES},
                "workers": sum(1 for s in samples if s is not None),
            }
        )

    async def _fetch(self, session: aiohttp.ClientSession, target: str) -> Sample | None:
        try:
            async with session.get(target) as response:
                response.raise_for_status()
                sample = parse(await response.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if self.targets.get(target) is None:
                log.info("cannot scrape worker metrics at %s: %s", target, exc)
            self.targets[target] = str(exc) or type(exc).__name__
            return None
        self.targets[target] = None
        return sample

    def report(self) -> dict[str, Any]:
        return {
            "series": list(self.series),
            "dead_letters_by_stage": dict(sorted(self.dead_letters.items())),
            "targets": dict(self.targets),
        }


async def _expand(url: str) -> list[str]:
    """``url`` once per address its host resolves to (or as is when it does not resolve)."""
    parsed = URL(url)
    if not parsed.host:
        return [url]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parsed.host, parsed.port, type=socket.SOCK_STREAM
        )
    except OSError:
        return [url]
    addresses = sorted({info[4][0] for info in infos})
    if len(addresses) <= 1:
        return [url]
    return [str(parsed.with_host(address)) for address in addresses]
