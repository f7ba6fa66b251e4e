"""How the converter converts, each default written once: `ConvertOptions`.

`python -m tfrecords_tools convert` binds one flag to every field
(`tfrecords_tools.base.options`), so `--help` shows these defaults; `convert()` takes
the same object, or its fields as keywords.

Only the standard library is imported here, so `--help` stays instant.
"""

from __future__ import annotations

import dataclasses

from tfrecords_tools.base.errors import ArgumentError
from tfrecords_tools.base.options import check, flag_name, option
from tfrecords_tools.schema import LABEL_OFFSETS, SPLITS

WHAT = "what to write"
HOW = "how to run"


def _shards(split: str) -> str:
    most = 1024 if split == "train" else 128
    return (f"number of {split} shards (default: one per 256 images, at most {most}, as "
            f"for ILSVRC-2012)")


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """What `convert` writes and how it runs.  The shards' bytes depend on the fields of
    "what to write" only, never on the processes or machines; a value out of range is an
    `ArgumentError` naming its flag."""

    splits: tuple[str, ...] | None = option(
        None, "splits to convert (default: every split the source has)", group=WHAT,
        choices=SPLITS)
    train_shards: int | None = option(None, _shards("train"), group=WHAT, at_least=1)
    validation_shards: int | None = option(None, _shards("validation"), group=WHAT,
                                           at_least=1)
    test_shards: int | None = option(None, _shards("test"), group=WHAT, at_least=1)
    # The paper rescales "such that the shorter side was of length 256" and takes "the
    # central 256x256 patch" [paper §2].
    size: int = option(256, "shorter side after resizing [paper §2]", group=WHAT,
                       at_least=1)
    crop: bool = option(True, "keep the central square of the resized image [paper §2]; "
                        "--no-crop keeps the whole image", group=WHAT)
    quality: int = option(90, "JPEG quality of the stored images", group=WHAT, at_least=1,
                          at_most=100)
    seed: int = option(0, "seed of the shard shuffle", group=WHAT)
    label_offset: int = option(
        0, "0: labels 0..N-1, as TFDS, Keras and keras_alexnet read them; 1: labels "
        "1..N (0 = background), as the Inception converter's and tensorflow/tpu's "
        "readers and tf-models' official/legacy parse_record expect; recorded in "
        "manifest.json", group=WHAT, choices=LABEL_OFFSETS)
    allow_incomplete: bool = option(
        False, "convert a source that lacks images its devkit lists (or is damaged part "
        "way), recording the shortfall in manifest.json, instead of stopping with an "
        "error", group=WHAT)
    processes: int | None = option(None, "decoding processes (default: one per usable "
                                   "core)", group=HOW, at_least=1, names=("-j", "--processes"))
    checkpoint_seconds: float = option(
        30.0, "how often the forward pass records where it is, i.e. the most work a kill "
        "can cost (0: after every batch)", group=HOW, at_least=0)
    num_workers: int = option(
        1, "machines (or scheduler jobs) sharing this conversion into one output "
        "directory; each runs the same command but for --worker-index, then any of them "
        "runs `merge`", group=HOW, at_least=1)
    worker_index: int = option(0, "this machine's index in [0, --num-workers)", group=HOW,
                               at_least=0)

    def __post_init__(self):
        check(self, lambda message: ArgumentError(_as_flag(message)))
        if self.splits is not None:
            object.__setattr__(self, "splits", tuple(self.splits))  # a list given
            unknown = [split for split in self.splits if split not in SPLITS]
            if unknown or not self.splits:
                raise ArgumentError(f"--splits {' '.join(self.splits)}: choose from "
                                    f"{', '.join(SPLITS)}")
        if self.worker_index >= self.num_workers:
            raise ArgumentError(f"--worker-index {self.worker_index} must be in [0, "
                                f"{self.num_workers})")

    def num_shards(self, split: str) -> int | None:
        """The shards asked for `split`; None: `schema.default_num_shards`."""
        return getattr(self, f"{split}_shards")


def _as_flag(message: str) -> str:
    """`check`'s message, the field named by its flag (as the user typed it)."""
    field, _, rest = message.partition(" ")
    return f"{flag_name(field)} {rest}"
