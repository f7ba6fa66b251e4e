"""Export a checkpoint, or an ensemble of them, as a TensorFlow Serving SavedModel (or,
with --format, one model for ONNX Runtime, OpenVINO or LiteRT).

Writes <export_base>/<model_name>/<version>/ with the `serving_default` (encoded image
bytes), `classify` (tf.Example, TF Serving's Classify), `predict_images` (raw pixels)
and `features` (fc7) signatures and TF Serving's warmup requests; the classes and the
preprocessing come from the checkpoint.  `--ensemble RUN1 RUN2 ...` writes one model
whose signatures average the runs' softmax in the graph, as the paper's "5 CNNs"
[paper §6], each run preprocessing the image by its own record (`features` then gives
the runs' fc7 side by side; `predict_images` needs runs of one input size).  Serve it
with `python -m serving serve --model_name=<model_name>
--model_base_path=<export_base>/<model_name>` or tensorflow_model_server.
"""

from __future__ import annotations

import argparse

from keras_alexnet.commands import add_epoch_argument, chosen_checkpoints, require_checkpoints
from serving import DEFAULT_MODEL_NAME


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("checkpoint", nargs="?",
                        help="a .keras checkpoint, or a training run's model directory")
    source.add_argument("--ensemble", nargs="+", metavar="RUN",
                        help="several checkpoints or runs, exported as one model that "
                             "averages their probabilities")
    parser.add_argument("--data-dir", default=None,
                        help="only for a checkpoint saved without its input contract: the "
                             "shard directory it was trained on")
    parser.add_argument("--export-base", required=True, help="TF Serving export base directory")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME,
                        help=f"default: {DEFAULT_MODEL_NAME}, the name `python -m serving` "
                             f"serves and queries by default")
    parser.add_argument("--version", type=int, default=None,
                        help="integer version directory (default: one more than the latest)")
    parser.add_argument("--format", default="tf_saved_model",
                        choices=("tf_saved_model", "onnx", "openvino", "litert"),
                        help="tf_saved_model (default): TF Serving's SavedModel; onnx, "
                             "openvino, litert: model.onnx, model.xml + model.bin or "
                             "model.tflite in the version directory, the network on 0-255 "
                             "RGB crops with the mean inside, input_contract.json beside it "
                             "(needs the extra of that name: pip install -e \".[onnx]\")")
    add_epoch_argument(parser)


def check(args: argparse.Namespace) -> None:
    require_checkpoints(args.ensemble or [args.checkpoint])


def run(args: argparse.Namespace) -> int:
    from keras_alexnet.saved_model import export

    sources = chosen_checkpoints(args.ensemble or [args.checkpoint], args.epoch)
    path = export(sources if args.ensemble else sources[0], args.export_base,
                  args.model_name, args.version, data_dir=args.data_dir, format=args.format)
    print(path)
    return 0
