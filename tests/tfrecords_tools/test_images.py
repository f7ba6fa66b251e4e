import io

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from tfrecords_tools.images import ImageOptions, dct_scale, reencode, reencode_with_pillow
from tfrecords_tools.sample import class_image


@pytest.fixture(scope="module")
def pixels():
    return class_image(3, 10, np.random.default_rng(1), size=(300, 420))


def _encode(pixels, fmt="JPEG", mode="RGB"):
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


def _decode(outcome):
    image = Image.open(io.BytesIO(outcome.encoded))
    assert (image.format, image.mode) == ("JPEG", "RGB")
    assert image.size == (outcome.width, outcome.height)
    return np.asarray(image, np.float32)


def test_centre_crop_is_as_good_as_a_full_resolution_decode(pixels):
    """The reduced-scale JPEG decode (draft) must not degrade what the network sees."""
    data = _encode(pixels)
    outcome = reencode(data, ImageOptions(size=64))
    assert (outcome.height, outcome.width, outcome.repaired, outcome.skipped) == (64, 64, "", "")
    reference = np.asarray(Image.fromarray(pixels).crop((60, 0, 360, 300))
                           .resize((64, 64), Image.LANCZOS), np.float32)
    full_decode = Image.open(io.BytesIO(data)).crop((60, 0, 360, 300)).resize((64, 64))
    full_decode = _decode(reencode(_encode(np.asarray(full_decode)), ImageOptions(size=64)))
    ours = np.abs(_decode(outcome) - reference).mean()
    assert ours < 1.1 * np.abs(full_decode - reference).mean() + 0.5


def test_no_crop_keeps_the_aspect_ratio_and_upscales_small_images(pixels):
    outcome = reencode(_encode(pixels), ImageOptions(size=150, crop=False))
    assert (outcome.height, outcome.width) == (150, 210)
    small = reencode(_encode(pixels[:50, :80]), ImageOptions(size=100, crop=True))
    assert (small.height, small.width) == (100, 100)


@pytest.mark.parametrize(("fmt", "mode", "repair"), [
    ("PNG", "RGB", "PNG data re-encoded as JPEG"),
    ("JPEG", "CMYK", "CMYK converted to RGB"),
    ("JPEG", "L", "L converted to RGB"),
    ("PNG", "P", "PNG data re-encoded as JPEG; P converted to RGB"),
])
def test_quirks_are_repaired_from_the_bytes(pixels, fmt, mode, repair):
    outcome = reencode(_encode(pixels, fmt, mode), ImageOptions(size=64))
    assert outcome.repaired == repair
    assert not outcome.skipped
    plain = _decode(reencode(_encode(pixels), ImageOptions(size=64)))
    repaired = _decode(outcome)
    if mode == "L":
        assert np.abs(repaired[..., 0] - repaired[..., 2]).max() < 8  # gray stays gray
    else:
        assert np.abs(repaired - plain).mean() < 10  # colours survive the round trip


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "zero-byte member"),
    # No object address in the reason: manifests of identical runs must be identical.
    (b"GIF89a garbage" * 3, "undecodable: not an image format Pillow knows"),
])
def test_bad_bytes_are_skipped_with_their_reason(data, reason):
    outcome = reencode(data, ImageOptions(size=64))
    assert outcome.skipped == reason and outcome.encoded == b""


def test_truncated_jpeg_is_skipped(pixels):
    data = _encode(pixels)
    outcome = reencode(data[: len(data) // 2], ImageOptions(size=64))
    assert "truncated" in outcome.skipped


def _smooth(height, width):
    """Smooth colour waves and one hard-edged disc: no noise, so that a misplaced crop
    window or a blurred edge shows in the error."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([np.sin(9 * x + 4 * y), np.cos(7 * y - 5 * x), np.sin(11 * (x + y))], -1)
    image = image * 90 + 128
    image[(y - 0.3) ** 2 + (x - 0.45) ** 2 < 0.04] = (230, 40, 60)
    return image.astype(np.uint8)


@pytest.mark.parametrize(("height", "width", "scale"), [
    (200, 240, 8),  # smaller than the output: upscaled
    (300, 420, 8),  # bilinear alone takes 300 to 256
    (330, 420, 7),
    (380, 500, 6),
    (450, 600, 5),
    (600, 800, 4),
    (800, 900, 3),
    (1300, 1400, 2),  # the remaining resize is large enough to need antialiasing
])
def test_dct_scaled_decode_is_as_good_as_pillows_path(height, width, scale):
    """A YCbCr JPEG decodes at scale/8 in the IDCT, then is resized the rest of the way:
    the geometry is exact and the output is as close to a float reference as Pillow's
    path (a full-size or 1/2, 1/4, 1/8 decode and an antialiased resize)."""
    assert dct_scale(width, height, 256) == scale
    pixels = _smooth(height, width)
    data = _encode(pixels)
    shorter = min(height, width)
    box = ((width - shorter) / 2, (height - shorter) / 2,
           (width + shorter) / 2, (height + shorter) / 2)
    reference = np.asarray(Image.fromarray(pixels).resize((256, 256), Image.LANCZOS, box=box),
                           np.float32)
    pillow_error = np.abs(_decode(reencode_with_pillow(data, ImageOptions(size=256)))
                          - reference).mean()
    outcome = reencode(data, ImageOptions(size=256))
    assert (outcome.height, outcome.width, outcome.repaired) == (256, 256, "")
    assert np.abs(_decode(outcome) - reference).mean() < 1.1 * pillow_error + 0.1
    uncropped = reencode(data, ImageOptions(size=256, crop=False))
    assert (uncropped.height, uncropped.width) == (256, round(width * 256 / height))


def test_jpeg_that_libjpeg_turbo_warns_about_is_converted_by_pillow(pixels):
    """Strict decoding refuses corrupt entropy data that Pillow decodes: Pillow's path
    converts it, as the converter did before the fast path."""
    data = _encode(pixels)
    scan = data.index(b"\xff\xda")
    for offset in range(scan + 100, len(data) - 2, 97):
        corrupt = bytearray(data)
        corrupt[offset] ^= 0x55
        try:
            simplejpeg.decode_jpeg(bytes(corrupt))
        except ValueError:
            break
    else:
        pytest.fail("no corruption found that libjpeg-turbo only warns about")
    outcome = reencode(bytes(corrupt), ImageOptions(size=256))
    assert (outcome.height, outcome.width, outcome.skipped) == (256, 256, "")
    assert outcome == reencode_with_pillow(bytes(corrupt), ImageOptions(size=256))


def test_16_bit_grey_png_is_scaled_to_8_bits_not_clipped():
    levels = np.array([0, 32896, 65535], np.uint16)  # 0, 128 and 255 times 257
    pixels = np.repeat(levels, 40)[None, :].repeat(120, axis=0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "I;16"
    outcome = reencode(buffer.getvalue(), ImageOptions(size=120, crop=False))
    decoded = np.asarray(Image.open(io.BytesIO(outcome.encoded)), np.float64)
    # The middle of each band, away from JPEG's ringing at the edges.
    assert [round(decoded[60, x].mean()) for x in (20, 60, 100)] == pytest.approx(
        [0, 128, 255], abs=2)
