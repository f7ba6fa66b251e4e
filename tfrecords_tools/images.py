"""Decode, repair, resize and re-encode one image: the work done in the worker processes.

Only the image libraries and the standard library are imported here, so a worker
process starts in a fraction of a second.  The format and the colour space come from
the bytes, never from the member's name: ILSVRC-2012 has a PNG named .JPEG, CMYK and
grayscale JPEGs, and ILSVRC-2010 gzip-compressed JPEGs (decompressed here, as the Fuel
converter does when the bytes do not decode).

Almost every image is a YCbCr JPEG and takes the fast path (simplejpeg, OpenCV):
libjpeg-turbo decodes it at the M/8 scale (M = 1..8) that leaves the shorter side just
above the output size, so the IDCT does most of the downscaling and bilinear without
antialiasing does the rest; the crop window snaps to whole pixels of the decoded image
(at most half a pixel off centre).  Everything else (PNG, CMYK, grayscale, JPEGs that
libjpeg-turbo warns about) takes Pillow's path, with an antialiased resize.
"""

from __future__ import annotations

import dataclasses
import io
import zlib

import cv2
import numpy as np
import PIL
import simplejpeg
from PIL import Image, ImageFile, features

#: The shards' bytes depend on the codecs: machines sharing a job must agree on them.
CODEC = (f"simplejpeg {simplejpeg.__version__}, OpenCV {cv2.__version__}, "
         f"Pillow {PIL.__version__}, libjpeg {features.version('jpg')}"
         f" (libjpeg-turbo {features.version('libjpeg_turbo')})")

def configure_worker_process() -> None:
    """The image libraries' settings of a converter worker process (never set on import:
    a program importing this module keeps its own)."""
    # Truncated images must fail, not come back half grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # One thread per worker process: the processes already use every core.
    cv2.setNumThreads(1)


#: The most bytes a gzip-compressed member may decompress to (ImageNet's largest JPEGs
#: are a few MB): a damaged or hostile member costs one image, not a worker's memory.
MAX_GUNZIPPED = 64 << 20
_GZIP_MAGIC = b"\x1f\x8b"

#: Below this scale a resize needs antialiasing; from it up, bilinear alone loses little.
_BILINEAR_ALONE = 0.8


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


def dct_scale(width: int, height: int, size: int) -> int:
    """The M of the M/8 scale to decode at: the smallest that keeps the shorter side at
    least `size`, or 8 where bilinear alone can take it the rest of the way (the full
    size IDCT is in SIMD, the scaled ones are not, and cost more)."""
    shorter = min(width, height)
    if size / shorter >= _BILINEAR_ALONE:
        return 8
    return next(m for m in range(1, 8) if shorter * m >= size * 8)


