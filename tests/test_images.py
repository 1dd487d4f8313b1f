"""Tests for vit.images: every awkward upload is decoded or cleanly refused."""

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

import upload_corpus as uc
from vit import images
from vit.images import ImageDecodeError, load_image, prepare, to_model_input


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return uc.make_bad_upload_corpus(tmp_path_factory.mktemp("uploads"))


def rgb(source, **kwargs) -> np.ndarray:
    image = load_image(source, **kwargs)
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def assert_refused(source, keyword):
    with pytest.raises(ImageDecodeError) as info:
        load_image(source)
    message = str(info.value)
    assert keyword in message.lower(), message
    assert "\n" not in message and "Traceback" not in message and len(message) < 200


# ------------------------------------------------------------------ the corpus

def test_corpus_is_cheap(tmp_path):
    start = time.perf_counter()
    paths = uc.make_bad_upload_corpus(tmp_path)
    assert time.perf_counter() - start < 2
    assert set(paths) == set(uc.EXPECTED)
    assert all(p.stat().st_size < 200_000 for p in paths.values())


@pytest.mark.parametrize("name", list(uc.CASES))
@pytest.mark.parametrize("kind", ["path", "str", "bytes", "file"])
def test_corpus_expectations(corpus, name, kind):
    path = corpus[name]
    source = {"path": path, "str": str(path), "bytes": path.read_bytes(),
              "file": io.BytesIO(path.read_bytes())}[kind]
    expected = uc.EXPECTED[name]
    if expected is None:
        image = load_image(source)
        assert image.mode == "RGB" and min(image.size) >= 1
        assert to_model_input(image).shape == (32, 32, 3)
    else:
        assert_refused(source, expected)


def test_huge_header_is_refused_without_decoding(corpus):
    start = time.perf_counter()
    assert_refused(corpus["huge_30000x30000.png"], "too large")
    assert time.perf_counter() - start < 2


def test_over_limit_below_pillow_bomb_threshold_names_the_size():
    # 64 MP: above our 50 MP limit but below Pillow's own warning threshold.
    assert_refused(uc.huge_png(8000, 8000), "8000 x 8000")


def test_byte_limit(monkeypatch, tmp_path):
    data = uc.encode(uc.photo(), "PNG")
    monkeypatch.setattr(images, "MAX_UPLOAD_BYTES", len(data) - 1)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data)):
        assert_refused(source, "too large")


# ---------------------------------------------------------------- pixel checks

def test_exif_orientation_is_applied(corpus):
    pixels = rgb(corpus["exif_rotated.jpg"])
    assert pixels.shape == (64, 32, 3)  # stored 64 wide x 32 high
    top_right, top_left = pixels[2:6, 26:30].mean((0, 1)), pixels[2:6, 2:6].mean((0, 1))
    assert top_right[0] > 200 and top_right[1] < 80  # the red marker
    assert abs(top_left - 200).max() < 20


def test_transparency_becomes_white_not_black(corpus):
    pixels = rgb(corpus["rgba_transparent.png"])
    assert (pixels[:, 20:] == 255).all()
    assert (pixels[:, :12] == (255, 0, 0)).all()
    pixels = rgb(corpus["palette_transparent.png"])
    assert (pixels[:, :16] == 255).all() and (pixels[:, 16:] == (0, 0, 255)).all()


def test_sixteen_bit_is_scaled_not_clipped(corpus):
    pixels = rgb(corpus["sixteen_bit.png"])
    row = pixels[0, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[128] - 128) <= 2  # 32896/65535: mid-grey, not saturated white
    assert (np.diff(row) >= 0).all()


def test_other_modes(corpus):
    gray = rgb(corpus["grayscale.png"])
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    cmyk = rgb(corpus["cmyk.jpg"]).mean((0, 1))
    assert cmyk[0] > 220 and cmyk[1] < 40 and cmyk[2] < 40
    assert (rgb(corpus["animated.gif"]) == uc.RED).all()
    assert (rgb(corpus["multipage.tiff"]) == uc.GREEN).all()


