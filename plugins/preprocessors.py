"""Built-in preprocessors: text normalisation and safe image decoding.

Both run in the worker on untrusted events, so they never trust the input: text loses
markup but keeps every script (CJK, Arabic, Devanagari...), and images are size-checked
from their header before a single pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import re
import unicodedata
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from prodcat import IMAGE_BYTES_KEY, IMAGE_KEY, Preprocessor, Product, hookimpl

_MARKUP_BLOCKS = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)
_DATA_URL = re.compile(r"^data:[^,]*;base64,", re.IGNORECASE)


def normalize_text(text: str, lowercase: bool = False) -> str:
    """Markup-free, NFKC-normalised text with single spaces.

    Tags become spaces (``a<br>b`` stays two words), entities are decoded after tags are
    removed, and NFKC folds full-width Latin and compatibility forms without touching
    the characters of any script.
    """
    text = _TAGS.sub(" ", _MARKUP_BLOCKS.sub(" ", text))
    text = unicodedata.normalize("NFKC", html.unescape(text))
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    text = " ".join(text.split())
    return text.lower() if lowercase else text


class NormalizeText(Preprocessor):
    """NFKC, markup stripped, whitespace collapsed, optionally lower-cased."""

    name = "text.normalize"
    version = "1"
    description = "Unicode NFKC, HTML tags/entities stripped, whitespace collapsed"
    defaults = {"fields": ["title", "description", "brand"], "lowercase": False}

    def process(self, product: Product) -> Product:
        out = dict(product)
        for key in self.config["fields"]:
            value = product.get(key)
            if isinstance(value, str):
                out[key] = normalize_text(value, self.config["lowercase"])
        return out


class DecodeImage(Preprocessor):
    """Base64 ``image.data`` or fetched bytes -> an RGB ``PIL.Image`` in ``product["_image"]``.

    A product without image bytes passes unchanged (the image encoder then reports the
    modality as missing); bytes that are not a safe, complete image raise ComponentError.

    ``draft_size``: a JPEG at least twice that many pixels on its shorter side is decoded
    straight at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's draft mode), never
    below ``draft_size``: a shop's 12-megapixel photo then costs a fraction of a full
    decode when the encoder needs 224 pixels. None decodes every photo in full (the
    behaviour before the key existed). Training fits it to the model's image encoders.
    """

    name = "image.decode"
    version = "1"
    description = "Decode to RGB with EXIF orientation; pixel-count and byte-size guards"
    defaults = {
        "max_pixels": 40_000_000,
        "max_bytes": 5 * 1024 * 1024,
        "formats": ["JPEG", "PNG", "WEBP", "GIF", "BMP"],
        "draft_size": None,
    }
    added_defaults = {"draft_size": None}

    def process(self, product: Product) -> Product:
        data = self._image_bytes(product)
        if data is None:
            return product
        out = {key: value for key, value in product.items() if key != IMAGE_BYTES_KEY}
        out[IMAGE_KEY] = self.decode(data)
        return out

    def decode(self, data: bytes) -> Image.Image:
        """Check the header's dimensions, then decode, orient and convert to RGB."""
        formats = self.config["formats"]
        try:
            image = Image.open(io.BytesIO(data), formats=formats)
        except Image.DecompressionBombError as exc:
            raise self.error(f"image refused before decoding: {exc}") from None
        except UnidentifiedImageError:
            raise self.error(
                f"not a readable image in an accepted format ({', '.join(formats)}); "
                f"first bytes {data[:8]!r}"
            ) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise self.error(f"unreadable image header: {exc}") from None
        width, height = image.size
        if width * height > self.config["max_pixels"]:
            raise self.error(
                f"{image.format} image is {width}x{height} = {width * height:,} pixels, over "
                f"max_pixels {self.config['max_pixels']:,}; refused before decoding"
            )
        draft = self.config["draft_size"]
        if draft and image.format == "JPEG":
            image.draft(None, (draft, draft))  # keeps both sides >= draft_size
        try:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
        except (OSError, SyntaxError, ValueError) as exc:
            raise self.error(f"corrupt or truncated {image.format} image: {exc}") from None

    def _image_bytes(self, product: Product) -> bytes | None:
        fetched = product.get(IMAGE_BYTES_KEY)
        if fetched is not None:
            data = bytes(fetched)
        else:
            image = product.get("image")
            encoded = image.get("data") if isinstance(image, dict) else None
            if not encoded:
                return None
            data = self._from_base64(encoded)
        if len(data) > self.config["max_bytes"]:
            raise self.error(
                f"image is {len(data):,} bytes, over max_bytes {self.config['max_bytes']:,}"
            )
        if not data:
            raise self.error("image bytes are empty")
        return data

    def _from_base64(self, encoded: Any) -> bytes:
        if not isinstance(encoded, str):
            raise self.error(f"image.data must be a base64 string, got {type(encoded).__name__}")
        encoded = "".join(_DATA_URL.sub("", encoded.strip()).split())
        if len(encoded) // 4 * 3 > self.config["max_bytes"]:
            raise self.error(
                f"image.data decodes to about {len(encoded) // 4 * 3:,} bytes, over max_bytes "
                f"{self.config['max_bytes']:,}"
            )
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self.error(f"image.data is not valid base64: {exc}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparent areas on white (product cut-outs are drawn on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


@hookimpl
def register_preprocessors(register: Any) -> None:
    register(NormalizeText)
    register(DecodeImage)
