"""Images/s per core converting ILSVRC-sized JPEGs: tfrecords_tools vs an Inception-style converter.

The baseline follows the TensorFlow models Inception script (build_imagenet_data.py):
Python threads, each decoding, resizing (shorter side 256, centre 256x256 crop, as ours
does [paper §2]) and re-encoding with TensorFlow ops in a compiled graph, and writing its
own TFRecord shards, from images already extracted to disk (that extraction is not
timed).  Ours reads the nested train tar in place.  Both run in a child process pinned
to `--cores` CPUs; the timed span starts after the imports.  Besides images per
wall-clock second, it reports images per CPU-second (user + system time of the
process, its threads and its worker processes): on a shared machine, where a pinned
core is not ours alone, that is the steadier per-core figure.  Then the PSNR of each
converter's output, and of our previous (Pillow-only) path, against a float reference
on the first `--quality-images` images.

    python benchmarks/convert.py --images 1000 --cores 1 2 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

NUM_CLASSES = 10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="generated JPEGs")
    parser.add_argument("--cores", type=int, nargs="+", default=[1, os.cpu_count()],
                        help="CPU counts to pin each run to")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians are quoted")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--quality-images", type=int, default=100,
                        help="images whose PSNR against a float reference is reported")
    parser.add_argument("--child", nargs=3, metavar=("WHICH", "CORES", "WORKDIR"),
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def photo_like(rng, height: int, width: int):
    """A JPEG-compressible image with the statistics of a photo: smooth shading, edges and
    texture, not the white noise that would make JPEG coding unrealistically slow."""
    import numpy as np
    from PIL import Image

    coarse = rng.uniform(0, 255, size=(6, 8, 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32)
    y, x = np.mgrid[0:height, 0:width]
    for _ in range(4):  # a few objects with hard edges
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 120)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, size=3)
    image += rng.normal(0, 6, size=image.shape)  # sensor noise and texture
    return np.clip(image, 0, 255).astype(np.uint8)


def make_data(workdir: Path, count: int) -> None:
    """`count` JPEGs around ImageNet's average 400x350, as files and as a nested train tar."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    files = workdir / "extracted"
    inner_tars = {}
    for index in range(count):
        wnid = f"n{1440764 + index % NUM_CLASSES:08d}"
        height = int(np.clip(rng.normal(350, 70), 150, 600))
        width = int(np.clip(rng.normal(400, 80), 150, 700))
        buffer = io.BytesIO()
        Image.fromarray(photo_like(rng, height, width)).save(buffer, "JPEG", quality=90)
        (files / wnid).mkdir(parents=True, exist_ok=True)
        (files / wnid / f"{wnid}_{index}.JPEG").write_bytes(buffer.getvalue())
        inner_tars.setdefault(wnid, []).append((f"{wnid}_{index}.JPEG", buffer.getvalue()))
    with tarfile.open(workdir / "ILSVRC2012_img_train.tar", "w") as outer:
        for wnid, members in sorted(inner_tars.items()):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as archive:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(f"{wnid}.tar")
            info.size = inner.tell()
            outer.addfile(info, io.BytesIO(inner.getvalue()))


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_ours(workdir: Path, cores: int, size: int) -> tuple[float, float]:
    from tfrecords_tools.convert import convert

    output = Path(tempfile.mkdtemp(dir=workdir))
    start, cpu = time.perf_counter(), _cpu_seconds()
    convert(output, workdir, splits=["train"], train_shards=4 * cores, size=size,
            processes=cores, progress=False)
    return time.perf_counter() - start, _cpu_seconds() - cpu


