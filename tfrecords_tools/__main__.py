"""`python -m tfrecords_tools` (also `ilsvrc-to-tfrecords`): convert, merge, verify, stats.

A thin layer over the library: heavy imports happen inside each command, so `--help`
is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tfrecords_tools.base.cli import add_verbose_argument, require_paths, run_command
from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.schema import SPLITS  # free of TensorFlow at import

EPILOG = """examples:
  %(prog)s convert /data/ilsvrc /data/shards
  %(prog)s convert /data/ilsvrc /data/shards --splits validation --size 256 --no-crop
  %(prog)s convert /data/ilsvrc2010 /data/shards2010   # the test split is labelled
  %(prog)s convert photos/ /data/photo-shards   # photos/train/<class>/*.jpg, photos/val/...
  %(prog)s convert photos.tar /data/photo-shards --validation-fraction 0.1
  %(prog)s convert fall11_whole.tar /data/fall11   # a tar of per-class tars, no devkit
  %(prog)s convert /data/ilsvrc /shared/shards --num-workers 8 --worker-index 3
  %(prog)s merge /shared/shards
  %(prog)s verify /data/shards
  %(prog)s stats /data/shards --sample 50000
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_convert(sub) -> None:
    parser = sub.add_parser("convert", help="ILSVRC-2012 or ILSVRC-2010 archives or image "
                            "folders to sharded TFRecords", description="Reads the archives "
                            "in place (no extraction) and writes shards, labels.txt and "
                            "manifest.json; rerun to resume.")
    parser.add_argument("archives", type=Path,
                        help="directory holding ILSVRC2012_img_train.tar, "
                             "ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz, "
                             "ILSVRC2012_img_test*.tar (any of them); or ILSVRC-2010's "
                             "ILSVRC2010_images_{train,val,test}.tar, "
                             "ILSVRC2010_devkit-1.0.tar.gz, ILSVRC2010_test_ground_truth.txt "
                             "(labels the test split) and patch_images.tar (replaces the "
                             "images it holds); or image folders, "
                             "DIR/train/<class>/ with DIR/val/<class>/ and DIR/test/, or "
                             "DIR/<class>/ (classes: the folder names sorted, as Keras and "
                             "torchvision), as a directory or a .tar; or a tar of per-class "
                             "n########.tar (ImageNet Fall 2011's fall11_whole.tar)")
    parser.add_argument("output", type=Path, help="directory for the shards")
    parser.add_argument("--splits", nargs="+", choices=SPLITS,
                        help="splits to convert (default: those whose archive is present)")
    for split in SPLITS:
        parser.add_argument(f"--{split}-tar", type=Path,
                            help=f"the {split} archive, if not under its ILSVRC name")
    parser.add_argument("--devkit", type=Path, help="the devkit, if not under its ILSVRC name")
    parser.add_argument("--test-ground-truth", type=Path, metavar="FILE",
                        help="ILSVRC-2010's test labels, if not under their name "
                             "(ILSVRC2010_test_ground_truth.txt)")
    parser.add_argument("--patch-images", type=Path, metavar="TAR",
                        help="ILSVRC-2010's replacement images, if not under their name "
                             "(patch_images.tar)")
    parser.add_argument("--validation-fraction", type=float, metavar="F",
                        help="image folders without val/: hold out the fraction F of every "
                             "class as the validation split (drawn with --seed, recorded in "
                             "manifest.json)")
    parser.add_argument("--classes", type=Path, metavar="FILE",
                        help="image folders: the classes in label order, a line each, "
                             "'folder' or 'folder<TAB>display name' (a labels.txt is one); "
                             "default: the folder names sorted")
    for split in SPLITS:
        parser.add_argument(f"--{split}-shards", type=_positive,
                            help=f"number of {split} shards (default: one per 256 images, "
                                 f"at most {'1024' if split == 'train' else '128'}, as for "
                                 f"ILSVRC-2012)")
    parser.add_argument("--size", type=_positive, default=256,
                        help="shorter side after resizing [paper §2] (default 256)")
    parser.add_argument("--no-crop", dest="crop", action="store_false",
                        help="keep the whole resized image instead of the central square")
    parser.add_argument("--quality", type=_positive, default=90, help="JPEG quality (90)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shard shuffle (0)")
    parser.add_argument("--label-offset", type=int, choices=(0, 1), default=0,
                        help="0: labels 0..999, as TFDS, Keras and keras_alexnet read them "
                             "(default); 1: labels 1..1000 (0 = background), as the Inception "
                             "converter's and tensorflow/tpu's readers and tf-models' "
                             "official/legacy parse_record expect; recorded in manifest.json")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="convert an archive that lacks images the devkit lists (or is "
                             "damaged part way), recording the shortfall in manifest.json, "
                             "instead of stopping with an error")
    parser.add_argument("--checkpoint-seconds", type=float, default=30.0,
                        help="how often the forward pass records where it is, i.e. the most "
                             "work a kill can cost (30)")
    parser.add_argument("-j", "--processes", type=_positive,
                        help="decoding processes (default: one per core)")
    parser.add_argument("--num-workers", type=_positive, default=1,
                        help="machines (or scheduler jobs) sharing this conversion into one "
                             "output directory; each runs the same command but for "
                             "--worker-index, then any of them runs `merge`")
    parser.add_argument("--worker-index", type=int, default=0,
                        help="this machine's index in [0, --num-workers)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_convert, check=lambda args: require_paths(
        args.archives, *(getattr(args, f"{split}_tar") for split in SPLITS),
        what="archive, directory or image folder"))


