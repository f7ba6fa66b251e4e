"""`keras_alexnet.evaluate`: top-1 and top-5 error as the paper reports them [paper §4.1, §6].

Each image is scored twice in one pass: on its centre crop, and by averaging the
softmax over the paper's ten patches (four corners, centre, and their reflections).
Several models are scored as an ensemble, each member by its own input contract, the
ensemble by the mean of their softmax (`keras_alexnet.ensemble`) [paper §6, Table 2].
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_alexnet import data
from keras_alexnet.contract import InputContract
from keras_alexnet.ensemble import Member, ModelSource, load_members
from keras_alexnet.errors import AlexNetError
from tfrecords_tools.base import storage
from tfrecords_tools.base.words import count
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


def _error_cells(errors: dict[str, float]) -> str:
    return f"{100 * errors['top1_error']:11.2f}%{100 * errors['top5_error']:12.2f}%"


def _ensemble_rows(results: dict) -> list[str]:
    """Each member's errors, then the ensemble's, as the paper's Table 2 lists "1 CNN"
    and "5 CNNs" [paper §6]."""
    crops = [(crop, title) for crop, title in (("center", "centre crop"),
                                               ("ten_crop", "10 patches")) if crop in results]
    rows = [(member["source"], member) for member in results["members"]]
    rows.append((f"ensemble of {len(rows)}", results))
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':{width}}" + "".join(f"{title:>25}" for _, title in crops),
             f"{'':{width}}" + f"{'top-1 error':>12}{'top-5 error':>13}" * len(crops)]
    lines += [f"{name:{width}}" + "".join(_error_cells(row[crop]) for crop, _ in crops)
              for name, row in rows]
    return lines


def format_table(results: dict) -> str:
    """The result as the paper's table (error rates in %), then the weakest classes."""
    lines = [f"{results['split']}: {count(results['images'], 'image')}"]
    if "members" in results:
        lines += _ensemble_rows(results)
    else:
        lines.append(f"{'':14}{'top-1 error':>12}{'top-5 error':>13}")
        for crop, title in (("center", "centre crop"), ("ten_crop", "10 patches")):
            if crop in results:
                lines.append(f"{title:14}{_error_cells(results[crop])}")
    crop = "ten_crop" if "ten_crop" in results else "center"
    scored = [c for c in results["per_class"] if c["images"]]
    worst = sorted(scored, key=lambda c: c[f"{crop}_top1_accuracy"])[:10]
    if worst:
        lines.append(f"lowest top-1 accuracy per class ({crop.replace('_', ' ')}):")
        # A folder's class has its folder name for both: said once.
        lines += [f"  {c[f'{crop}_top1_accuracy']:7.2%}  {c['label']:4d} "
                  f"{' '.join(dict.fromkeys(filter(None, (c['wnid'], c['name']))))}"
                  f" ({count(c['images'], 'image')})" for c in worst]
    return "\n".join(lines)