def inception_process(size: int):
    """The baseline's per-image graph: decode, antialiased resize, centre crop, encode."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def process(data):
        image = tf.io.decode_jpeg(data, channels=3)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size / tf.reduce_min(shape)
        image = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32),
                                antialias=True)
        image = tf.image.resize_with_crop_or_pad(image, size, size)
        return tf.io.encode_jpeg(tf.cast(tf.round(image), tf.uint8), quality=90)

    return process


def run_inception_style(workdir: Path, cores: int, size: int) -> tuple[float, float]:
    """build_imagenet_data.py's structure: `cores` threads, each with its own shards."""
    import tensorflow as tf

    from tfrecords_tools import schema

    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)

    process = inception_process(size)

    files = sorted((workdir / "extracted").rglob("*.JPEG"))
    labels = {wnid: i for i, wnid in enumerate(sorted({f.parent.name for f in files}))}
    output = Path(tempfile.mkdtemp(dir=workdir))
    process(tf.constant(files[0].read_bytes()))  # trace once, as the Session graph is built

    def worker(thread: int) -> None:
        with tf.io.TFRecordWriter(str(output / f"train-{thread:05d}")) as writer:
            for path in files[thread::cores]:
                encoded = process(tf.constant(path.read_bytes())).numpy()
                writer.write(schema.serialize(schema.ImageRecord(
                    encoded, size, size, path.name, labels[path.parent.name],
                    path.parent.name, path.parent.name)))

    start, cpu = time.perf_counter(), _cpu_seconds()
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(cores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, _cpu_seconds() - cpu


def quality(workdir: Path, count: int, size: int) -> dict[str, tuple[float, float]]:
    """PSNR (dB) of each converter's output against a float reference: the decoded source,
    its centre square resampled with Lanczos in float.  Two figures each: against the
    exact centre, and against the best of the references shifted by -1/2 to 1/2 output
    pixel (steps of 1/4) in x and y, which leaves out where a converter puts the crop
    to the nearest pixel and keeps what its resampling loses.  "previous" is Pillow's
    path (a full-size or 1/2, 1/4, 1/8 decode, antialiased bilinear), the converter's
    only path before the DCT-scaled one."""
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from tfrecords_tools.images import ImageOptions, reencode, reencode_with_pillow

    process = inception_process(size)
    options = ImageOptions(size=size)
    shifts = [(dx / 4, dy / 4) for dx in range(-2, 3) for dy in range(-2, 3)]

    def pixels(data: bytes):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64)

    def references(data: bytes):
        source = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)
        height, width = source.shape[:2]
        shorter = min(height, width)
        step = shorter / size
        pad = math.ceil(step)  # room for the shifted boxes, by edge replication
        source = np.pad(source, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        bands = [Image.fromarray(np.ascontiguousarray(source[..., c]), "F") for c in range(3)]
        left, top = pad + (width - shorter) / 2, pad + (height - shorter) / 2
        for dx, dy in shifts:
            box = (left + dx * step, top + dy * step, left + dx * step + shorter,
                   top + dy * step + shorter)
            yield (dx, dy), np.stack([np.asarray(band.resize(
                (size, size), Image.Resampling.LANCZOS, box=box)) for band in bands], -1)

    errors = {name: ([], []) for name in ("ours", "previous", "inception")}
    for path in sorted((workdir / "extracted").rglob("*.JPEG"))[:count]:
        data = path.read_bytes()
        outputs = {"ours": pixels(reencode(data, options).encoded),
                   "previous": pixels(reencode_with_pillow(data, options).encoded),
                   "inception": pixels(process(tf.constant(data)).numpy())}
        best = dict.fromkeys(outputs, math.inf)
        for shift, target in references(data):
            for name, image in outputs.items():
                mse = np.mean((image - target) ** 2)
                best[name] = min(best[name], mse)
                if shift == (0, 0):
                    errors[name][0].append(mse)
        for name in outputs:
            errors[name][1].append(best[name])
    return {name: tuple(10 * math.log10(255 ** 2 / statistics.mean(mse)) for mse in pair)
            for name, pair in errors.items()}


def child(which: str, cores: int, workdir: Path, size: int) -> None:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    run = {"ours": run_ours, "inception": run_inception_style}[which]
    wall, cpu = run(workdir, cores, size)
    print(json.dumps({"wall": wall, "cpu": cpu}))


def measure(which: str, cores: int, workdir: Path, size: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", which, str(cores),
                             str(workdir), "--size", str(size)], capture_output=True, text=True,
                            check=True, env=dict(os.environ, PYTHONPATH=str(Path(__file__)
                                                                               .parents[1])))
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child:
        which, cores, workdir = args.child
        child(which, int(cores), Path(workdir), args.size)
        return
    available = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        make_data(workdir, args.images)
        print(f"{args.images} JPEGs ~400x350 -> {args.size}x{args.size}; "
              f"{available} CPUs available; medians of {args.repeats} runs")
        print(f"{'cores':>5} {'ours img/s':>11} {'incep img/s':>12} {'ratio':>6}   "
              f"{'ours img/CPU-s':>15} {'incep img/CPU-s':>16} {'ratio':>6}")
        for cores in args.cores:
            cores = min(cores, available)
            runs = {"ours": [], "inception": []}
            for _ in range(args.repeats):  # interleaved, so load drifts hit both alike
                for which in runs:
                    runs[which].append(measure(which, cores, workdir, args.size))
            rate = {which: {key: args.images / statistics.median(r[key] for r in results)
                            for key in ("wall", "cpu")} for which, results in runs.items()}
            ours, baseline = rate["ours"], rate["inception"]
            print(f"{cores:>5} {ours['wall']:>11.0f} {baseline['wall']:>12.0f} "
                  f"{ours['wall'] / baseline['wall']:>5.2f}x   {ours['cpu']:>15.0f} "
                  f"{baseline['cpu']:>16.0f} {ours['cpu'] / baseline['cpu']:>5.2f}x")
        if args.quality_images:
            psnr = quality(workdir, args.quality_images, args.size)
            print(f"PSNR (dB) against a float Lanczos reference, {args.quality_images} images "
                  f"(exact centre / best sub-pixel alignment): "
                  + ", ".join(f"{name} {exact:.2f} / {aligned:.2f}"
                              for name, (exact, aligned) in psnr.items()))


if __name__ == "__main__":
    main()