def _run_convert(args) -> int:
    import dataclasses

    from tfrecords_tools.convert import convert
    from tfrecords_tools.sources import find_archives, find_source

    overrides = {"train": args.train_tar, "validation": args.validation_tar,
                 "test": args.test_tar, "devkit": args.devkit,
                 "test_truth": args.test_ground_truth, "patches": args.patch_images}
    overrides = {k: v for k, v in overrides.items() if v}
    if overrides:  # ILSVRC archives under other names
        if args.validation_fraction is not None or args.classes is not None:
            raise ArgumentError("--validation-fraction and --classes apply to image folders, "
                                "not to ILSVRC archives given by --*-tar, --devkit, "
                                "--test-ground-truth or --patch-images")
        source = dataclasses.replace(find_archives(args.archives), **overrides)
    else:
        source = find_source(args.archives, args.validation_fraction, args.classes)
    summary = convert(args.output, source, splits=args.splits,
                      num_shards={s: getattr(args, f"{s}_shards") for s in SPLITS
                                  if getattr(args, f"{s}_shards")},
                      image_size=args.size, crop=args.crop, quality=args.quality,
                      seed=args.seed, processes=args.processes, num_workers=args.num_workers,
                      worker_index=args.worker_index, label_offset=args.label_offset,
                      allow_incomplete=args.allow_incomplete,
                      checkpoint_seconds=args.checkpoint_seconds, progress=not args.quiet)
    print(summary)
    return 0


def _add_merge(sub) -> None:
    parser = sub.add_parser("merge", help="write manifest.json once every worker has finished",
                            description="Merges the shard receipts of a --num-workers "
                            "conversion into manifest.json.")
    parser.add_argument("output", type=Path, help="the shared shard directory")
    parser.add_argument("--splits", nargs="+", help="splits that must be complete "
                        "(default: every split started there)")
    parser.set_defaults(run=_run_merge)


def _run_merge(args) -> int:
    from tfrecords_tools.manifest import merge

    merged = merge(args.output, args.splits)
    print(f"manifest.json written for: {', '.join(merged) or 'none (shards still missing)'}")
    return 0 if merged else 1


def _add_verify(sub) -> None:
    parser = sub.add_parser("verify", help="re-read every shard and check it against the "
                            "manifest", description="Checks record counts, sha256, every "
                            "image's decoding, labels and the per-class histogram.")
    parser.add_argument("output", help="the shard directory (a path or a gs:// URL)")
    parser.add_argument("--splits", nargs="+", help="splits to check (default: all)")
    parser.add_argument("-j", "--processes", type=_positive,
                        help="parallel shard readers (default: one per core)")
    parser.add_argument("--devkit", type=Path,
                        help="check the image counts against this devkit "
                             "(ILSVRC2012_devkit_t12.tar.gz) instead of the counts the "
                             "manifest recorded from it at conversion")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_verify, check=lambda args: require_paths(
        args.output, args.devkit, what="shard directory or devkit"))


def _run_verify(args) -> int:
    from tfrecords_tools.verify import verify

    problems = verify(args.output, args.splits, args.processes, progress=not args.quiet,
                      devkit=args.devkit)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem{'s' * (len(problems) != 1)}" if problems
          else "all shards verified")
    return 1 if problems else 0


def _add_stats(sub) -> None:
    parser = sub.add_parser("stats", help="mean image, channel means and RGB PCA for the paper's "
                            "mean subtraction and lighting", description="Writes stats.json "
                            "and mean_image.npy (pixel scale [0, 1]) from the training shards.")
    parser.add_argument("output", help="the shard directory (a path or a gs:// URL)")
    parser.add_argument("--sample", type=_positive,
                        help="use the first N training images (in shard order) instead of all")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_stats,
                        check=lambda args: require_paths(args.output, what="shard directory"))


def _run_stats(args) -> int:
    from tfrecords_tools.stats import compute_stats

    stats = compute_stats(args.output, sample=args.sample, progress=not args.quiet)
    print(f"{stats['num_images']} images: mean_rgb {stats['mean_rgb']}, "
          f"eigval {stats['eigval']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords_tools", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="ILSVRC-2012 or ILSVRC-2010 archives (or image folders) to sharded "
                    "TFRecords: one forward pass over each archive, parallel, resumable.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_convert, _add_merge, _add_verify, _add_stats):
        add(sub)
    for command in sub.choices.values():
        add_verbose_argument(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args, resume_hint="; rerun the same command to resume",
                       # convert and merge never load TensorFlow: no need to wait for it
                       tensorflow=args.command in ("verify", "stats"))


if __name__ == "__main__":
    sys.exit(main())