def test_one_pixel_image_upsamples(corpus):
    model_input = to_model_input(load_image(corpus["one_pixel.png"]))
    assert model_input.shape == (32, 32, 3)
    assert (model_input == (10, 200, 30)).all()


def test_moderate_panorama_is_accepted():
    assert load_image(Image.new("RGB", (1000, 100))).size == (1000, 100)


# ------------------------------------------------------------ other sources

def test_numpy_sources():
    assert rgb(np.full((4, 5), 7, np.uint8)).shape == (4, 5, 3)
    assert (rgb(np.full((4, 4, 1), 65535, np.uint16)) == 255).all()
    assert (rgb(np.full((4, 4), 32768, np.uint16)) == 128).all()
    assert (rgb(np.full((4, 4, 3), 127.6, np.float32)) == 128).all()  # floats are 0-255
    assert (rgb(np.ones((4, 4), bool)) == 255).all()
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    assert (rgb(rgba) == 255).all()
    for shape, keyword in [((3, 8, 8), "shape"), ((0, 5), "too small"), ((5,), "shape")]:
        assert_refused(np.zeros(shape, np.uint8), keyword)


def test_one_float_convention_0_to_255():
    """Floats mean 0-255 everywhere (the model's own input); 0-1 floats are refused."""
    for unit in (np.full((4, 4, 3), 0.5), np.linspace(-1, 1, 48).reshape(4, 4, 3)):
        assert_refused(unit, "multiply by 255")
        with pytest.raises(ValueError, match="multiply by 255"):
            images.pixels_uint8(unit)
    pixels = np.array([[[0.0, 127.6, 255.0], [-3.0, 260.0, 1.4]]])
    want = np.array([[[0, 128, 255], [0, 255, 1]]], np.uint8)
    np.testing.assert_array_equal(rgb(np.broadcast_to(pixels, (2, 2, 3)))[:1], want)
    np.testing.assert_array_equal(images.pixels_uint8(pixels), want)
    assert (rgb(np.zeros((4, 4, 3))) == 0).all()  # black either way: not ambiguous
    assert_refused(np.full((4, 4, 3), np.nan), "finite")
    # a 32-bit float TIFF (mode F) is a file: 0-1 is its format's full scale
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    tiff = rgb(uc.encode(Image.fromarray(ramp, "F"), "TIFF"))
    assert tiff[0, 0, 0] == 0 and tiff[-1, -1, 0] == 255


def quadrants(width: int, height: int) -> Image.Image:
    """Four colours: any rotation or flip of it is visible."""
    pixels = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    pixels[:h, :w], pixels[:h, w:], pixels[h:, :w], pixels[h:, w:] = (
        uc.RED, uc.GREEN, uc.BLUE, (255, 255, 0))
    return Image.fromarray(pixels)


@pytest.mark.parametrize("size", [(200, 100), (6400, 3200)])  # the large one is reduced first
@pytest.mark.parametrize("orientation, stored", [(6, Image.Transpose.ROTATE_90),
                                                 (3, Image.Transpose.ROTATE_180)])
def test_large_tiff_keeps_its_orientation(size, orientation, stored):
    exif = Image.Exif()
    exif[0x0112] = orientation  # "turn it this way to view"; the pixels are stored turned back
    tiff = uc.encode(quadrants(*size).transpose(stored), "TIFF", exif=exif,
                     compression="tiff_deflate")
    display, model_input = prepare(tiff)
    assert display.size == (min(size[0], 1024), min(size[1], 512))
    small_png = to_model_input(load_image(uc.encode(quadrants(64, 32), "PNG")))
    assert np.abs(model_input.astype(int) - small_png).mean() < 3


def test_pil_sources_are_copied_and_checked():
    source = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    result = load_image(source)
    assert result is not source and source.mode == "RGBA"
    assert (np.asarray(result) == 255).all()
    lazy = Image.open(io.BytesIO(uc.truncated_jpeg()))
    assert_refused(lazy, "truncated")


