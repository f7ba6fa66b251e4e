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
from tfrecords_tools.base.options import add_arguments as add_option_arguments
from tfrecords_tools.base.options import from_args
from tfrecords_tools.options import ConvertOptions
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
    source = parser.add_argument_group("the source")
    for split in SPLITS:
        source.add_argument(f"--{split}-tar", type=Path,
                            help=f"the {split} archive, if not under its ILSVRC name")
    source.add_argument("--devkit", type=Path, help="the devkit, if not under its ILSVRC name")
    source.add_argument("--test-ground-truth", type=Path, metavar="FILE",
                        help="ILSVRC-2010's test labels, if not under their name "
                             "(ILSVRC2010_test_ground_truth.txt)")
    source.add_argument("--patch-images", type=Path, metavar="TAR",
                        help="ILSVRC-2010's replacement images, if not under their name "
                             "(patch_images.tar)")
    source.add_argument("--validation-fraction", type=float, metavar="F",
                        help="image folders without val/, or a tar of per-class tars: hold "
                             "out round(F x n) of every class's n images as the validation "
                             "split (at least one, never all; drawn with --seed; recorded in "
                             "manifest.json)")
    source.add_argument("--validation-per-class", type=int, metavar="K",
                        help="instead: hold out the first K images of every class, in the "
                             "archive's order (the folder's, sorted by path), as "
                             "ImageNet-21K-P takes its first 50 for reproducibility")
    source.add_argument("--min-images-per-class", type=int, metavar="N",
                        help="set classes of fewer than N images aside: not converted, listed "
                             "with their counts in manifest.json (ImageNet-21K-P: 500)")
    source.add_argument("--classes", type=Path, metavar="FILE",
                        help="image folders: the classes in label order, a line each, "
                             "'folder' or 'folder<TAB>display name' (a labels.txt is one); "
                             "default: the folder names sorted")
    add_option_arguments(parser, ConvertOptions)
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
        folder_options = [flag for flag, value in (
            ("--validation-fraction", args.validation_fraction),
            ("--validation-per-class", args.validation_per_class),
            ("--min-images-per-class", args.min_images_per_class),
            ("--classes", args.classes)) if value is not None]
        if folder_options:
            raise ArgumentError(f"{folder_options[0]}: applies to image folders and tars of "
                                f"per-class tars, not to ILSVRC archives given by --*-tar, "
                                f"--devkit, --test-ground-truth or --patch-images")
        source = dataclasses.replace(find_archives(args.archives), **overrides)
    else:
        source = find_source(args.archives, args.validation_fraction, args.classes,
                             validation_per_class=args.validation_per_class,
                             min_images_per_class=args.min_images_per_class)
    summary = convert(args.output, source, from_args(ConvertOptions, args),
                      progress=not args.quiet)
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
