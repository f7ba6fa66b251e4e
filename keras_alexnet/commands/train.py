"""Train AlexNet on converted shards, the paper's way; rerun to resume.

Writes <model_dir>/checkpoints/epoch-NNNN.keras every epoch, the whole training state
to <model_dir>/checkpoints/backup.keras every --backup-every steps, training_log.csv,
run.json (the seed) and TensorBoard logs.  Rerunning the same command after a crash,
kill -9 or Ctrl-C resumes from the newest of them, at the same step, with the same
images, learning rate and momentum.  Across machines, set TF_CONFIG on every worker and
point them at one shared model_dir.
"""

from __future__ import annotations

import argparse
import dataclasses

from keras_alexnet.config import BACKUP_EVERY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", help="directory of train-*/validation-* shards "
                                         "(python -m tfrecords_tools convert)")
    parser.add_argument("model_dir", help="checkpoints and logs go here; resumed if present")
    paper = parser.add_argument_group("training [paper §5]")
    paper.add_argument("--epochs", type=int, default=90, help="total epochs (default: 90)")
    paper.add_argument("--batch-size", type=int, default=128, help="global (default: 128)")
    paper.add_argument("--learning-rate", type=float, default=0.01, help="default: 0.01")
    paper.add_argument("--momentum", type=float, default=0.9, help="default: 0.9")
    paper.add_argument("--weight-decay", type=float, default=0.0005, help="default: 0.0005")
    paper.add_argument("--patience", type=int, default=5,
                       help="epochs without better validation error before dividing the "
                            "learning rate by 10 (default: 5)")
    paper.add_argument("--max-lr-reductions", type=int, default=3, help="default: 3")
    paper.add_argument("--steps-per-epoch", type=int, default=None,
                       help="default: one pass over the training images")
    paper.add_argument("--validation-steps", type=int, default=None,
                       help="default: the whole validation split")
    data = parser.add_argument_group("input [paper §4.1]")
    data.add_argument("--mean", choices=("channel", "pixel"), default=None,
                      help="subtract the per-channel mean (default) or the mean image; "
                           "recorded in the checkpoints, a resumed run keeps its own")
    data.add_argument("--lighting-stddev", type=float, default=0.1,
                      help="PCA lighting alpha stddev; 0 turns it off (default: 0.1)")
    data.add_argument("--seed", type=int, default=None,
                      help="seeds the initial weights, dropout, data order and augmentation "
                           "(default: drawn, printed and kept in run.json)")
    data.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                      help="input order independent of thread timing, so that a seed "
                           "repeats a run bit for bit (default: on)")
    model = parser.add_argument_group("model (a new run; a resumed one keeps its checkpoint's)")
    model.add_argument("--reduced", action="store_true",
                       help="the reduced network of the tests and demo (64x64, width 1/8)")
    model.add_argument("--image-size", type=int, default=None, help="default: 224 (64 reduced)")
    model.add_argument("--width", type=float, default=None,
                       help="filter/unit multiplier (default: 1, 0.125 reduced)")
    model.add_argument("--init-stddev", type=float, default=None,
                       help="weight init stddev (default: the paper's 0.01)")
    devices = parser.add_argument_group("devices")
    devices.add_argument("--strategy", default="auto",
                         choices=("auto", "towers", "mirrored", "multi-worker"),
                         help="towers: model parallel on two GPUs as the paper; mirrored: "
                              "data parallel on this machine's GPUs; multi-worker: across "
                              "machines from TF_CONFIG (default: auto)")
    devices.add_argument("--devices", nargs=2, metavar=("TOWER_A", "TOWER_B"), default=None,
                         help="devices of the two towers, e.g. /GPU:0 /GPU:1")
    devices.add_argument("--mixed-precision", choices=("mixed_float16", "mixed_bfloat16"),
                         default=None, help="Keras mixed-precision policy (GPUs)")
    devices.add_argument("--xla", action="store_true", help="compile the step with XLA")
    output = parser.add_argument_group("output")
    output.add_argument("--keep-checkpoints", type=int, default=5,
                        help="newest epoch checkpoints kept; 0 keeps all (default: 5)")
    output.add_argument("--backup-every", type=int, default=BACKUP_EVERY, metavar="STEPS",
                        help="save the whole training state every STEPS steps; 0: only at "
                             f"epoch ends and on Ctrl-C (default: {BACKUP_EVERY})")
    output.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")


def _config(args: argparse.Namespace):
    from keras_alexnet.config import AlexNetConfig, reduced_config

    overrides = {name: value for name, value in (("image_size", args.image_size),
                                                 ("width", args.width),
                                                 ("init_stddev", args.init_stddev))
                 if value is not None}
    if args.reduced:
        return reduced_config(**overrides)
    return AlexNetConfig(**overrides) if overrides else None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from keras_alexnet.training import fit
    from tfrecords_tools.schema import LABELS, read_labels

    config = _config(args)
    labels = Path(args.data_dir) / LABELS
    if config is not None and labels.exists():  # the class count always comes from the data
        config = dataclasses.replace(config, num_classes=len(read_labels(labels)))
    # Ctrl-C and SIGTERM (tfrecords_tools.cli) save a backup, then say how to resume.
    fit(args.data_dir, args.model_dir, config=config, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        momentum=args.momentum, weight_decay=args.weight_decay, patience=args.patience,
        max_lr_reductions=args.max_lr_reductions, steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.validation_steps, mean=args.mean,
        lighting_stddev=args.lighting_stddev, seed=args.seed,
        deterministic=args.deterministic, mixed_precision=args.mixed_precision,
        xla=args.xla, strategy=args.strategy,
        devices=tuple(args.devices) if args.devices else None,
        keep_checkpoints=args.keep_checkpoints or None, backup_every=args.backup_every,
        tensorboard=not args.no_tensorboard)
    return 0
