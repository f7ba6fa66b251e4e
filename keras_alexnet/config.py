"""The network's hyper-parameters, with the paper's values as defaults.

Every number cites its place in Krizhevsky, Sutskever & Hinton (2012), "ImageNet
Classification with Deep Convolutional Neural Networks" [paper §N].
"""

from __future__ import annotations

import dataclasses

#: Training steps between step backups (not a paper number): about a minute of one
#: current GPU on the paper's network, ten backups in an ImageNet epoch of 10,009 steps
#: at batch 128, each about 0.5 GB (weights and momentum).
BACKUP_EVERY = 1000


@dataclasses.dataclass(frozen=True)
class AlexNetConfig:
    """Topology and initialisation of the two-tower AlexNet.

    The defaults are the paper's network. `width` scales every layer's filter and
    unit count (the reduced model of the tests and the demo keeps the topology).
    """

    num_classes: int = 1000  # ILSVRC-2010/2012 [paper §2]
    # 224x224 crops [paper §2]; conv1 then needs the asymmetric (0, 3) zero pad of
    # cuda-convnet to give the paper's 55x55 maps.  Caffe's route is 227 with no pad
    # (see `CAFFE_GEOMETRY`).
    image_size: int = 224
    conv1_pad: tuple[int, int] = (0, 3)
    width: float = 1.0
    # Per-tower filter counts conv1..conv5 and units fc6, fc7 [paper §3.5, Figure 2].
    conv_filters: tuple[int, int, int, int, int] = (48, 128, 192, 192, 128)
    fc_units: int = 2048
    dropout: float = 0.5  # [paper §4.2]
    # Local response normalisation: k=2, n=5, alpha=1e-4, beta=0.75 [paper §3.3].
    lrn_k: float = 2.0
    lrn_n: int = 5
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    # Each tower normalises its own maps, as each GPU did; True sums across both towers'
    # maps at their boundary, as single-device Caffe does (BVLC's weights).
    lrn_across_towers: bool = False
    # Weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden fc layers,
    # 0 elsewhere [paper §5].
    init_stddev: float = 0.01
    biases_one: tuple[str, ...] = ("conv2", "conv4", "conv5", "fc6", "fc7")

    def tower_filters(self) -> tuple[int, ...]:
        """Filters per tower for conv1..conv5 after applying `width`."""
        return tuple(max(0, round(f * self.width)) for f in self.conv_filters)

    def tower_units(self) -> int:
        """Units per tower in fc6 and fc7 after applying `width`."""
        return max(0, round(self.fc_units * self.width))

    def conv1_output_size(self) -> int:
        return (self.image_size + sum(self.conv1_pad) - 11) // 4 + 1


#: Caffe's geometry: 227x227 inputs and an unpadded conv1 also give 55x55 maps.
CAFFE_GEOMETRY = {"image_size": 227, "conv1_pad": (0, 0)}
#: Caffe's LRN, b = a / (1 + alpha/n * sum a^2)^beta with alpha=1e-4, n=5, as this model's
#: b = a / (k + alpha * sum a^2)^beta [paper §3.3]: k=1 and alpha divided by the window,
#: summed over all 96 (256) maps of the layer, across the towers.
CAFFE_LRN = {"lrn_k": 1.0, "lrn_alpha": 1e-4 / 5, "lrn_across_towers": True}


def reduced_config(num_classes: int = 10, image_size: int = 64, width: float = 0.125,
                   init_stddev: float = 0.05, **overrides) -> AlexNetConfig:
    """The paper's topology at a fraction of the cost, for tests and the demo.

    64 is the smallest input the three overlapping 3/2 poolings accept with the
    (0, 3) conv1 pad; `width` 1/8 keeps 6/16/24/24/16 filters and 256 fc units a tower.
    With layers an eighth as wide, the paper's N(0, 0.01) weights [paper §5] leave the
    signal too weak to learn in minutes (the loss sits at ln(classes)), so the reduced
    network starts from N(0, 0.05).
    """
    return AlexNetConfig(num_classes=num_classes, image_size=image_size, width=width,
                         init_stddev=init_stddev, **overrides)
