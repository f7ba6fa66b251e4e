"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) as a Keras 3 package.

`build_model`, `fit`, `evaluate` and `export` are the entry points scripts call, with
`AlexNetConfig` (the network) and `TrainingOptions` (its training) holding the paper's
numbers; `load_model`, `preprocess_input` and `decode_predictions` use a trained checkpoint
with its input contract, as Keras applications do with theirs.
"""

import importlib
import sys

from keras_alexnet.config import AlexNetConfig, TrainingOptions, reduced_config

# Imported on first use, so that `python -m keras_alexnet --help` and the config do not
# wait for TensorFlow.
_LAZY = {"build_model": "keras_alexnet.applications", "fc7_features": "keras_alexnet.model",
         "PaperSGD": "keras_alexnet.optimizer", "fit": "keras_alexnet.training",
         "evaluate": "keras_alexnet.evaluation", "export": "keras_alexnet.saved_model",
         "InputContract": "keras_alexnet.contract",
         "preprocess_input": "keras_alexnet.contract",
         "decode_predictions": "keras_alexnet.contract",
         "load_model": "keras_alexnet.checkpoints",
         "extract_features": "keras_alexnet.features"}

__all__ = ["AlexNetConfig", "InputContract", "PaperSGD", "TrainingOptions", "build_model",
           "decode_predictions", "evaluate", "export", "extract_features", "fc7_features",
           "fit", "load_model", "preprocess_input", "reduced_config"]


if "keras" in sys.modules:
    # Keras (so TensorFlow) is loaded already: register the classes our checkpoints hold,
    # so that plain `keras.saving.load_model` reads them.  Otherwise they register on
    # first use, keeping `--help` and the converter free of TensorFlow.
    importlib.import_module("keras_alexnet.network")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_alexnet' has no attribute {name!r}")
