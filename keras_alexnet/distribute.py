"""Where training runs: the paper's two towers, or data parallel on `tf.distribute`.

- "towers": the default strategy; `model.build_network` puts tower a and tower b on the first
  two GPUs (model parallel, as the paper's two GTX 580s [paper §3.2]), or both on the
  one device there is.
- "mirrored": data parallel across the GPUs of this machine (`MirroredStrategy`).
- "multi-worker": data parallel across machines (`MultiWorkerMirroredStrategy`, the
  cluster read from the `TF_CONFIG` environment variable).
- "auto": multi-worker when `TF_CONFIG` names more than one task, mirrored with more
  than two GPUs, else towers.

Create the strategy before anything else touches TensorFlow: multi-worker collectives
must be configured at program start-up.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from keras_alexnet import keras_internals
from keras_alexnet.config import STRATEGIES
from keras_alexnet.errors import AlexNetError


def cluster_size() -> int:
    """Tasks in the `TF_CONFIG` cluster (1 when there is none)."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return 1
    try:
        cluster = json.loads(config).get("cluster", {})
    except ValueError as error:
        raise AlexNetError(f"TF_CONFIG is not valid JSON ({error})") from error
    return sum(len(tasks) for name, tasks in cluster.items() if name in ("chief", "worker"))


def select_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """The strategy named `kind` (one of `STRATEGIES`)."""
    if kind not in STRATEGIES:
        raise AlexNetError(f"strategy must be one of {STRATEGIES}, got {kind!r}")
    if kind == "auto":
        if cluster_size() > 1:
            kind = "multi-worker"
        elif len(tf.config.list_physical_devices("GPU")) > 2:
            kind = "mirrored"
        else:
            kind = "towers"
    if kind == "multi-worker":
        if cluster_size() < 2:
            raise AlexNetError("strategy 'multi-worker' needs TF_CONFIG describing the cluster "
                               "(at least two 'chief'/'worker' tasks)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this task writes checkpoints and logs (always true outside a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def keras_multi_worker_fixes(model: keras.Model) -> None:
    """Lets Keras 3's `fit` run under `MultiWorkerMirroredStrategy` (keras-team/keras#20585),
    on this model object only (nothing is saved); `keras_alexnet.keras_internals` says
    how.  The model's steps return their results as `fit` needs them there by themselves
    (`AlexNet.train_step`)."""
    keras_internals.unpin_strategy(model)
