"""Photos for the page: small re-encoded JPEGs, never the bytes a shop sent.

Re-encoding through Pillow means the browser only ever decodes an image prodcat made
(no polyglot files, no SVG scripts), and a thumbnail of a few KB is all the page needs.
Photos given by URL are fetched by the worker's SSRF-guarded
:class:`~prodcat.worker.image_fetch.ImageFetcher`, with the same ``[images]`` settings, so
the dashboard cannot be used to reach the internal network, and the browser never loads a
URL from an event.
"""

from __future__ import annotations

import asyncio
import io
import logging

from PIL import Image, UnidentifiedImageError

from prodcat.dashboard.store import ProductView
from prodcat.worker.image_fetch import ImageFetcher, ImageFetchError

log = logging.getLogger(__name__)
SIZE = 160  # longest side of a thumbnail, pixels
MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding
QUALITY = 80


class ThumbnailError(ValueError):
    """The bytes are not a photo Pillow can decode within the bounds."""


def make_thumbnail(data: bytes) -> bytes:
    """A JPEG of at most ``SIZE`` pixels a side; :class:`ThumbnailError` for a bad photo."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ThumbnailError(f"photo of {width}x{height} pixels is too large")
            image.draft("RGB", (SIZE, SIZE))  # JPEG: decode at reduced size, cheaply
            small = image.convert("RGB")
            small.thumbnail((SIZE, SIZE))
            out = io.BytesIO()
            small.save(out, "JPEG", quality=QUALITY)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ThumbnailError(f"not a photo Pillow can read: {exc}") from None


async def shrink(view: ProductView, keep_up_to: int = 0) -> None:
    """Replace an inline photo by its thumbnail (in a thread: decoding is CPU work).

    A photo of at most ``keep_up_to`` bytes is kept as it is for now (a thumbnail would
    not be much smaller) and re-encoded only if a page asks for it.
    """
    if view.photo is None or len(view.photo) <= keep_up_to:
        return
    data, view.photo = view.photo, None
    try:
        view.thumbnail = await asyncio.to_thread(make_thumbnail, data)
    except ThumbnailError as exc:
        view.photo_error = str(exc)


class PhotoSource:
    """Thumbnails for views, each made (or fetched by URL) once, however many ask."""

    def __init__(self, fetcher: ImageFetcher) -> None:
        self.fetcher = fetcher
        self._pending: dict[str, asyncio.Future[None]] = {}

    async def thumbnail(self, view: ProductView) -> bytes | None:
        """The view's thumbnail, made on first use; None (with ``photo_error``) if none."""
        if view.thumbnail is not None or view.photo_error is not None:
            return view.thumbnail
        task = self._pending.get(view.event_id)
        if task is None:
            task = asyncio.ensure_future(self._make(view))
            self._pending[view.event_id] = task
            task.add_done_callback(lambda _: self._pending.pop(view.event_id, None))
        await asyncio.shield(task)
        return view.thumbnail

    async def _make(self, view: ProductView) -> None:
        if view.photo is not None:
            await shrink(view)
            return
        if not view.photo_url:
            view.photo_error = "no photo"
            return
        try:
            data = await self.fetcher.fetch(view.photo_url)
            view.thumbnail = await asyncio.to_thread(make_thumbnail, data)
        except (ImageFetchError, ThumbnailError) as exc:
            view.photo_error = str(exc)
            log.info("no thumbnail for product %s: %s", view.product_id, exc)
