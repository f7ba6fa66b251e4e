import io

import numpy as np
import pytest
from PIL import Image

from tfrecords_tools.images import ImageOptions, reencode
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
    (b"GIF89a garbage" * 3, "undecodable: UnidentifiedImageError"),
])
def test_bad_bytes_are_skipped_with_their_reason(data, reason):
    outcome = reencode(data, ImageOptions(size=64))
    assert outcome.skipped.startswith(reason) and outcome.encoded == b""


def test_truncated_jpeg_is_skipped(pixels):
    data = _encode(pixels)
    outcome = reencode(data[: len(data) // 2], ImageOptions(size=64))
    assert "truncated" in outcome.skipped