def _member_scores(member: Member, info: DatasetInfo, split: str, batch_size: int,
                   ten_crop: bool, verbose: bool, description: str
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One network's softmax on every image of the split, preprocessed by its own
    contract, in the ensemble's class order: {"center": (N, C), "ten_crop": (N, C)} and
    the labels."""
    from tfrecords_tools.base.progress import tqdm

    model = member.model
    image_size, num_classes = model.input_shape[1], model.output_shape[-1]
    dataset = data.evaluation_dataset(info, image_size, batch_size, num_classes=num_classes,
                                      split=split, crops="ten" if ten_crop else "center",
                                      contract=member.contract)

    @tf.function(reduce_retracing=True)
    def predict(images):
        if not ten_crop:
            return model(images, training=False)
        patches = tf.reshape(images, (-1, image_size, image_size, 3))
        return tf.reshape(model(patches, training=False),
                          (-1, data.NUM_TEST_PATCHES, num_classes))

    scores, labels = {"center": []}, []
    if ten_crop:
        scores["ten_crop"] = []
    for images, batch_labels in tqdm(dataset, total=math.ceil(info.records(split) / batch_size),
                                     unit="batch", desc=description, disable=not verbose):
        outputs = predict(images).numpy()[..., member.order]
        if ten_crop:
            scores["center"].append(outputs[:, CENTER])
            scores["ten_crop"].append(outputs.mean(axis=1))  # [paper §4.1]
        else:
            scores["center"].append(outputs)
        labels.append(batch_labels.numpy())
    if not labels:
        raise AlexNetError(f"{info.path}: the {split} split has no images")
    return ({crop: np.concatenate(parts) for crop, parts in scores.items()},
            np.concatenate(labels))


def evaluate(model_or_checkpoint: ModelSource | Sequence[ModelSource],
             data_dir: str | Path | DatasetInfo,
             split: str = "validation", *, batch_size: int = 128, ten_crop: bool = True,
             output: str | Path | None = None, verbose: bool = True) -> dict:
    """Scores a model, or an ensemble of models, on a labelled split of shards.

    The images are preprocessed by each model's input contract (its mean, sizes and
    channel order, recorded by `fit`), whatever `data_dir` holds besides the shards.

    Args:
        model_or_checkpoint: a Keras model with an input contract, a `.keras`
            checkpoint, or a model_dir (its latest checkpoint); or a list of them: an
            ensemble, scored by the mean of the members' softmax [paper §6, Table 2],
            its classes matched by WNID (`keras_alexnet.ensemble`).  Each member reads
            the split once.
        data_dir: the converter's output directory (or its `DatasetInfo`), read once;
            its labels must be the model's
            classes (an ensemble's: its first member's).  For a checkpoint saved before
            contracts were recorded, its `labels.txt` and per-channel mean stand in.
        split: "validation" (ILSVRC's labelled held-out set) or another labelled split.
        batch_size: images per batch (each is ten patches when `ten_crop`).
        ten_crop: also score the 10-patch average [paper §4.1] (10x the compute).
        output: write the result there as JSON.
        verbose: show a progress bar and print the table.

    Returns: {"split", "images", "checkpoint", "center": {"top1_error", "top5_error"},
        "ten_crop": {...} (when `ten_crop`), "per_class": [{"label", "wnid", "name",
        "images", "center_top1_accuracy", "ten_crop_top1_accuracy"}]}; errors and
        accuracies are fractions, 1 - accuracy = error.  An ensemble's result also has
        "members": [{"source", "checkpoint", "center", "ten_crop"}], each member's own
        errors; its "checkpoint" is None and the rest are the ensemble's.
    """
    info = DatasetInfo.of(data_dir)
    members = load_members(model_or_checkpoint, info)
    contract, source = members[0].contract, members[0].source
    if len(members) > 1:
        source += " (the ensemble's first member, whose class order it takes)"
    _check_classes(info, contract, source)
    num_classes = len(contract.classes)
    data.check_shards(info, split, num_classes)

    totals, member_results = {}, []
    for member in members:
        description = f"evaluating {split}" + (f" ({member.source})" if len(members) > 1
                                               else "")
        scores, labels = _member_scores(member, info, split, batch_size, ten_crop, verbose,
                                        description)
        checkpoint = str(member.checkpoint) if member.checkpoint else None
        member_results.append({"source": member.source, "checkpoint": checkpoint,
                               **{crop: _errors(probabilities, labels)
                                  for crop, probabilities in scores.items()}})
        for crop, probabilities in scores.items():  # summed: one member's scores at a time
            totals[crop] = totals[crop] + probabilities if crop in totals else probabilities
    # The ensemble's prediction is the mean of its members' softmax [paper §6].
    scores = {crop: total / len(members) for crop, total in totals.items()}

    results = {"split": split, "images": len(labels),
               "checkpoint": member_results[0]["checkpoint"] if len(members) == 1 else None}
    if len(members) > 1:
        results["members"] = member_results
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
        output = storage.path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2))
    if verbose:
        print(format_table(results))
    return results
