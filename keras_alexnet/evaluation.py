"""`keras_alexnet.evaluate`: top-1 and top-5 error as the paper reports them [paper §4.1, §6].

Each image is scored twice in one pass: on its centre crop, and by averaging the
softmax over the paper's ten patches (four corners, centre, and their reflections).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_alexnet import checkpoints, data
from keras_alexnet.contract import InputContract, contract_of
from keras_alexnet.errors import AlexNetError
from tfrecords_tools.dataset import DatasetInfo

CENTER = 4  # the centre crop among `data.ten_patches`


def _errors(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    k = min(5, probabilities.shape[1])
    top5 = np.argsort(-probabilities, axis=1)[:, :k]
    return {"top1_error": float(np.mean(top5[:, 0] != labels)),
            "top5_error": float(np.mean(~(top5 == labels[:, None]).any(axis=1)))}


def _per_class(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    correct = probabilities.argmax(axis=1) == labels
    counts = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=correct, minlength=num_classes)
    return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def _check_classes(info: DatasetInfo, contract: InputContract, source: str) -> None:
    """The shards' labels must mean the model's classes."""
    if info.classes is not None and [wnid for wnid, _ in info.classes] != contract.wnids:
        raise AlexNetError(f"{info.labels_path}: the shards' classes are not the "
                           f"{len(contract.wnids)} classes {source} was trained on (other "
                           f"WNIDs or another order)")


def format_table(results: dict) -> str:
    """The result as the paper's table (error rates in %), then the weakest classes."""
    lines = [f"{results['split']}: {results['images']} images",
             f"{'':14}{'top-1 error':>12}{'top-5 error':>13}"]
    for crop, title in (("center", "centre crop"), ("ten_crop", "10 patches")):
        if crop in results:
            errors = results[crop]
            lines.append(f"{title:14}{100 * errors['top1_error']:11.2f}%"
                         f"{100 * errors['top5_error']:12.2f}%")
    crop = "ten_crop" if "ten_crop" in results else "center"
    scored = [c for c in results["per_class"] if c["images"]]
    worst = sorted(scored, key=lambda c: c[f"{crop}_top1_accuracy"])[:10]
    if worst:
        lines.append(f"lowest top-1 accuracy per class ({crop.replace('_', ' ')}):")
        lines += [f"  {c[f'{crop}_top1_accuracy']:7.2%}  {c['label']:4d} {c['wnid']} {c['name']}"
                  f" ({c['images']} images)" for c in worst]
    return "\n".join(lines)


def evaluate(model_or_checkpoint: keras.Model | str | Path,
             data_dir: str | Path | DatasetInfo,
             split: str = "validation", *, batch_size: int = 128, ten_crop: bool = True,
             output: str | Path | None = None, verbose: bool = True) -> dict:
    """Scores a model on a labelled split of shards.

    The images are preprocessed by the model's input contract (its mean, sizes and
    channel order, recorded by `fit`), whatever `data_dir` holds besides the shards.

    Args:
        model_or_checkpoint: a Keras model with an input contract, a `.keras`
            checkpoint, or a model_dir (its latest checkpoint).
        data_dir: the converter's output directory (or its `DatasetInfo`), read once;
            its labels must be the model's
            classes.  For a checkpoint saved before contracts were recorded, its
            `labels.txt` and per-channel mean stand in.
        split: "validation" (ILSVRC's labelled held-out set) or another labelled split.
        batch_size: images per batch (each is ten patches when `ten_crop`).
        ten_crop: also score the 10-patch average [paper §4.1] (10x the compute).
        output: write the result there as JSON.
        verbose: show a progress bar and print the table.

    Returns: {"split", "images", "checkpoint", "center": {"top1_error", "top5_error"},
        "ten_crop": {...} (when `ten_crop`), "per_class": [{"label", "wnid", "name",
        "images", "center_top1_accuracy", "ten_crop_top1_accuracy"}]}; errors and
        accuracies are fractions, 1 - accuracy = error.
    """
    from tqdm import tqdm

    info = DatasetInfo.of(data_dir)
    checkpoint = None
    if isinstance(model_or_checkpoint, keras.Model):
        model = model_or_checkpoint
    else:
        model = checkpoints.load_model(model_or_checkpoint, compile=False)
        checkpoint = Path(model_or_checkpoint)
        if checkpoint.is_dir():
            checkpoint = checkpoints.latest_checkpoint(checkpoint)
    image_size, num_classes = model.input_shape[1], model.output_shape[-1]
    source = str(checkpoint) if checkpoint else f"model {model.name!r}"
    contract = contract_of(model, info, source)
    _check_classes(info, contract, source)
    data.check_shards(info, split, num_classes)
    records = info.records(split)
    dataset = data.evaluation_dataset(info, image_size, batch_size, num_classes=num_classes,
                                      split=split, crops="ten" if ten_crop else "center",
                                      contract=contract)

    @tf.function(reduce_retracing=True)
    def predict(images):
        if not ten_crop:
            return model(images, training=False)
        patches = tf.reshape(images, (-1, image_size, image_size, 3))
        return tf.reshape(model(patches, training=False),
                          (-1, data.NUM_TEST_PATCHES, num_classes))

    outputs, labels = [], []
    for images, batch_labels in tqdm(dataset, total=math.ceil(records / batch_size),
                                     unit="batch", desc=f"evaluating {split}",
                                     disable=not verbose):
        outputs.append(predict(images).numpy())
        labels.append(batch_labels.numpy())
    if not labels:
        raise AlexNetError(f"{info.path}: the {split} split has no images")
    outputs, labels = np.concatenate(outputs), np.concatenate(labels)
    scores = {"center": outputs[:, CENTER] if ten_crop else outputs}
    if ten_crop:
        scores["ten_crop"] = outputs.mean(axis=1)  # average of the softmax [paper §4.1]

    results = {"split": split, "images": len(labels),
               "checkpoint": str(checkpoint) if checkpoint else None}
    per_class = {}
    for crop, probabilities in scores.items():
        results[crop] = _errors(probabilities, labels)
        per_class[crop] = _per_class(probabilities, labels, num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    results["per_class"] = [
        {"label": label, "wnid": wnid, "name": name, "images": int(counts[label]),
         **{f"{crop}_top1_accuracy": None if np.isnan(accuracy[label]) else
            float(accuracy[label]) for crop, accuracy in per_class.items()}}
        for label, (wnid, name) in enumerate(contract.classes)]
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(results, indent=2))
    if verbose:
        print(format_table(results))
    return results
