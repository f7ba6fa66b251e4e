"""The network's and the training's hyper-parameters, with the paper's values as
defaults: `AlexNetConfig` (what is built) and `TrainingOptions` (how it is trained).

Every number cites its place in Krizhevsky, Sutskever & Hinton (2012), "ImageNet
Classification with Deep Convolutional Neural Networks" [paper §N].  Each default is
written here once: `fit`, the `train` command's flags (and their `--help`) and the run
file `run.json` read them from these classes.  Free of TensorFlow at import.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from keras_alexnet.errors import AlexNetError
from tfrecords_tools.base.options import check, option

MEAN_MODES = ("channel", "pixel")  # per-channel mean, or the per-pixel mean image [paper §2]
#: The learned layers from the input up, each in both towers [paper §3.5, Figure 2];
#: conv6 only in the CNN* network (`AlexNetConfig.conv6`) [paper §6].
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc6", "fc7", "fc8")
#: Where training runs (`keras_alexnet.distribute`): the paper's two towers on two
#: devices [paper §3.2], or tf.distribute's data parallelism.
STRATEGIES = ("auto", "towers", "mirrored", "multi-worker")
PAPER_LEARNING_RATE = 0.01  # [paper §5]
#: Caffe's fine-tuning example (`models/finetune_flickr_style/solver.prototxt`,
#: `base_lr: 0.001`): a tenth of training from scratch, the weights being already good.
FINE_TUNING_LEARNING_RATE = 0.001
#: How a fine-tuning run trains a new fc8 (`keras_alexnet.finetune`), the default first.
FINE_TUNING_RECIPES = ("lp-ft", "caffe")
#: LRN's alpha as the paper prints it [paper §3.3]; `AlexNetConfig.lrn_alpha` says why
#: the default is a fifth of it.
PRINTED_LRN_ALPHA = 1e-4


@dataclasses.dataclass(frozen=True)
class AlexNetConfig:
    """Topology and initialisation of the two-tower AlexNet.

    The defaults are the paper's network. `width` scales every layer's filter and
    unit count (the reduced model of the tests and the demo keeps the topology).

    `conv6` builds the CNN* network, "an extra sixth convolutional layer over the
    last pooling layer" [paper §6], which gives no size.  Ours is the smallest reading
    of that sentence in the paper's own terms: in each tower, 3x3 filters with stride 1
    and a one-pixel zero pad as conv3..conv5 [paper §3.5], as many as conv5 (128 a
    tower), reading its own tower's pool5 as conv4 and conv5 read their own tower, then
    ReLU ("applied to the output of every convolutional ... layer" [paper §3.5]) and
    nothing else: the paper names no pooling or normalisation after it, and the
    6x6 maps it keeps feed fc6 unchanged in size.  Its biases start as conv4's and
    conv5's [paper §5].  It adds 2 x (3*3*128*128 + 128) = 295,168 parameters and
    6*6*256 = 9,216 neurons.
    """

    num_classes: int = 1000  # ILSVRC-2010/2012 [paper §2]
    # 224x224 crops [paper §2]; conv1 then needs the asymmetric (0, 3) zero pad of
    # cuda-convnet to give the paper's 55x55 maps.  Caffe's route is 227 with no pad
    # (see `CAFFE_GEOMETRY`).
    image_size: int = 224
    conv1_pad: tuple[int, int] = (0, 3)
    # conv1's 11x11 kernels with a stride of 4 pixels [paper §3.5]; `SMALL_PHOTOS` reads
    # 32x32 photos with 5x5 kernels at stride 1, as the authors' CIFAR-10 layer files do.
    conv1_size: int = 11
    conv1_stride: int = 4
    width: float = 1.0
    # Per-tower filter counts conv1..conv5 and units fc6, fc7 [paper §3.5, Figure 2].
    conv_filters: tuple[int, int, int, int, int] = (48, 128, 192, 192, 128)
    fc_units: int = 2048
    # The CNN* network's sixth conv layer over pool5 [paper §6] (see the class doc).
    conv6: bool = False
    dropout: float = 0.5  # [paper §4.2]
    # Local response normalisation b = a / (k + alpha * sum_n a^2)^beta with k=2, n=5,
    # beta=0.75 [paper §3.3].  `lrn_alpha` multiplies the plain sum of squares.  The
    # paper prints alpha=1e-4, but the authors' code divides it by n before use
    # (cuda-convnet's layer parser: `scale /= size` for cross-map normalisation, with
    # scale 1e-4 and size 5 in cuda-convnet2's ImageNet layer file), so the network
    # behind the paper's figures used 1e-4 / 5: the default.  `PRINTED_LRN` gives the
    # printed equation, 5x stronger.
    lrn_k: float = 2.0
    lrn_n: int = 5
    lrn_alpha: float = PRINTED_LRN_ALPHA / 5
    lrn_beta: float = 0.75
    # Each tower normalises its own maps, as each GPU did; True sums across both towers'
    # maps at their boundary, as single-device Caffe does (BVLC's weights).
    lrn_across_towers: bool = False
    # Weights N(0, 0.01); biases `bias_init` = 1 in conv2, conv4, conv5 and the hidden
    # fc layers, 0 elsewhere [paper §5] (conv6, of CNN* only, as conv4 and conv5).
    # Caffe's bvlc_alexnet starts them at 0.1 ("initializing non-zero biases to 0.1
    # instead of 1 (found necessary for training, as initialization to 1 gave flat
    # loss)", its readme).
    init_stddev: float = 0.01
    biases_one: tuple[str, ...] = ("conv2", "conv4", "conv5", "conv6", "fc6", "fc7")
    bias_init: float = 1.0

    def tower_filters(self) -> tuple[int, ...]:
        """Filters per tower for conv1..conv5 after applying `width`."""
        return tuple(max(0, round(f * self.width)) for f in self.conv_filters)

    def tower_units(self) -> int:
        """Units per tower in fc6 and fc7 after applying `width`."""
        return max(0, round(self.fc_units * self.width))

    def conv1_output_size(self) -> int:
        return (self.image_size + sum(self.conv1_pad) - self.conv1_size) // self.conv1_stride + 1

    def layers(self) -> tuple[str, ...]:
        """The learned layers this network has, from the input up (`LAYERS`, conv6
        only with `conv6`)."""
        return tuple(name for name in LAYERS if name != "conv6" or self.conv6)


#: The LRN of the paper's printed equation, alpha=1e-4 on the sum [paper §3.3] (the
#: normalisation of checkpoints written before the default became the authors' form).
PRINTED_LRN = {"lrn_alpha": PRINTED_LRN_ALPHA}
#: Caffe's geometry: 227x227 inputs and an unpadded conv1 also give 55x55 maps.
CAFFE_GEOMETRY = {"image_size": 227, "conv1_pad": (0, 0)}
#: Caffe's LRN, b = a / (1 + alpha/n * sum a^2)^beta with alpha=1e-4, n=5, as this model's
#: b = a / (k + alpha * sum a^2)^beta [paper §3.3]: k=1 and alpha divided by the window,
#: summed over all 96 (256) maps of the layer, across the towers.
CAFFE_LRN = {"lrn_k": 1.0, "lrn_alpha": PRINTED_LRN_ALPHA / 5, "lrn_across_towers": True}


def reduced_config(num_classes: int = 10, image_size: int = 64, width: float = 0.125,
                   init_stddev: float = 0.05, bias_init: float = 0.1,
                   **overrides) -> AlexNetConfig:
    """The paper's topology at a fraction of the cost, for tests, the demo and a few
    hundred photos of your own.

    64 is the smallest input the three overlapping 3/2 poolings accept with the
    (0, 3) conv1 pad; `width` 1/8 keeps 6/16/24/24/16 filters and 256 fc units a tower.
    With layers an eighth as wide, the paper's N(0, 0.01) weights [paper §5] leave the
    signal too weak to learn in minutes (the loss sits at ln(classes)), so the reduced
    network starts from N(0, 0.05).  Its biases that the paper sets to 1 [paper §5]
    start at 0.1, as Caffe's bvlc_alexnet: at 1, trained on 2,500 CIFAR-10 photos, 74%
    of its fc7 units ended dead on photos of other classes (2% at 0.1), and its held-out
    error was 0.46 against 0.42 (`benchmarks/RESULTS.md`, "transfer.py").
    """
    return AlexNetConfig(num_classes=num_classes, image_size=image_size, width=width,
                         init_stddev=init_stddev, bias_init=bias_init, **overrides)


def small_photos_config(num_classes: int = 10, image_size: int = 28, width: float = 0.25,
                        **overrides) -> AlexNetConfig:
    """The paper's layers for small photos such as CIFAR-10's 32x32: conv1 with 5x5
    kernels at stride 1 and a 2-pixel pad (the first layer of cuda-convnet's CIFAR-10
    layer files, `example-layers/layers-18pct.cfg`) instead of 11x11 at stride 4 [paper
    §3.5], then the paper's layers unchanged at `width` 1/4; 28x28 random crops of
    32x32 photos (converted with `--size 32`), as the 224 crops of 256 [paper §4.1].
    The maps go 28 -> pool1 13 -> pool2 6 -> pool5 2.  Weights N(0, 0.05) and biases
    0.1, as the reduced network (`reduced_config`).
    """
    return reduced_config(num_classes=num_classes, image_size=image_size, width=width,
                          conv1_size=5, conv1_stride=1, conv1_pad=(2, 2), **overrides)


#: The networks a user picks by name (`train --network`).
NETWORKS = {"paper": AlexNetConfig, "reduced": reduced_config,
            "small-photos": small_photos_config}


# --- training ------------------------------------------------------------------------------

SCHEDULE = "training [paper §5]"
FINE_TUNING = "fine-tuning [paper §6]"
INPUT = "input [paper §4.1]"
DEVICES = "devices"
OUTPUT = "output"


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """How `keras_alexnet.fit` trains: the paper's recipe by default [paper §5].

    SGD with batch 128, momentum 0.9 and weight decay 0.0005 inside the momentum
    (`PaperSGD`); learning rate 0.01, divided by 10 when the validation error stops
    improving, at most three times; about 90 epochs; random crops, reflections and PCA
    lighting [paper §4.1].  A value out of range raises ValueError naming the field.
    `fit(data_dir, model_dir, **options)` takes the fields as keywords.
    """

    # The schedule [paper §5].
    epochs: int = option(90, "total epochs, counting those already done in model_dir "
                          "(\"roughly 90 cycles\" [paper §5])", group=SCHEDULE, at_least=1)
    batch_size: int = option(128, "images per step, over all devices [paper §5]",
                              group=SCHEDULE, at_least=1)
    learning_rate: float | None = option(
        None, f"initial learning rate (default: {PAPER_LEARNING_RATE} [paper §5], "
        f"{FINE_TUNING_LEARNING_RATE} with --init-from)", group=SCHEDULE, above=0)
    momentum: float = option(0.9, "[paper §5]", group=SCHEDULE, at_least=0, below=1)
    weight_decay: float = option(0.0005, "decay inside the momentum, on kernels [paper §5]",
                                  group=SCHEDULE, at_least=0)
    # "Divide the learning rate by 10 when the validation error rate stopped improving"
    # [paper §5] gives no window: five epochs is ours.
    patience: int = option(5, "epochs without a better validation error before dividing "
                            "the learning rate by 10", group=SCHEDULE, at_least=0)
    max_lr_reductions: int = option(3, "divisions of the learning rate at most (\"reduced "
                                     "three times prior to termination\" [paper §5])",
                                     group=SCHEDULE, at_least=0)
    min_delta: float = option(0.0, "the smallest validation accuracy gain counted as an "
                               "improvement", group=SCHEDULE, at_least=0)
    steps_per_epoch: int | None = option(None, "batches per epoch (default: one pass over "
                                          "the training images)", group=SCHEDULE, at_least=1)
    validation_steps: int | None = option(None, "validation batches per epoch (default: "
                                           "the whole validation split)", group=SCHEDULE,
                                           at_least=1)
    # The input [paper §2, §4.1].
    mean: str | None = option(None, "subtract the per-channel mean or the per-pixel mean "
                               "image [paper §2] (default: channel for a new model; a resumed "
                               "one keeps its checkpoint's)", group=INPUT, choices=MEAN_MODES)
    lighting_stddev: float = option(0.1, "stddev of the PCA lighting alphas, \"drawn from a "
                                     "Gaussian with mean zero and standard deviation 0.1\" "
                                     "[paper §4.1]; 0 turns it off", group=INPUT, at_least=0)
    seed: int | None = option(None, "seeds the initial weights, dropout, data order and "
                               "augmentation (default: drawn, printed and kept in run.json)",
                               group=INPUT)
    deterministic: bool = option(True, "input order independent of thread timing, so that "
                                  "a seed repeats a run bit for bit", group=INPUT)
    # Where it runs.
    strategy: str = option("auto", "towers: model parallel on two devices as the paper "
                            "[paper §3.2]; mirrored: data parallel on this machine's GPUs; "
                            "multi-worker: across machines from TF_CONFIG", group=DEVICES,
                            choices=STRATEGIES)
    devices: tuple[str, str] | None = option(None, "devices of the two towers, e.g. /GPU:0 "
                                              "/GPU:1", group=DEVICES, nargs=2,
                                              metavar=("TOWER_A", "TOWER_B"))
    mixed_precision: str | None = option(None, "Keras mixed-precision policy of a new model "
                                          "(a resumed one keeps its own)", group=DEVICES,
                                          choices=("mixed_float16", "mixed_bfloat16"))
    xla: bool | None = option(None, "compile the training step with XLA (default: on for a "
                               "run of at least 1,000 steps on one CPU without AVX-512 and "
                               "no GPU, where its step is the faster; off elsewhere; the "
                               "choice is printed and kept in run.json)", group=DEVICES)
    # What it writes.
    keep_checkpoints: int = option(5, "newest epoch checkpoints kept, besides the best "
                                    "epoch's (which evaluate, export and features use); 0 "
                                    "keeps all",
                                    group=OUTPUT, at_least=0)
    # Not a paper number: about a minute of one current GPU on the paper's network, ten
    # backups in an ImageNet epoch of 10,009 steps at batch 128, each about 0.5 GB.
    backup_every: int = option(1000, "save the whole training state every this many "
                                "steps; 0: only at epoch ends and on Ctrl-C", group=OUTPUT,
                                at_least=0, metavar="STEPS")
    tensorboard: bool = option(True, "write TensorBoard logs (with the tensorboard "
                                "package)", group=OUTPUT)
    # Fine-tuning [paper §6: "1 CNN*", pre-trained then fine-tuned] (`keras_alexnet.finetune`).
    init_from: str | None = option(None, "start a new run from this run directory, .keras "
                                    "checkpoint or named weights (bvlc_alexnet): its weights, "
                                    "geometry and mean, the data's "
                                    "classes (a new fc8 when their count differs, learning 10x "
                                    "faster, its biases 20x)", group=FINE_TUNING,
                                    metavar="SOURCE")
    freeze: str | None = option(None, "keep this layer and every layer below it fixed, in "
                                 "both towers (conv5: a new classifier on frozen features)",
                                 group=FINE_TUNING, choices=LAYERS[:-1])
    recipe: str = option("lp-ft", "how a new fc8 is trained: lp-ft fits it first as a "
                          "linear probe on the source's fc7 features of the training images, "
                          "then trains every layer (Kumar et al. 2022); caffe starts it from "
                          "noise at 10x the rate, its biases 20x (Caffe's "
                          "finetune_flickr_style)", group=FINE_TUNING,
                          choices=FINE_TUNING_RECIPES)

    def __post_init__(self):
        if self.init_from is not None:  # fit(init_from=Path(...)): run.json records a string
            object.__setattr__(self, "init_from", os.fspath(self.init_from))
        check(self, AlexNetError)
        if self.freeze and not self.init_from:
            raise AlexNetError(f"freeze {self.freeze!r} needs init_from: the weights to keep "
                               f"fixed come from a source run")
        if self.devices is not None and len(self.devices) != 2:
            raise AlexNetError(f"devices must name two devices (tower_a, tower_b), got "
                               f"{self.devices!r}")

    @property
    def initial_learning_rate(self) -> float:
        """`learning_rate`, or its default: the paper's, or Caffe's for fine-tuning."""
        if self.learning_rate is not None:
            return self.learning_rate
        return FINE_TUNING_LEARNING_RATE if self.init_from else PAPER_LEARNING_RATE

    def replace(self, **changes: Any) -> TrainingOptions:
        """A copy with `changes`; a name that is no option is a TypeError naming it."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown training option(s) {', '.join(unknown)}; the options "
                            f"are the fields of keras_alexnet.config.TrainingOptions")
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The options as run.json records them (a strategy object by its class name)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if not isinstance(self.strategy, str):
            values["strategy"] = type(self.strategy).__name__
        if self.devices is not None:
            values["devices"] = list(self.devices)
        return values


