"""Small datasets written by TensorFlow Datasets itself (a builder's
`download_and_prepare`): the independent reference of the TFDS tests in both packages."""

from __future__ import annotations

from pathlib import Path

import pytest

tfds = pytest.importorskip("tensorflow_datasets")


def prepare_with_tfds(data_dir: Path, features, splits: dict[str, list[dict]],
                      supervised_keys: tuple[str, str] | None = ("image", "label")) -> Path:
    """`splits` (split name: examples) written by TFDS itself, a builder's
    `download_and_prepare`; returns the prepared directory."""
    with tfds.core.registered.skip_registration():
        class TinyImages(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")
            code_path = None  # no checksums file to look for beside this test

            def _info(self):
                return tfds.core.DatasetInfo(builder=self, features=features,
                                             supervised_keys=supervised_keys)

            def _split_generators(self, dl_manager):
                return {split: self._generate_examples(examples)
                        for split, examples in splits.items()}

            def _generate_examples(self, examples):
                yield from enumerate(examples)

    builder = TinyImages(data_dir=str(data_dir))
    builder.download_and_prepare()
    return Path(builder.data_dir)


def imagenet_like(names) -> tfds.features.FeaturesDict:
    """The features of TFDS's imagenet2012: a JPEG, a ClassLabel, the file name."""
    return tfds.features.FeaturesDict({"image": tfds.features.Image(encoding_format="jpeg"),
                                       "label": tfds.features.ClassLabel(names=list(names)),
                                       "file_name": tfds.features.Text()})
