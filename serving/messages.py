"""TensorFlow's message modules for a process that never runs TensorFlow: the client.

tensorflow-serving-api's modules import TensorFlow's messages (`tensorflow.core.framework.
tensor_pb2`, ...), plain protobuf modules in packages whose `__init__` files are empty.
Importing them the usual way first runs `tensorflow/__init__.py`, which loads all of
TensorFlow: 5 to 8 s before `python -m serving query` sends one image.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

#: What the client imports: the messages, the services' stubs, and through them every
#: TensorFlow message they refer to.
CLIENT_MODULES = (
    "tensorflow.core.framework.tensor_pb2", "tensorflow.core.framework.types_pb2",
    "tensorflow.core.protobuf.meta_graph_pb2", "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2", "tensorflow_serving.apis.model_pb2",
    "tensorflow_serving.apis.model_service_pb2_grpc",
    "tensorflow_serving.apis.prediction_service_pb2_grpc")


def import_without_tensorflow(names: tuple[str, ...] = CLIENT_MODULES) -> None:
    """Imports the modules `names` without running `tensorflow/__init__.py`.

    Where TensorFlow is not loaded yet, a bare stand-in for the `tensorflow` package (its
    directory, none of its code) is in `sys.modules` while they import, and is removed
    after: the message modules stay cached, and a later `import tensorflow` loads the
    real package, which uses the same message classes.  Its one trace: that package
    lacks the attributes `core` and `compiler` (`tensorflow.core` still imports).  Hence
    for the command line's client process only, not for a library user's."""
    if "tensorflow" in sys.modules:
        for name in names:
            importlib.import_module(name)
        return
    spec = importlib.util.find_spec("tensorflow")
    if spec is None:
        raise ImportError("the client needs the tensorflow package for TF Serving's "
                          "messages (pip install tensorflow-serving-api)")
    stand_in = types.ModuleType("tensorflow")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules["tensorflow"] = stand_in
    try:
        for name in names:
            importlib.import_module(name)
    finally:
        del sys.modules["tensorflow"]
