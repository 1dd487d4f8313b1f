"""Decode user uploads (browser upload, paste, webcam, API) into clean RGB images.

Anything a user can get wrong raises `ImageDecodeError` carrying one sentence
the app can show as-is; no other exception type escapes for bad input (a
wrong *Python* type from calling code is still a `TypeError`).

Limits and why:
  * MAX_UPLOAD_BYTES (20 MiB): bigger than any normal phone photo, small enough
    that reading the whole file into memory is harmless.
  * MAX_PIXELS (50 MP): covers default phone/camera output; checked on the
    header size *before* any pixel is decoded, so a tiny PNG claiming
    30000x30000 (a decompression bomb) costs nothing.
  * MIN_SIDE (1 px): a 1x1 image is still an image; it is upsampled (the model
    will see a flat colour, which is the honest answer).
  * MAX_ASPECT_RATIO (20:1): the model sees a square centre crop, so a 4000x8
    strip would be reduced to an 8x8 sliver. Beyond 20:1 it is not a photo.

Pixel values, one convention for the whole package: an image array holds
0-255 values whatever its dtype, because that is what the model takes (its
Preprocess layer rescales). `pixels_uint8` applies it for `vit.inference`,
`vit.faithfulness`, `vit.explain` and array uploads here: floats are rounded
and clipped to 0..255, and a float array whose values all lie within [-1, 1]
(not all zero) is refused with a ValueError, since it is almost surely 0-1
scaled or standardised and would otherwise be read as a black image: multiply
by 255 first. Uploads differ in two ways: integers wider than 8 bits (16-bit
PNGs, uint16 arrays) are scaled by their container's range (65535 -> 255), and
32-bit float image *files* (TIFF mode F), which have no caller to ask, use 0-1
as full scale, as image editors write them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import logging
import os
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000
MIN_SIDE = 1
MAX_ASPECT_RATIO = 20.0
DISPLAY_MAX_SIDE = 1024  # the model needs 32 px; this is only what the user sees
BACKGROUND = (255, 255, 255)

# Only formats a browser produces. Pillow also speaks EPS (which shells out to
# Ghostscript), PSD, FITS... none of which a demo should parse from strangers.
FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "ICO")
FORMAT_LIST = "PNG, JPEG, WebP, GIF, BMP, TIFF..."

NOT_AN_IMAGE = f"This file is not an image Pillow can read ({FORMAT_LIST})"
CORRUPT = "The image file is truncated or corrupt"
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
log = logging.getLogger(__name__)


class ImageDecodeError(ValueError):
    """A bad upload; str(err) is one user-facing sentence."""


def load_image(source, *, max_side: int | None = DISPLAY_MAX_SIDE) -> Image.Image:
    """Any upload -> a fresh, upright, 8-bit RGB PIL image.

    `source`: bytes, a path (str/PathLike, or a `data:` URL), a binary
    file-like object, a PIL image or a numpy array (H,W), (H,W,1), (H,W,3),
    (H,W,4) of uint8/uint16/int/float/bool (floats: 0-255, see above). Images
    larger than `max_side` (None = keep full size) are downscaled: the result
    is for display and for `to_model_input`, and huge JPEGs then decode at
    1/2-1/8 scale (`draft`).
    """
    if source is None:
        raise ImageDecodeError("No image was provided; please upload an image")
    if isinstance(source, Image.Image):
        return _finish(source, max_side)
    if isinstance(source, np.ndarray):
        return _finish(_array_to_image(source), max_side)
    data = _read_bytes(source)
    _check_bytes(data)
    try:
        # Pillow warns (and errors at 2x) on huge headers; make both ours.
        # catch_warnings is process-global, so keep the block to the cheap
        # header parse.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_formats())
    except UnidentifiedImageError:
        raise ImageDecodeError(_unidentified_message(data)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(_bomb_message(str(err))) from None
    except Exception as err:  # plugins raise SyntaxError, struct.error, ...
        raise ImageDecodeError(CORRUPT) from err
    with image:
        _check_size(*image.size)
        if max_side and image.format in ("JPEG", "MPO"):
            image.draft(image.mode, (max_side, max_side))  # DCT-domain downscale
        return _finish(image, max_side)


def to_model_input(image, size: int = 32) -> np.ndarray:
    """RGB image (or any `load_image` source) -> (size, size, 3) uint8.

    Centre-crops to a square first: CIFAR images are square with the object
    centred, so squashing (distorts shapes) or letterboxing (adds borders the
    model never saw) both hurt more than losing the edges. Downscaling is one
    antialiased LANCZOS pass (load_image already capped the side at 1024 px);
    tiny images are upscaled with BICUBIC.
    """
    if not (isinstance(image, Image.Image) and image.mode == "RGB"):
        image = load_image(image)
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    box = (left, top, left + side, top + side)
    if side > size:
        # One LANCZOS pass (no box pre-reduction): measured closest to the original
        # pixels on re-encoded CIFAR uploads (benchmarks/accuracy.py --uploads).
        out = image.resize((size, size), Image.Resampling.LANCZOS, box=box)
    elif side < size:
        out = image.resize((size, size), Image.Resampling.BICUBIC, box=box)
    else:
        out = image.crop(box)
    return np.array(out, dtype=np.uint8)


def prepare(source, size: int = 32, *, max_side: int | None = DISPLAY_MAX_SIDE):
    """Upload -> (display image, model input), the pair the app needs."""
    display = load_image(source, max_side=max_side)
    return display, to_model_input(display, size)


# --------------------------------------------------------------- reading bytes

def _read_bytes(source) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, str) and source.startswith("data:"):
        return _decode_data_url(source)
    if isinstance(source, (str, os.PathLike)):
        return _read_file(os.fspath(source))
    if hasattr(source, "read"):
        data = source.read(MAX_UPLOAD_BYTES + 1)  # never slurp an endless stream
        if isinstance(data, str):
            raise TypeError("open image files in binary mode ('rb')")
        return bytes(data or b"")
    raise TypeError(f"unsupported image source type: {type(source).__name__}")


def _read_file(path: str) -> bytes:
    try:
        size = os.path.getsize(path)  # refuse before reading a 10 GB file
        if size > MAX_UPLOAD_BYTES:
            raise ImageDecodeError(_too_big(size))
        with open(path, "rb") as f:
            return f.read(MAX_UPLOAD_BYTES + 1)
    except FileNotFoundError:
        raise ImageDecodeError("The uploaded file could not be found") from None
    except OSError as err:  # a directory, no permission, ...
        raise ImageDecodeError("The uploaded file could not be read") from err


def _decode_data_url(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if len(payload) * 3 // 4 > MAX_UPLOAD_BYTES:
        raise ImageDecodeError(_too_big(len(payload) * 3 // 4))
    if not header.endswith(";base64"):
        raise ImageDecodeError("Only base64 data URLs are supported")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError("The data URL is not valid base64") from None


def _too_big(size: int) -> str:
    return (f"The file is too large ({size / 2**20:.1f} MB; "
            f"the limit is {MAX_UPLOAD_BYTES / 2**20:g} MB)")


def _check_bytes(data: bytes) -> None:
    if not data:
        raise ImageDecodeError("The file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageDecodeError(_too_big(len(data)))
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (
            head.startswith((b"<?xml", b"<!doctype svg", b"<!--")) and b"<svg" in head):
        raise ImageDecodeError(
            "SVG is a vector format; please upload a raster image (PNG/JPEG)")


def _unidentified_message(data: bytes) -> str:
    """Name the common mistakes (iPhone HEIC, a saved web page, a PDF)."""
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return ("HEIC/HEIF photos (the iPhone default) are not supported; "
                "please upload a JPEG or PNG")
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return ("This is a web page (HTML), not an image; save the image itself "
                "and upload that")
    if head.startswith(b"%pdf"):
        return f"This is a PDF document, not an image ({FORMAT_LIST})"
    if _is_text(data[:1024]):
        return f"This is a text file, not an image ({FORMAT_LIST})"
    return NOT_AN_IMAGE


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # a multi-byte char cut at the end is fine
            return False
        text = head[:err.start].decode("utf-8")
    return len(text) >= 16 and all(c.isprintable() or c in "\t\r\n\f" for c in text)


def _bomb_message(pillow_message: str) -> str:
    match = re.search(r"\((\d+) pixels\)", pillow_message)
    size = f"{int(match.group(1)) / 1e6:.0f} megapixels; " if match else ""
    return f"The image is too large ({size}the limit is {MAX_PIXELS / 1e6:g} megapixels)"


@functools.lru_cache(maxsize=1)
def _formats() -> tuple[str, ...]:
    Image.init()  # Image.open raises KeyError for a format that is not built in
    return tuple(f for f in FORMATS if f in Image.OPEN)


# -------------------------------------------------------------- pixel handling

def _check_size(w: int, h: int) -> None:
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ImageDecodeError(f"The image is too small ({w} x {h} pixels)")
    if w * h > MAX_PIXELS:
        raise ImageDecodeError(f"The image is too large ({w} x {h} pixels; "
                               f"the limit is {MAX_PIXELS / 1e6:g} megapixels)")
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise ImageDecodeError(
            f"The image is too long and thin ({w} x {h} pixels); the model looks "
            f"at a square centre crop, so it needs an aspect ratio of at most "
            f"{MAX_ASPECT_RATIO:g}:1")


def _finish(image: Image.Image, max_side: int | None) -> Image.Image:
    """Size check, decode (first frame/page), orient, RGB, display size."""
    _check_size(*image.size)
    try:
        image.load()  # lazy until now: truncation and corruption surface here
    except MemoryError:
        raise ImageDecodeError("The image is too large to decode on this server") from None
    except Exception as err:
        raise ImageDecodeError(CORRUPT) from err
    # Orientation survives the reduce below: Pillow applies a TIFF's Orientation tag
    # inside load() (and then drops it), and reduce() copies `info`, where the EXIF
    # and XMP of JPEG/PNG/WebP live (tests: test_large_tiff_keeps_its_orientation).
    if max_side and image.mode in ("RGB", "RGBA", "L", "LA") and "transparency" not in image.info:
        # An integer box downscale first, as resize(reducing_gap=3) would do
        # later anyway: the orientation and colour copies below then hold a
        # fraction of a 50-megapixel image's memory.
        factor = max(image.size) // (3 * max_side)
        if factor > 1:
            image = image.reduce(factor)
    image = _to_rgb(_exif_transpose(image))
    w, h = image.size
    if max_side and max(w, h) > max_side:
        scale = max_side / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def _exif_transpose(image: Image.Image) -> Image.Image:
    """Phones store pixels sideways plus an EXIF rotation tag; honour it."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF must not block an otherwise good photo
        log.warning("ignoring unreadable EXIF orientation", exc_info=True)
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB (always a new image, never the caller's).

    Alpha is composited onto white: transparent pixels usually store RGB
    (0, 0, 0), so simply dropping alpha turns cut-out backgrounds black, the
    classic bug. White is how a browser shows them on a light page.
    """
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # Pillow's own I;16 -> L conversion clips at 255 (all-white images).
        image = Image.fromarray(_to_uint8(np.asarray(image), float_file=True))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        out = Image.new("RGB", rgba.size, BACKGROUND)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    try:
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    except (ValueError, OSError) as err:
        raise ImageDecodeError(
            f"The image uses a colour mode ({image.mode}) that cannot be shown as RGB") from err


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageDecodeError(f"Expected an image array of shape (H, W), (H, W, 3) or "
                               f"(H, W, 4), got {tuple(array.shape)}")
    _check_size(array.shape[1], array.shape[0])
    return Image.fromarray(np.ascontiguousarray(_to_uint8(array)))


def pixels_uint8(array) -> np.ndarray:
    """0-255 pixel values of any dtype -> uint8: the package's one convention.

    uint8 is returned as is; floats and ints are rounded and clipped; bool is
    0/255. Floats within [-1, 1] (not all zero) raise ImageDecodeError (a
    ValueError): see the module docstring.
    """
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind == "u" and array.dtype.itemsize == 1:
        return array
    if kind == "b":
        return array.astype(np.uint8) * 255
    if kind not in "uif":
        raise ImageDecodeError(f"Unsupported pixel type {array.dtype}")
    if kind == "f":
        if not np.isfinite(array).all():
            raise ImageDecodeError("Pixel values must be finite numbers from 0 to 255")
        if array.size and np.abs(array).max() <= 1 and array.any():
            raise ImageDecodeError(
                "Float pixels must be 0-255 values, as the model takes them; these all lie "
                "within [-1, 1], so they look 0-1 scaled: multiply by 255 first")
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _to_uint8(array: np.ndarray, float_file: bool = False) -> np.ndarray:
    """Pixel values -> 0-255: floats as `pixels_uint8`, ints by their container's range.

    Decoded float files (`float_file`) instead use 0-1 as full scale and are
    stretched when outside 0-255, never clipped. uint16 (16-bit PNG/TIFF) is
    divided by 257 so 65535 -> 255 and exposure is kept; ints already in
    [0, 255] are kept (e.g. Pillow 'I' holding 8-bit data); wider ints within
    [0, 65535] are treated as 16-bit; anything else is min-max stretched.
    """
    kind, itemsize = array.dtype.kind, array.dtype.itemsize
    if kind == "b" or (kind == "u" and itemsize == 1) or (kind == "f" and not float_file):
        return pixels_uint8(array)
    if kind == "u" and itemsize == 2:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if kind not in "uif":
        raise ImageDecodeError(f"Unsupported pixel type {array.dtype}")
    x = array.astype(np.float32)
    if kind == "f" and not np.isfinite(x).all():
        x = np.where(np.isfinite(x), x, 0.0)
    lo, hi = float(x.min()), float(x.max())
    if kind == "f" and lo >= 0 and hi <= 1:
        x = x * 255
    elif lo >= 0 and hi <= 255:
        pass
    elif kind in "ui" and lo >= 0 and hi <= 65535:
        x = x / 257
    else:
        x = (x - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(x)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
