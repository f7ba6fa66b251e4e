"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) as a Keras 3 package."""

from keras_alexnet.config import AlexNetConfig, reduced_config
from keras_alexnet.model import build_model
from keras_alexnet.optimizer import PaperSGD

__all__ = ["AlexNetConfig", "PaperSGD", "build_model", "reduced_config"]
