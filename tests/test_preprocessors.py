"""Built-in preprocessors on real catalogue rows: text.normalize and image.decode."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from prodcat.contract.components import IMAGE_BYTES_KEY, IMAGE_KEY, ComponentError
from prodcat.sources import read_source

ROWS = 60


@pytest.fixture(scope="module")
def fashion(data_dir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The fashion folder and the events of its first catalogue rows (photos inlined)."""
    folder = data_dir / "fashion"
    events = [row.event for row in read_source(folder / "catalog.csv", limit=ROWS) if row.event]
    return folder, events


@pytest.fixture
def photo_event(fashion) -> dict[str, Any]:
    return next(event for event in fashion[1] if "image" in event)


@pytest.fixture
def photo_bytes(photo_event) -> bytes:
    return base64.b64decode(photo_event["image"]["data"])


@pytest.fixture
def normalize(plugin_manager):
    return plugin_manager.preprocessor("text.normalize")


@pytest.fixture
def decode(plugin_manager):
    return plugin_manager.preprocessor("image.decode")


# ---- text.normalize ----------------------------------------------------------------------


def test_real_titles_only_lose_extra_whitespace(fashion, normalize) -> None:
    changed = 0
    for event in fashion[1]:
        title = normalize.process(event)["title"]
        assert title == " ".join(event["title"].split())
        changed += title != event["title"]
    assert changed  # the catalogue has titles with doubled spaces ("Scullers Men  Grey ...")


def test_chinese_title_keeps_its_characters(fashion, normalize) -> None:
    event = {**fashion[1][0], "title": "Turtle 男士 海军蓝 格子衬衫"}
    assert normalize.process(event)["title"] == "Turtle 男士 海军蓝 格子衬衫"
    lower = normalize.__class__({"lowercase": True})
    assert lower.process(event)["title"] == "turtle 男士 海军蓝 格子衬衫"
    full_width = {**event, "title": "Ｔｕｒｔｌｅ\u3000男士　衬衫"}
    assert normalize.process(full_width)["title"] == "Turtle 男士 衬衫"


def test_other_scripts_survive(normalize) -> None:
    for title in ("قميص رجالي أزرق", "पुरुषों की नीली शर्ट", "Märklin 72730 ☥", "Рубашка мужская"):
        assert normalize.process({"title": title})["title"] == title
    decomposed = "KATO 70148015 N Portram TLR 601 Portram, gru\u0308n"
    assert normalize.process({"title": decomposed})["title"].endswith("grün")


def test_markup_entities_and_control_characters_are_stripped(fashion, normalize) -> None:
    title = fashion[1][0]["title"]  # "Turtle Check Men Navy Blue Shirt"
    words = title.split()
    html = (
        f"<p>{' '.join(words[:3])} <b>{words[3]}&nbsp;{words[4]}</b><br/>{words[5]}</p>"
        "<script>alert('x')</script><!-- tracking -->"
    )
    out = normalize.process({"title": html, "description": "Soft\x00cotton &amp;\tcool"})
    assert out["title"] == title
    assert out["description"] == "Soft cotton & cool"


def test_empty_and_absent_fields(fashion, normalize) -> None:
    event = {**fashion[1][0], "title": "  \u3000 ", "brand": None}
    out = normalize.process(event)
    assert out["title"] == ""
    assert out["brand"] is None
    assert "description" not in out
    assert event["title"] == "  \u3000 "  # the input is not modified


# ---- image.decode ------------------------------------------------------------------------


def test_real_photo_from_base64_and_from_fetched_bytes(fashion, photo_event, decode) -> None:
    expected = np.asarray(Image.open(fashion[0] / "images" / f"{photo_event['product_id']}.jpg"))
    inline = decode.process(photo_event)[IMAGE_KEY]
    assert inline.mode == "RGB" and inline.size == (224, 224)
    assert np.array_equal(np.asarray(inline), expected)

    raw = base64.b64decode(photo_event["image"]["data"])
    fetched = decode.process(
        {"title": "x", "image": {"url": "https://a/b.jpg"}, IMAGE_BYTES_KEY: raw}
    )
    assert np.array_equal(np.asarray(fetched[IMAGE_KEY]), expected)
    assert IMAGE_BYTES_KEY not in fetched

    data_url = {"image": {"data": "data:image/jpeg;base64," + photo_event["image"]["data"]}}
    assert np.array_equal(np.asarray(decode.process(data_url)[IMAGE_KEY]), expected)


