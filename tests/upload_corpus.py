"""A corpus of awkward uploads, generated on the fly (nothing binary committed).

Shared by the unit tests of `vit.images` and the app's end-to-end tests, which
post every file to the live server. `EXPECTED[name]` is None when the file is
a valid image that must be accepted, else a lower-case keyword that the
rejection message must contain. Building everything takes well under 2 s and
every file is small (the 30000x30000 PNG is ~110 KB).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def photo(size=(64, 48)) -> Image.Image:
    """A smooth, colourful RGB test image."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1),
                    np.full_like(x, 128)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def exif_rotated_jpeg() -> bytes:
    """64x32 stored pixels, red 8x8 marker top-left, EXIF orientation 6.

    Orientation 6 means "rotate 90 degrees clockwise to display": upright it
    is 32x64 with the marker in the top-right corner.
    """
    image = Image.new("RGB", (64, 32), (200, 200, 200))
    image.paste(RED, (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def rgba_transparent_png() -> bytes:
    """Left half opaque red, right half fully transparent *black* pixels."""
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16] = (255, 0, 0, 255)
    return encode(Image.fromarray(rgba), "PNG")


def palette_transparent_png() -> bytes:
    """Palette image: index 0 (black) is transparent on the left, blue right."""
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 0, 0, 255])
    image.paste(1, (16, 0, 32, 32))
    return encode(image, "PNG", transparency=0)


def sixteen_bit_png() -> bytes:
    """Mode I;16 horizontal ramp 0 -> 65535 (256 columns)."""
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    return encode(Image.fromarray(np.tile(ramp, (16, 1))), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)


def animated_gif() -> bytes:
    """Frame 0 red, frame 1 blue: the first frame must be used."""
    frames = [Image.new("RGB", (32, 32), c).convert("P") for c in (RED, BLUE)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:],
                  duration=100, loop=0)


def multipage_tiff() -> bytes:
    """Page 0 green, page 1 blue: the first page must be used."""
    pages = [Image.new("RGB", (32, 32), c) for c in (GREEN, BLUE)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def truncated_jpeg() -> bytes:
    """A valid noisy JPEG cut in half (header intact, scan data missing)."""
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90)
    return data[: len(data) // 2]


def huge_png(width: int = 30000, height: int = 30000) -> bytes:
    """A genuinely valid all-black 1-bit PNG, written by hand.

    Pillow would need width*height bytes to create it; zlib compresses the
    zero rows ~1000:1, so 30000x30000 (900 MP) is ~110 KB and ~0.3 s.
    """
    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = [z.compress(row * min(1000, height - y)) for y in range(0, height, 1000)]
    idat.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b""))


SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"'
       b' width="10" height="10"><rect width="10" height="10" fill="red"/></svg>\n')
HTML = b"<!DOCTYPE html>\n<html><body><img src='cat.jpg'></body></html>\n"
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)

# name -> (builder, expectation: None = accepted, str = keyword in the error)
CASES = {
    "photo.jpg": (lambda: encode(photo(), "JPEG", quality=90), None),
    "photo.png": (lambda: encode(photo(), "PNG"), None),
    "photo.webp": (lambda: encode(photo(), "WEBP"), None),
    "photo.bmp": (lambda: encode(photo(), "BMP"), None),
    "exif_rotated.jpg": (exif_rotated_jpeg, None),
    "rgba_transparent.png": (rgba_transparent_png, None),
    "palette_transparent.png": (palette_transparent_png, None),
    "grayscale.png": (lambda: encode(photo().convert("L"), "PNG"), None),
    "sixteen_bit.png": (sixteen_bit_png, None),
    "cmyk.jpg": (cmyk_jpeg, None),
    "animated.gif": (animated_gif, None),
    "multipage.tiff": (multipage_tiff, None),
    "one_pixel.png": (lambda: encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), None),
    "empty.png": (lambda: b"", "empty"),
    "random.bin": (lambda: np.random.default_rng(1).bytes(4096), "not an image"),
    "notes.txt": (lambda: b"This is not an image, just some notes.\n" * 20, "not an image"),
    "page.html": (lambda: HTML, "web page"),
    "photo.heic": (lambda: HEIC, "heic"),
    "truncated.jpg": (truncated_jpeg, "truncated"),
    "drawing.svg": (lambda: SVG, "svg"),
    "huge_30000x30000.png": (huge_png, "too large"),
    "strip_4000x8.png": (lambda: encode(Image.new("L", (4000, 8), 128), "PNG"), "thin"),
}
EXPECTED: dict[str, str | None] = {name: expect for name, (_, expect) in CASES.items()}


def make_bad_upload_corpus(directory) -> dict[str, Path]:
    """Write every case into `directory`; returns {name: path}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (build, _) in CASES.items():
        paths[name] = directory / name
        paths[name].write_bytes(build())
    return paths
