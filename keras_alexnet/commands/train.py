"""Train AlexNet on converted shards, the paper's way; rerun to resume.

Writes <model_dir>/checkpoints/epoch-NNNN.keras every epoch, the whole training state
to <model_dir>/checkpoints/backup.keras every --backup-every steps, training_log.csv,
run.json (the seed and the options) and TensorBoard logs.  Rerunning the same command
after a crash, kill -9 or Ctrl-C resumes from the newest of them, at the same step,
with the same images, learning rate and momentum.  Across machines, set TF_CONFIG on
every worker and point them at one shared model_dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys

from keras_alexnet.commands import require_checkpoints
from keras_alexnet.config import (
    NETWORKS,
    PRINTED_LRN,
    AlexNetConfig,
    TrainingOptions,
    reduced_config,
    small_photos_config,
)
from tfrecords_tools.base.cli import require_paths
from tfrecords_tools.base.options import add_arguments as add_option_arguments
from tfrecords_tools.base.options import from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", help="directory of train-*/validation-* shards "
                                         "(python -m tfrecords_tools convert), or a TFDS "
                                         "prepared dataset (e.g. "
                                         "~/tensorflow_datasets/imagenet2012/5.1.0)")
    parser.add_argument("model_dir", help="checkpoints and logs go here; resumed if present")
    add_option_arguments(parser, TrainingOptions)
    model = parser.add_argument_group("model (a new run; a resumed one keeps its checkpoint's)")
    paper, reduced = AlexNetConfig(), {name: parameter.default for name, parameter in
                                       inspect.signature(reduced_config).parameters.items()}
    small = small_photos_config()
    model.add_argument("--network", choices=NETWORKS, default=None,
                       help=f"a network by name: paper (the default, 224x224 [paper §3.5]); "
                            f"reduced ({reduced['image_size']}x{reduced['image_size']}, "
                            f"width {reduced['width']:g}: the tests, the demo, a few hundred "
                            f"photos of your own); small-photos ({small.image_size}x"
                            f"{small.image_size} crops, conv1 {small.conv1_size}x"
                            f"{small.conv1_size} at stride {small.conv1_stride}, width "
                            f"{small.width:g}: CIFAR-10's 32x32 photos, converted with "
                            f"convert --size 32)")
    model.add_argument("--reduced", action="store_true", help="the same as --network reduced")
    model.add_argument("--image-size", type=int, default=None,
                       help=f"default: {paper.image_size} ({reduced['image_size']} reduced, "
                            f"{small.image_size} small-photos)")
    model.add_argument("--width", type=float, default=None,
                       help=f"filter/unit multiplier (default: {paper.width:g}, "
                            f"{reduced['width']:g} reduced)")
    model.add_argument("--init-stddev", type=float, default=None,
                       help=f"weight init stddev (default: the paper's "
                            f"{paper.init_stddev:g}, {reduced['init_stddev']:g} reduced)")
    model.add_argument("--bias-init", type=float, default=None,
                       help=f"initial bias of conv2, conv4, conv5 (conv6) and fc6, fc7 "
                            f"(default: the paper's {paper.bias_init:g} [paper §5]; "
                            f"{reduced['bias_init']:g} reduced, as Caffe's bvlc_alexnet)")
    model.add_argument("--conv6", action="store_true",
                       help="the CNN* network: a sixth conv layer over pool5 [paper §6] "
                            "(3x3, as wide as conv5, in each tower)")
    model.add_argument("--printed-lrn", action="store_true",
                       help=f"LRN as the paper prints it, alpha "
                            f"{PRINTED_LRN['lrn_alpha']:g} on the sum [paper §3.3], instead "
                            f"of the authors' code's {AlexNetConfig.lrn_alpha:g} (their "
                            f"alpha divided by the window of 5)")


def _config(args: argparse.Namespace) -> AlexNetConfig | None:
    overrides = {name: value for name, value in (("image_size", args.image_size),
                                                 ("width", args.width),
                                                 ("init_stddev", args.init_stddev),
                                                 ("bias_init", args.bias_init),
                                                 ("conv6", args.conv6 or None))
                 if value is not None}
    if args.printed_lrn:
        overrides.update(PRINTED_LRN)
    network = "reduced" if args.reduced else args.network
    if network:
        return NETWORKS[network](**overrides)
    return AlexNetConfig(**overrides) if overrides else None


def check(args: argparse.Namespace) -> None:
    require_paths(args.data_dir, what="data directory",
                  hint="; create it with `python -m tfrecords_tools convert`")
    if args.init_from:
        require_checkpoints([args.init_from])


def run(args: argparse.Namespace) -> int:
    from keras_alexnet.training import fit
    from tfrecords_tools.dataset import DatasetInfo

    options = from_args(TrainingOptions, args)
    info = DatasetInfo(args.data_dir)
    config = _config(args)
    if config is not None and info.classes is not None:  # the class count is the data's
        config = dataclasses.replace(config, num_classes=len(info.classes))
    # Ctrl-C and SIGTERM (tfrecords_tools.base.cli) save a backup, then say how to resume.
    # A progress bar redraws one line with control characters, which a log file keeps
    # every time: a line per epoch there instead.
    fit(info, args.model_dir, config=config, options=options,
        verbose="auto" if sys.stdout.isatty() else 2)
    return 0
