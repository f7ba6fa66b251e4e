"""`build_model` as Keras applications take it: `weights`, `include_top`, `pooling` and
`classes` (`keras_alexnet.build_model` is this one).

The layers below it, each adding one thing: `model.build_network` builds a config's
network (and loads a checkpoint of it), `pretrained.build_from_weights` also takes weights by
name, `finetune.initialise_from` puts a new classifier on a trained body.
"""

from __future__ import annotations

import os

from keras_alexnet import finetune, pretrained
from keras_alexnet.config import AlexNetConfig
from keras_alexnet.errors import AlexNetError
from keras_alexnet.model import check_pooling, convolutional_base
from keras_alexnet.network import AlexNet

#: What `build_model(weights=..., classes=N)` can pass on to the new model: the rest of
#: the network is the weights'.
_NEW_TOP_ARGUMENTS = frozenset({"devices", "seed", "name"})


def build_model(config: AlexNetConfig | None = None, *,
                weights: str | os.PathLike | None = None, include_top: bool = True,
                pooling: str | None = None, classes: int | None = None,
                **kwargs) -> AlexNet:
    """The paper's AlexNet [paper §3.5, Figure 2], whole or its convolutional part.

    Args:
        config: the hyper-parameters (`keras_alexnet.AlexNetConfig`); with `weights`, it
            must describe their network (by default it is theirs).
        weights: None (random initialisation [paper §5]), a checkpoint (`.keras` file
            or a training run's model directory) or weights known by name
            ("bvlc_alexnet", downloaded once: `keras_alexnet.pretrained`).  The model
            then carries their input contract (`model.input_contract`): the classes, the
            image size and the mean its input must be made with.
        include_top: False gives the convolutional part alone, conv1..pool5 (and
            CNN*'s conv6) with the weights' values, ending in both towers' last maps
            concatenated: (6, 6, 256) for the paper's network
            (`model.convolutional_base`).
        pooling: only with `include_top=False`: None keeps the pool5 maps, "avg" or
            "max" their global average or maximum, (256,) for the paper's network.
        classes: the number of classes.  With `weights` this gives the pretrained
            body with a new `fc8` for `classes` unnamed classes (`finetune`'s
            initialisation; the same count keeps fc8 and the names): a non-1000 count
            with pretrained weights is allowed on purpose, because fine-tuning needs
            it, where Keras applications and torchvision (pytorch/vision#1040) refuse
            it.  Without `weights`, the same as the `num_classes` field.
        **kwargs: `devices`, `seed` and `name` of `keras_alexnet.model.build_network`,
            and single config fields (`num_classes=10`, `image_size=64`).

    Input: float32 RGB images (image_size, image_size, 3) made as the input contract
    says (`keras_alexnet.preprocess_input`): the centre crop on the 0-255 scale minus
    the training mean, in the weights' channel order (BGR for BVLC's) [paper §2].
    Output: the softmax over the classes, or the convolutional part's features.
    """
    if include_top and pooling is not None:
        raise AlexNetError(f"pooling={pooling!r} needs include_top=False (the whole network "
                           f"ends in fc8's softmax)")
    check_pooling(pooling)
    if classes is not None and not include_top:
        raise AlexNetError(f"classes={classes!r} needs include_top=True (the convolutional "
                           f"part has no classifier)")
    if classes is not None and weights is not None:
        return _new_top(config, weights, classes, kwargs)
    if classes is not None:
        if kwargs.get("num_classes", classes) != classes:
            raise AlexNetError(f"classes={classes} and num_classes={kwargs['num_classes']} "
                               f"differ; give one of them")
        kwargs["num_classes"] = classes
    model = pretrained.build_from_weights(config, weights=weights, **kwargs)
    return model if include_top else convolutional_base(model, pooling)


def _new_top(config: AlexNetConfig | None, weights: str | os.PathLike, classes: int,
             kwargs: dict) -> AlexNet:
    """The weights' network with `classes` outputs (fc8 new when the count differs)."""
    others = sorted(set(kwargs) - _NEW_TOP_ARGUMENTS)
    if others:
        raise AlexNetError(f"build_model(weights=..., classes={classes}) keeps the network "
                           f"of the weights; it cannot also set {', '.join(others)}")
    source = finetune.read_source(weights)
    kept = source.model.input_contract.classes
    named = kept if classes == len(kept) else tuple(("", f"class {i}")
                                                    for i in range(classes))
    model = finetune.initialise_from(source, named, devices=kwargs.get("devices"),
                                     seed=kwargs.get("seed"), config=config)
    if "name" in kwargs:
        model.name = kwargs["name"]
    return model
