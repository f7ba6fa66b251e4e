"""Import pretrained BVLC AlexNet weights (Caffe .caffemodel or ONNX zoo .onnx) as a checkpoint.

Writes MODEL_DIR/checkpoints/epoch-0000.keras: the two-tower network in Caffe's geometry
(227x227, Caffe's LRN) with the file's weights, and its input contract (the Caffe mean,
256 -> 227 centre crops, the classes of --labels).  evaluate, export, predict, pictures
and train (fine-tuning) take MODEL_DIR like any training run's.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="bvlc_alexnet.caffemodel or bvlcalexnet-*.onnx")
    parser.add_argument("model_dir", help="the checkpoint goes into MODEL_DIR/checkpoints")
    parser.add_argument("--labels", default=None,
                        help="the classes in output order: labels.txt from `tfrecords_tools "
                             "convert`, Caffe's synset_words.txt, or the ILSVRC2012 devkit "
                             "tar.gz (default: unnamed classes)")
    parser.add_argument("--mean-image", default=None,
                        help="subtract this 256x256 mean image (Caffe's "
                             "ilsvrc_2012_mean.binaryproto, or an RGB .npy) instead of the "
                             "per-channel Caffe mean (104, 117, 123 in BGR)")


def run(args: argparse.Namespace) -> int:
    from keras_alexnet.bvlc import import_weights

    path = import_weights(args.file, args.model_dir, labels=args.labels,
                          mean_image=args.mean_image)
    print(path)
    return 0
