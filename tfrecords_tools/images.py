"""Decode, repair, resize and re-encode one image: the work done in the worker processes.

Only Pillow and the standard library are imported here, so a worker process starts in
a fraction of a second.  The format and the colour space come from the bytes, never from
the member's name: ILSVRC-2012 has a PNG named .JPEG, CMYK and grayscale JPEGs.
"""

from __future__ import annotations

import dataclasses
import io

import PIL
from PIL import Image, features

# Truncated images must fail, not come back half grey.
Image.LOAD_TRUNCATED_IMAGES = False

#: The shards' bytes depend on the codec: machines sharing a job must agree on it.
CODEC = (f"Pillow {PIL.__version__}, libjpeg {features.version('jpg')}"
         f" (libjpeg-turbo {features.version('libjpeg_turbo')})")


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How the shards' images are made [paper §2]."""

    size: int = 256  # the shorter side is rescaled to this
    crop: bool = True  # then the central size x size patch is kept
    quality: int = 90  # JPEG quality of the re-encoded image


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The re-encoded RGB JPEG, or why the image was skipped."""

    encoded: bytes = b""
    height: int = 0
    width: int = 0
    repaired: str = ""  # what was changed to make it an RGB JPEG, "" if nothing
    skipped: str = ""  # why the image is not in the shards, "" if it is


def _geometry(width: int, height: int, options: ImageOptions):
    """Output size and the source box it is resampled from."""
    shorter = min(width, height)
    if options.crop:
        left, top = (width - shorter) / 2, (height - shorter) / 2
        return (options.size, options.size), (left, top, left + shorter, top + shorter)
    scale = options.size / shorter
    size = (max(options.size, round(width * scale)), max(options.size, round(height * scale)))
    return size, (0, 0, width, height)


def reencode(data: bytes, options: ImageOptions) -> Outcome:
    """One archive member's bytes as an RGB JPEG of the configured geometry."""
    if not data:
        return Outcome(skipped="zero-byte member")
    try:
        image = Image.open(io.BytesIO(data))
        repairs = []
        if image.format != "JPEG":
            repairs.append(f"{image.format} data re-encoded as JPEG")
        if image.mode != "RGB":
            repairs.append(f"{image.mode} converted to RGB")
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers the output (the
        # IDCT does the downscaling), and an RGB JPEG stays in its YCbCr: resampling
        # commutes with that affine colour transform, and the encoder wants YCbCr anyway.
        scale = options.size / min(image.size)
        request = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image.draft("YCbCr" if image.format == "JPEG" and image.mode == "RGB" else image.mode,
                    request)
        image.load()
    # Any failure of any decoder on any bytes must cost one image, never the run.
    except Exception as error:
        return Outcome(skipped=f"undecodable: {type(error).__name__}: {error}")
    try:
        if image.mode not in ("RGB", "YCbCr"):
            image = image.convert("RGB")
        out_size, box = _geometry(*image.size, options)
        image = image.resize(out_size, Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=options.quality)
    except Exception as error:
        return Outcome(skipped=f"cannot convert to RGB: {type(error).__name__}: {error}")
    return Outcome(buffer.getvalue(), out_size[1], out_size[0], "; ".join(repairs))
