"""Query a model over TensorFlow Serving's gRPC API, and serve one locally with the same API.

`Client` talks to `tensorflow_model_server` or to this package's `ModelServer` (in
process) and `ServerProcess` (`python -m serving serve` as a child process).
"""

import importlib

# Imported on first use: each pulls in TensorFlow, which `python -m serving --help` avoids.
_LAZY = {"Client": "serving.client", "ModelServer": "serving.server",
         "ServerProcess": "serving.server"}

__all__ = ["Client", "ModelServer", "ServerProcess"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
