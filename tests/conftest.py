"""Fixtures shared by every test package."""

import os
import signal

# Tests send SIGINT to child processes as Ctrl-C does.  A test run started in the
# background of a shell script inherits SIGINT ignored, and so would those children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Quiet TensorFlow's C++ start-up chatter; keep the tests on the CPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest

#: The shared shards suit `keras_alexnet.reduced_config()`: 64x64 crops are taken from
#: 73x73 images, `keras_alexnet.preprocessing.resize_size_for(64)`.
SAMPLE_IMAGE_SIZE = 73
SAMPLE_NUM_SHARDS = {"train": 4, "validation": 2, "test": 1}
SAMPLE_SHARDS = {f"{split}_shards": count for split, count in SAMPLE_NUM_SHARDS.items()}


@pytest.fixture(scope="session")
def sample_archives(tmp_path_factory):
    """Ten-class ILSVRC-shaped archives (30 train, 5 val images a class) with every quirk."""
    from tfrecords_tools.sample import make_sample_archives

    return make_sample_archives(tmp_path_factory.mktemp("ilsvrc"), num_classes=10,
                                train_per_class=30, val_per_class=5, test_images=10, seed=0,
                                quirks=True)


@pytest.fixture(scope="session")
def converted_shards(sample_archives, tmp_path_factory):
    """`sample_archives` as shards: 73x73 images, labels.txt, manifest.json, stats.json and
    mean_image.npy in the returned directory."""
    from tfrecords_tools.convert import convert
    from tfrecords_tools.stats import compute_stats

    output = tmp_path_factory.mktemp("shards")
    convert(output, sample_archives.directory, **SAMPLE_SHARDS, size=SAMPLE_IMAGE_SIZE,
            processes=1, progress=False)
    compute_stats(output, progress=False)
    return output


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """The reduced model exported as a SavedModel (`tests/serving/exported_model.py`):
    read-only for tests; copy it to change it."""
    from tests.serving.exported_model import make_exported_model

    return make_exported_model(tmp_path_factory.mktemp("exported"))