def _reencode_jpeg(data: bytes, options: ImageOptions) -> Outcome | None:
    """The fast path for a YCbCr JPEG; None sends the image to Pillow's path."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace != "YCbCr":
            return None
        m = dct_scale(width, height, options.size)
        # libjpeg-turbo rounds the scaled size up: the image content spans width * m / 8.
        pixels = simplejpeg.decode_jpeg(data, "RGBX", min_height=-(-height * m // 8),
                                        min_width=-(-width * m // 8))
    # Strict decoding fails on any libjpeg warning (truncation, corrupt data): Pillow
    # then decides, and words the reason.
    except Exception:
        return None
    out_size, box = _geometry(width, height, options)
    box = tuple(edge * m / 8 for edge in box)
    left, top, right, bottom = (round(edge) for edge in box)  # whole pixels, for cv2
    if min(out_size[0] / (right - left), out_size[1] / (bottom - top)) >= _BILINEAR_ALONE:
        # The bit-exact variant, so that every machine of a job writes the same bytes.
        resized = cv2.resize(pixels[top:bottom, left:right], out_size,
                             interpolation=cv2.INTER_LINEAR_EXACT)
    else:  # over 1024 pixels, where the steps between DCT scales are too coarse
        resized = np.asarray(Image.fromarray(pixels[..., :3]).resize(
            out_size, Image.Resampling.BILINEAR, box=box, reducing_gap=3.0).convert("RGBX"))
    encoded = simplejpeg.encode_jpeg(resized, options.quality, "RGBX", "420", fastdct=False)
    return Outcome(encoded, out_size[1], out_size[0])


def reencode_with_pillow(data: bytes, options: ImageOptions) -> Outcome:
    """Pillow's path, for any format and colour mode (converted to RGB and recorded).

    Decodes at full size, or at 1/2, 1/4, 1/8 scale, and resizes with antialiasing:
    slower than `reencode`'s path for YCbCr JPEGs, and the yardstick for its quality.
    """
    try:
        image = Image.open(io.BytesIO(data))
        repairs = []
        if image.format != "JPEG":
            repairs.append(f"{image.format} data re-encoded as JPEG")
        if image.mode != "RGB":
            repairs.append(f"{image.mode} converted to RGB")
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers the output, and
        # an RGB JPEG stays in its YCbCr: resampling commutes with that affine transform.
        scale = options.size / min(image.size)
        request = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image.draft("YCbCr" if image.format == "JPEG" and image.mode == "RGB" else image.mode,
                    request)
        image.load()
    except Image.UnidentifiedImageError:
        # Its own message names a BytesIO object's address, which would make two runs'
        # manifests differ.
        return Outcome(skipped="undecodable: not an image format Pillow knows")
    # Any failure of any decoder on any bytes must cost one image, never the run.
    except Exception as error:
        return Outcome(skipped=f"undecodable: {type(error).__name__}: {error}")
    try:
        if image.mode.startswith("I;16") or image.mode == "I":
            # 16-bit grey: Pillow's convert clips at 255; scale 0..65535 to 0..255 instead.
            wide = np.asarray(image, np.uint32) if image.mode != "I" else np.clip(
                np.asarray(image), 0, 65535).astype(np.uint32)
            image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
        if image.mode not in ("RGB", "YCbCr"):
            image = image.convert("RGB")
        out_size, box = _geometry(*image.size, options)
        image = image.resize(out_size, Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=options.quality)
    except Exception as error:
        return Outcome(skipped=f"cannot convert to RGB: {type(error).__name__}: {error}")
    return Outcome(buffer.getvalue(), out_size[1], out_size[0], "; ".join(repairs))


def reencode(data: bytes, options: ImageOptions) -> Outcome:
    """One archive member's bytes as an RGB JPEG of the configured geometry."""
    if not data:
        return Outcome(skipped="zero-byte member")
    if data.startswith(_GZIP_MAGIC):
        return _gunzip_and_reencode(data, options)
    return _reencode_image(data, options)


def _gunzip_and_reencode(data: bytes, options: ImageOptions) -> Outcome:
    """A gzip-compressed member, decompressed (recorded as a repair) and re-encoded."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the gzip container
    try:
        image = decompressor.decompress(data, MAX_GUNZIPPED)
    except zlib.error as error:
        return Outcome(skipped=f"undecodable: gzip data that does not decompress ({error})")
    if decompressor.unconsumed_tail:
        return Outcome(skipped=f"undecodable: gzip data of over {MAX_GUNZIPPED} bytes")
    if not decompressor.eof:
        return Outcome(skipped="undecodable: gzip data cut short")
    outcome = _reencode_image(image, options)
    if outcome.skipped:
        return dataclasses.replace(outcome, skipped=f"{outcome.skipped} (gzip-compressed)")
    repaired = "; ".join(filter(None, ("gzip-compressed data decompressed", outcome.repaired)))
    return dataclasses.replace(outcome, repaired=repaired)


def _reencode_image(data: bytes, options: ImageOptions) -> Outcome:
    if data.startswith(b"\xff\xd8"):
        outcome = _reencode_jpeg(data, options)
        if outcome is not None:
            return outcome
    return reencode_with_pillow(data, options)
