"""Query a model over TensorFlow Serving's gRPC API, and serve one locally with the same API.

`Client` talks to `tensorflow_model_server` or to this package's `ModelServer` (in
process) and `ServerProcess` (`python -m serving serve` as a child process).
"""

import importlib

#: The model name that the server, the client and `python -m serving` use when none is
#: given: the one `keras_alexnet export` writes.  (tensorflow_model_server's own default
#: is "default": pass --model_name to it.)
DEFAULT_MODEL_NAME = "alexnet"

# Imported on first use: each pulls in TensorFlow, which `python -m serving --help` avoids.
_LAZY = {"Client": "serving.client", "ModelServer": "serving.server",
         "ServerProcess": "serving.server"}

__all__ = ["DEFAULT_MODEL_NAME", "Client", "ModelServer", "ServerProcess"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
