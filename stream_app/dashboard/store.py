"""What the dashboard remembers about products: bounded by count and by bytes.

Assignments carry no title or photo, so the dashboard reads the products topic too and
joins the two by event id. Products wait in a :class:`ProductStore` until their assignment
arrives; the store evicts the oldest beyond ``[dashboard] pending_products`` items or
``pending_mb`` of photo bytes, so a stalled worker cannot make the dashboard grow. Once
joined, a product keeps at most 16 KB of photo: a larger one is replaced by its thumbnail
(a few KB) at once, a smaller one when a page first asks for it.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT = 300  # characters of title / description kept for display
VIEW_OVERHEAD = 512  # bytes counted per product besides its photo


@dataclass
class ProductView:
    """The parts of a product event a reviewer looks at."""

    event_id: str
    product_id: str
    title: str
    description: str
    photo: bytes | None = None  # inline photo, until a thumbnail replaces it
    photo_url: str | None = None  # fetched through the SSRF-guarded fetcher on demand
    thumbnail: bytes | None = None
    photo_error: str | None = field(default=None)

    @property
    def size(self) -> int:
        return VIEW_OVERHEAD + len(self.photo or b"") + len(self.thumbnail or b"")

    @property
    def has_photo(self) -> bool:
        return bool(self.photo or self.photo_url or self.thumbnail)


def product_view(event: dict[str, Any], max_photo_bytes: int) -> ProductView:
    """A view of a valid product event; a photo over ``max_photo_bytes`` is not kept."""
    image = event.get("image") or {}
    photo = None
    error = None
    if image.get("data"):
        try:
            photo = base64.b64decode(image["data"], validate=True)
        except (binascii.Error, ValueError):
            error = "the inline photo is not valid base64"
        if photo is not None and len(photo) > max_photo_bytes:
            photo, error = None, f"photo of {len(photo):,} bytes is too large to keep"
    return ProductView(
        event_id=str(event["event_id"]),
        product_id=str(event["product_id"]),
        title=str(event.get("title") or "")[:MAX_TEXT],
        description=str(event.get("description") or "")[:MAX_TEXT],
        photo=photo,
        photo_url=image.get("url"),
        photo_error=error,
    )


class ProductStore:
    """Products waiting for their assignment, oldest evicted first beyond either bound."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max(1, max_items)
        self.max_bytes = max(1, max_bytes)
        self._views: OrderedDict[str, ProductView] = OrderedDict()
        self.bytes = 0
        self.evicted = 0

    def add(self, view: ProductView) -> None:
        old = self._views.pop(view.event_id, None)
        if old is not None:
            self.bytes -= old.size
        self._views[view.event_id] = view
        self.bytes += view.size
        while len(self._views) > self.max_items or (
            self.bytes > self.max_bytes and len(self._views) > 1
        ):
            _, gone = self._views.popitem(last=False)
            self.bytes -= gone.size
            self.evicted += 1

    def take(self, event_id: str) -> ProductView | None:
        """Remove and return the product of ``event_id`` (None when unknown or evicted)."""
        view = self._views.pop(event_id, None)
        if view is not None:
            self.bytes -= view.size
        return view

    def __len__(self) -> int:
        return len(self._views)