def test_data_url_and_missing_inputs(tmp_path):
    data = uc.encode(Image.new("RGB", (4, 4), uc.BLUE), "PNG")
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert (rgb(url) == uc.BLUE).all()
    assert_refused("data:image/png;base64,@@@", "base64")
    assert_refused(None, "no image")
    assert_refused(tmp_path / "missing.png", "not be found")
    assert_refused(tmp_path, "not be read")
    with pytest.raises(TypeError):
        load_image(12345)


# ------------------------------------------------------------- model input

def test_model_input_shape_and_solid_colour():
    big = Image.new("RGB", (3000, 2000), (40, 120, 200))
    out = to_model_input(big)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (np.abs(out.astype(int) - (40, 120, 200)) <= 1).all()
    assert to_model_input(big, size=24).shape == (24, 24, 3)


def test_downscale_is_antialiased():
    checker = (np.indices((1024, 1024)).sum(0) % 2 * 255).astype(np.uint8)
    out = to_model_input(Image.fromarray(checker).convert("RGB"))
    assert np.abs(out.astype(int) - 127.5).max() < 8  # mid-grey, not aliased


def test_centre_crop():
    thirds = np.zeros((32, 96, 3), np.uint8)
    thirds[:, :32], thirds[:, 32:64], thirds[:, 64:] = uc.RED, uc.GREEN, uc.BLUE
    assert (to_model_input(Image.fromarray(thirds)) == uc.GREEN).all()


def test_prepare_limits_display_size():
    jpeg = uc.encode(uc.photo((3000, 2000)), "JPEG", quality=90)
    display, model_input = prepare(jpeg)
    assert display.size == (1024, 683) and display.mode == "RGB"
    assert model_input.shape == (32, 32, 3) and model_input.dtype == np.uint8
    assert load_image(jpeg, max_side=None).size == (3000, 2000)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_big_images_are_box_reduced_first_without_changing_what_the_model_sees(mode,
                                                                              monkeypatch):
    y, x = np.mgrid[0:4000, 0:6400]
    texture = ((x // 40 + y // 40) % 2 * 100 + ((x + 2 * y) % 7 == 0) * 80)[..., None]
    rgb = (np.asarray(uc.photo((6400, 4000)), np.int32) // 2 + texture).clip(0, 255)
    photo = Image.fromarray(rgb.astype(np.uint8)).convert(mode)  # over 3 x 1024: reduced 2x
    png = uc.encode(photo, "PNG", compress_level=1)
    reduced = []
    original_reduce = Image.Image.reduce

    def spy(self, factor, *args, **kwargs):
        reduced.append((self.size, factor))
        return original_reduce(self, factor, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "reduce", spy)
    display, model_input = prepare(png)
    # first (before any full-size copy) a 2x box reduction of the decoded image
    assert reduced and reduced[0] == ((6400, 4000), 2)
    assert display.size == (1024, 640) and display.mode == "RGB"
    # the same upload through the full-resolution path
    reference = to_model_input(load_image(png, max_side=None))
    diff = np.abs(model_input.astype(int) - reference)
    assert diff.mean() < 1.0 and diff.max() <= 6, (diff.mean(), diff.max())


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns on mangled metadata
def test_mangled_files_only_raise_image_decode_error():
    """Light fuzzing: truncate / flip bytes of valid files of every format."""
    rng = np.random.default_rng(0)
    seeds = [build() for build, expect in uc.CASES.values() if expect is None]
    for i in range(400):
        data = bytearray(seeds[i % len(seeds)])
        if i % 3 == 0:
            data = data[: rng.integers(1, len(data))]
        else:
            for _ in range(rng.integers(1, 10)):
                data[rng.integers(len(data))] = rng.integers(256)
        try:
            load_image(bytes(data))
        except ImageDecodeError as err:
            assert "\n" not in str(err)