def test_missing_photo_leaves_product_unchanged(fashion, decode, plugin_manager) -> None:
    event = next(event for event in fashion[1] if "image" not in event)
    assert decode.process(event) == event
    url_only = {**event, "image": {"url": "https://images.example.com/1.jpg"}}
    assert decode.process(url_only) == url_only
    for info in plugin_manager.components("encoder"):
        if info.cls.modality == "image":
            assert info.cls().featurize(decode.process(event))["mask"] == 0.0


def test_truncated_and_corrupt_jpeg_are_refused_with_reason(photo_bytes, decode) -> None:
    with pytest.raises(
        ComponentError, match="corrupt or truncated JPEG image: image file is trunc"
    ):
        decode.process({IMAGE_BYTES_KEY: photo_bytes[: len(photo_bytes) // 2]})
    garbage = b"\x00" * 16 + photo_bytes[16:]
    with pytest.raises(
        ComponentError, match="not a readable image in an accepted format"
    ) as caught:
        decode.process({IMAGE_BYTES_KEY: garbage})
    assert caught.value.stage == "image.decode"
    with pytest.raises(ComponentError, match="not valid base64"):
        decode.process({"image": {"data": "not*base64!"}})
    with pytest.raises(ComponentError, match="image bytes are empty"):
        decode.process({IMAGE_BYTES_KEY: b""})


def _palette_png(width: int, height: int) -> bytes:
    """A valid 1-bit palette PNG of any size, built row by row: a few KB for 400 Mpx."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", b"\xff\xff\xff\x00\x00\x00")
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to decode pixels fail the test."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_png_bomb_is_refused_before_decoding(decode, no_decoding) -> None:
    bomb = _palette_png(20_000, 20_000)
    assert len(bomb) < 200_000
    event = {"image": {"data": base64.b64encode(bomb).decode(), "media_type": "image/png"}}
    with pytest.raises(ComponentError, match="refused before decoding") as caught:
        decode.process(event)
    assert "400000000 pixels" in str(caught.value)


def test_pixel_limit_is_configurable_and_read_from_the_header(decode, no_decoding) -> None:
    medium = _palette_png(8_000, 8_000)  # under Pillow's own limit, over ours
    with pytest.raises(ComponentError, match="8000x8000 = 64,000,000 pixels, over max_pixels 40"):
        decode.process({IMAGE_BYTES_KEY: medium})
    strict = decode.__class__({"max_pixels": 224 * 223})
    with pytest.raises(ComponentError, match="224x224 = 50,176 pixels"):
        strict.process({IMAGE_BYTES_KEY: _palette_png(224, 224)})


def test_byte_limit_applies_before_decoding(photo_event, decode) -> None:
    small = decode.__class__({"max_bytes": 1000})
    with pytest.raises(ComponentError, match="over max_bytes 1,000"):
        small.process(photo_event)


def test_exif_orientation_is_applied(photo_bytes, decode) -> None:
    upright = Image.open(io.BytesIO(photo_bytes)).crop((0, 56, 224, 168))  # 224 wide, 112 high
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    buffer = io.BytesIO()
    upright.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    image = decode.process({IMAGE_BYTES_KEY: buffer.getvalue()})[IMAGE_KEY]
    assert image.size == (112, 224)
    pixels = np.asarray(image, dtype=np.float32)
    right = np.abs(pixels - np.asarray(upright.transpose(Image.Transpose.ROTATE_270))).mean()
    wrong = np.abs(pixels - np.asarray(upright.transpose(Image.Transpose.ROTATE_90))).mean()
    assert right < 4 < wrong


def test_transparency_goes_to_white_and_modes_become_rgb(photo_bytes, decode) -> None:
    rgba = Image.open(io.BytesIO(photo_bytes)).convert("RGBA")
    alpha = np.full((224, 224), 255, dtype=np.uint8)
    alpha[:, :112] = 0
    rgba.putalpha(Image.fromarray(alpha))
    for image in (rgba, rgba.convert("L"), rgba.convert("RGB").convert("P")):
        decoded = decode.process({IMAGE_BYTES_KEY: _png(image)})[IMAGE_KEY]
        assert decoded.mode == "RGB" and decoded.size == (224, 224)
    left = np.asarray(decode.process({IMAGE_BYTES_KEY: _png(rgba)})[IMAGE_KEY])[:, :112]
    assert (left == 255).all()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
