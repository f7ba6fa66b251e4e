"""Export a checkpoint as a TensorFlow Serving SavedModel.

Writes <export_base>/<model_name>/<version>/ with the `serving_default` (encoded image
bytes), `predict_images` (raw pixels) and `features` (fc7) signatures and TF Serving's
warmup requests.  Serve it with `python -m serving serve --model_name=<model_name>
--model_base_path=<export_base>/<model_name>` or tensorflow_model_server.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint",
                        help="a .keras checkpoint, or a training run's model directory")
    parser.add_argument("--data-dir", required=True,
                        help="shard directory with labels.txt (and stats.json), or labels.txt")
    parser.add_argument("--export-base", required=True, help="TF Serving export base directory")
    parser.add_argument("--model-name", default="alexnet", help="default: alexnet")
    parser.add_argument("--version", type=int, default=None,
                        help="integer version directory (default: one more than the latest)")


def run(args: argparse.Namespace) -> int:
    from keras_alexnet.saved_model import export

    try:
        path = export(args.checkpoint, args.data_dir, args.export_base, args.model_name,
                      args.version)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0
