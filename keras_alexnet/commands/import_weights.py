"""Import pretrained BVLC AlexNet (bvlc_alexnet by name, a .caffemodel or an .onnx) as a checkpoint.

Writes MODEL_DIR/checkpoints/epoch-0000.keras: the two-tower network in Caffe's geometry
(227x227, Caffe's LRN) with the file's weights, and its input contract (the Caffe mean,
256 -> 227 centre crops, the classes of --labels).  evaluate, export, predict, pictures
and train (fine-tuning) take MODEL_DIR like any training run's.

By name, bvlc_alexnet is downloaded once from BVLC's URL into the Keras cache
($KERAS_HOME/models, default ~/.keras/models), its sha1 checked, and imported once with
the 1000 ILSVRC-2012 class names the package ships; later imports copy that.  Without
internet, set KERAS_ALEXNET_WEIGHTS_URL to a mirror URL or to a directory holding
bvlc_alexnet.caffemodel.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="bvlc_alexnet (the published weights, by name), or a "
                                     "bvlc_alexnet.caffemodel or bvlcalexnet-*.onnx file")
    parser.add_argument("model_dir", help="the checkpoint goes into MODEL_DIR/checkpoints")
    parser.add_argument("--labels", default=None,
                        help="the classes in output order: labels.txt from `tfrecords_tools "
                             "convert`, Caffe's synset_words.txt, or the ILSVRC2012 devkit "
                             "tar.gz (default: ILSVRC-2012's for bvlc_alexnet, unnamed "
                             "classes for a file)")
    parser.add_argument("--mean-image", default=None,
                        help="subtract this 256x256 mean image (Caffe's "
                             "ilsvrc_2012_mean.binaryproto, or an RGB .npy) instead of the "
                             "per-channel Caffe mean (104, 117, 123 in BGR)")


def run(args: argparse.Namespace) -> int:
    from keras_alexnet.pretrained import import_weights

    path = import_weights(args.file, args.model_dir, labels=args.labels,
                          mean_image=args.mean_image)
    print(path)
    return 0
