"""Hot model reload: a new bundle in the model directory is validated, then swapped in.

What "a new bundle" means, so a swap is atomic: the worker watches the *signature* of its
``--model`` directory: the directory's resolved path plus the inode, size and mtime of its
``manifest.json``. Two ways to publish a bundle change it in one step:

* the model directory is a symlink to a versioned folder (``models/default -> v7``) and is
  re-pointed atomically (``ln -s v8 default.new && mv -T default.new default``);
* a complete, prepared folder is renamed into place (``mv default default.old && mv v8
  default``); for the moment the directory has no manifest, the worker keeps serving and
  looks again on the next check.

Files are never edited inside the folder being served. The check runs every
``[worker] model_poll_s`` seconds (0 = only on SIGHUP) and at once on SIGHUP. A changed
signature is loaded from its resolved path (so a second swap during the load cannot mix
two bundles) with the same checks as at start-up (plugins present, versions and
fingerprints equal, ONNX sessions created) plus one probe inference; only then does
``Runtime.use_model`` swap it in: products taken before finish on the old model (its
batchers close once they are answered), later ones go to the new; no event is dropped,
re-run, or answered by a mix of two models' graphs. A bundle that fails is logged (one ERROR line
with the reason) and counted as ``prodcat_model_reloads_total{result="rejected"}``, and the
old model keeps serving; the same signature is not retried until it changes or SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from prodcat.contract.components import Product
from prodcat.worker.models import Model

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
Signature = tuple[str, int, int, int]
PROBE: Product = {"event_id": "model-reload-probe", "product_id": "probe", "title": "probe"}


def signature(model_dir: Path) -> Signature | None:
    """What identifies the bundle now in ``model_dir``; None while it has no manifest."""
    real = os.path.realpath(model_dir)
    try:
        stat = os.stat(os.path.join(real, MANIFEST))
    except OSError:
        return None
    return real, stat.st_ino, stat.st_size, stat.st_mtime_ns


def probed(model: Model) -> Model:
    """``model`` after one real inference on a probe product (raises when it cannot serve)."""
    result = model.probe(dict(PROBE))
    if not result.get("category_path"):
        raise ValueError("the probe inference returned no category path")
    return model


class ReloadTarget(Protocol):
    """What the reloader needs from the runtime (prodcat.worker.runtime.Runtime)."""

    def model_identity(self) -> dict[str, str]:
        """name/version/fingerprint of the model being served."""

    async def use_model(self, model: Model) -> None:
        """Serve later products with ``model``."""

    def model_reloaded(self, result: str) -> str:
        """Count a reload attempt by result; returns ``result``."""


class ModelReloader:
    """Checks the model directory and swaps a validated new bundle into the runtime."""

    def __init__(
        self,
        model_dir: str | Path,
        load: Callable[[Path], Model],
        runtime: ReloadTarget,
        poll_s: float,
    ) -> None:
        self.model_dir = Path(model_dir)
        self._load = load
        self._runtime = runtime
        self._poll_s = poll_s
        self._seen = signature(self.model_dir)
        self._wake = asyncio.Event()

    def request(self) -> None:
        """SIGHUP: check now, and reload even when the signature did not change."""
        self._wake.set()

    async def run(self) -> None:
        """Check every ``poll_s`` seconds and on request, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s or None)
            forced = self._wake.is_set()
            self._wake.clear()
            await self.check(forced)

    async def check(self, forced: bool = False) -> str | None:
        """Reload if the bundle changed: "loaded", "rejected", "unchanged", or None (no-op)."""
        current = signature(self.model_dir)
        if current is None or (current == self._seen and not forced):
            return None
        self._seen = current
        path = Path(current[0])
        try:
            model = await asyncio.to_thread(lambda: probed(self._load(path)))
        except Exception as exc:  # noqa: BLE001 - whatever is wrong, the old model keeps serving
            log.error(
                "model reload rejected: %s: %s; still serving %s",
                path,
                exc,
                self._runtime.model_identity()["fingerprint"],
            )
            return self._runtime.model_reloaded("rejected")
        if model.identity()["fingerprint"] == self._runtime.model_identity()["fingerprint"]:
            log.info("model reload: %s has the fingerprint already served; kept", path)
            return self._runtime.model_reloaded("unchanged")
        await self._runtime.use_model(model)
        identity = model.identity()
        log.info(
            "model reloaded: %s %s (%s) from %s",
            identity["name"],
            identity["version"],
            identity["fingerprint"],
            path,
        )
        return self._runtime.model_reloaded("loaded")
