"""TensorFlow Datasets in and out, with tensorflow_datasets itself as the reference: TFDS
loads the converter's shards (splits, counts, class names, labels), and `DatasetInfo`
reads a dataset that TFDS prepared, or says which feature it lacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.tfds_builders import imagenet_like, prepare_with_tfds
from tests.tfrecords_tools.conftest import image_bytes
from tfrecords_tools import schema
from tfrecords_tools.convert import convert
from tfrecords_tools.dataset import DatasetInfo
from tfrecords_tools.errors import DatasetError

tfds = pytest.importorskip("tensorflow_datasets")

WNIDS = ("n01484850", "n01440764", "n01443537")  # not sorted: the names keep TFDS's order


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    rng = np.random.default_rng(0)

    def examples(split, count):
        return [{"image": image_bytes(rng), "label": i % len(WNIDS),
                 "file_name": f"{split}_{i}.JPEG"} for i in range(count)]

    return prepare_with_tfds(tmp_path_factory.mktemp("tfds"), imagenet_like(WNIDS),
                             {"train": examples("train", 7), "validation": examples("val", 4)})


def tfds_examples(directory: Path, split: str) -> list[dict]:
    builder = tfds.builder_from_directory(str(directory))
    return list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())


# --- in ------------------------------------------------------------------------------------

def test_a_tfds_prepared_dataset_is_read_from_its_metadata(prepared):
    builder = tfds.builder_from_directory(str(prepared))
    info = DatasetInfo(prepared)
    assert info.prepared is not None and info.manifest is None
    assert info.classes == tuple((name, name) for name in builder.info.features["label"].names)
    assert info.label_offset == 0
    assert info.keys == schema.RecordKeys(image="image", label="label", filename="file_name")
    for split in ("train", "validation"):
        assert info.records(split) == builder.info.splits[split].num_examples
        assert list(info.shards(split)) == sorted(
            Path(f) for f in builder.info.splits[split].filepaths)
    assert not info.has_split("test")
    with pytest.raises(DatasetError, match=r"dataset_info.json: no test split \(of train, "
                                           r"validation, test it has: train, validation\)"):
        info.shards("test")


def test_its_records_parse_with_the_keys_read(prepared):
    info = DatasetInfo(prepared)
    ours = [tf.io.parse_single_example(record, info.keys.spec())
            for record in tf.data.TFRecordDataset([str(s) for s in info.shards("train")])]
    theirs = tfds_examples(prepared, "train")
    assert [int(r[info.keys.label]) for r in ours] == [int(e["label"]) for e in theirs]
    assert [r[info.keys.filename].numpy() for r in ours] == [e["file_name"] for e in theirs]
    assert [tf.io.decode_jpeg(r[info.keys.image]).shape for r in ours] == [
        e["image"].shape for e in theirs]


def write_info(directory: Path, features, supervised_keys=None) -> Path:
    """TFDS's own metadata files (no shards) for `features`."""
    with tfds.core.registered.skip_registration():
        class Described(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                return tfds.core.DatasetInfo(builder=self, features=features,
                                             supervised_keys=supervised_keys)

            def _split_generators(self, dl_manager):
                return {}

            def _generate_examples(self):
                yield from ()

    directory.mkdir(parents=True)
    Described(data_dir=str(directory / "unused")).info.write_to_directory(directory)
    return directory


@pytest.mark.parametrize("features, needed", [
    ({"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["a", "b"])},
     r"needs an Image feature \(the JPEG\); this dataset's features are: label "
     r"\(ClassLabel\), text \(Text\)"),
    ({"image": tfds.features.Image(encoding_format="jpeg"), "caption": tfds.features.Text()},
     r"needs a ClassLabel feature \(the label\); this dataset's features are: caption "
     r"\(Text\), image \(Image\)"),
    ({"image": tfds.features.Image(), "label": tfds.features.ClassLabel(num_classes=2)},
     r"feature 'image' holds PNG images; training reads JPEG"),
    ({"image": tfds.features.Image(encoding_format="jpeg"),
      "label": tfds.features.ClassLabel(num_classes=2)},
     r"label.labels.txt: no such file; feature 'label' has no class names"),
    ({"left": tfds.features.Image(encoding_format="jpeg"),
      "right": tfds.features.Image(encoding_format="jpeg"),
      "label": tfds.features.ClassLabel(names=["a", "b"])},
     r"needs an Image feature \(the JPEG\) \(it has several: make one a supervised key or "
     r"name it 'image'\)"),
], ids=["not images", "no label", "png", "no class names", "two images"])
def test_a_dataset_without_what_training_needs_names_the_feature(tmp_path, features, needed):
    directory = write_info(tmp_path / "ds", tfds.features.FeaturesDict(features))
    with pytest.raises(DatasetError, match=needed):
        DatasetInfo(directory).classes  # noqa: B018


def test_the_supervised_keys_choose_among_several_features(tmp_path):
    jpeg = tfds.features.Image(encoding_format="jpeg")
    features = tfds.features.FeaturesDict({
        "photo": jpeg, "thumbnail": jpeg, "fine": tfds.features.ClassLabel(names=["a", "b"]),
        "coarse": tfds.features.ClassLabel(names=["x"])})
    directory = write_info(tmp_path / "ds", features, supervised_keys=("photo", "fine"))
    info = DatasetInfo(directory)
    assert (info.keys.image, info.keys.label) == ("photo", "fine")
    assert info.classes == (("a", "a"), ("b", "b"))
    assert info.labels_path == directory / "fine.labels.txt"


_CONNECTOR = "tensorflow_datasets.core.features."
#: `features.json` of imagenet2012 in the older form that TFDS's `from_json_content` still
#: reads "for backwards compatibility" (snake_case content).
OLD_FEATURES = {"type": f"{_CONNECTOR}features_dict.FeaturesDict", "content": {
    "image": {"type": f"{_CONNECTOR}image_feature.Image",
              "content": {"shape": [None, None, 3], "dtype": "uint8", "encoding_format": "jpeg"}},
    "label": {"type": f"{_CONNECTOR}class_label_feature.ClassLabel",
              "content": {"num_classes": len(WNIDS)}},
    "file_name": {"type": f"{_CONNECTOR}text_feature.Text", "content": {}}}}


@pytest.mark.parametrize("form", ["to_json", "older"])
def test_the_other_forms_of_features_json_are_read_too(tmp_path, form):
    directory = write_info(tmp_path / "ds", imagenet_like(WNIDS))
    features = imagenet_like(WNIDS).to_json() if form == "to_json" else OLD_FEATURES
    (directory / "features.json").write_text(json.dumps(features))
    reference = tfds.builder_from_directory(str(directory)).info.features  # TFDS reads it
    info = DatasetInfo(directory)
    assert info.keys == schema.RecordKeys("image", "label", "file_name")
    assert [name for name, _ in info.classes] == reference["label"].names == list(WNIDS)


def test_missing_shards_are_named(prepared, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in prepared.iterdir():
        if "validation" not in path.name:
            (copy / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DatasetError, match=r"validation.tfrecord-00000-of-00001: missing"):
        DatasetInfo(copy).shards("train")


# --- out ------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[0, 1], ids=["labels from 0", "label offset 1"])
def converted_folders(request, image_folders, tmp_path_factory):
    output = tmp_path_factory.mktemp(f"offset{request.param}")
    convert(output, image_folders, processes=1, size=40, label_offset=request.param,
            train_shards=2, validation_shards=1, test_shards=1, progress=False)
    return output, request.param


def test_tfds_loads_the_converters_shards_as_they_are(converted_folders):
    output, offset = converted_folders
    manifest = json.loads((output / schema.MANIFEST).read_text())
    wnids = [wnid for wnid, _ in schema.read_labels(output / schema.LABELS)]
    builder = tfds.builder_from_directory(str(output))
    assert set(builder.info.splits) == set(manifest["splits"]) == {"train", "validation", "test"}
    names = builder.info.features["image"]["class"]["label"].names
    assert names == ["background"] * offset + wnids
    for split, entry in manifest["splits"].items():
        assert builder.info.splits[split].num_examples == entry["records"]
        assert builder.info.splits[split].num_shards == entry["num_shards"]
        ours = {}
        for shard in sorted(output.glob(schema.shard_pattern(split))):
            for record in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
                example = tf.train.Example.FromString(record).features.feature
                ours[example["image/filename"].bytes_list.value[0]] = (
                    example["image/class/label"].int64_list.value[0],
                    example["image/class/synset"].bytes_list.value[0].decode())
        theirs = {e["image"]["filename"]: e for e in tfds_examples(output, split)}
        assert {name: label for name, (label, _) in ours.items()} == {
            name: int(e["image"]["class"]["label"]) for name, e in theirs.items()}
        for name, (label, synset) in ours.items():
            if label != schema.UNLABELED:  # TFDS's name of the label is the shard's synset
                assert names[label] == synset
            image = theirs[name]["image"]
            assert image["encoded"].shape == (image["height"], image["width"], 3)
