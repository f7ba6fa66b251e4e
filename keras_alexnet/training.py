"""`keras_alexnet.fit`: train AlexNet on the converter's shards the paper's way [paper §5].

A run writes into `model_dir` (the layout is `keras_alexnet.checkpoints`'s):
    checkpoints/epoch-NNNN.keras   the whole model with optimiser state, every epoch
    checkpoints/backup.keras       the whole training state every `backup_every` steps
    training_log.csv               one row per epoch (Keras CSVLogger)
    run.json                       the seed, so that the run can be repeated
    tensorboard/                   TensorBoard event files
and a rerun with the same `model_dir` resumes from the newest of them: the same epoch
and step, learning rate, momentum, dropout streams and images in the same order, so
the weights end bit-identical to those of a run that never stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.util
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_alexnet import checkpoints, data
from keras_alexnet.callbacks import (
    Checkpoints,
    DivideLearningRateOnPlateau,
    Progress,
    RunCallbacks,
    StopOnNaN,
)
from keras_alexnet.config import BACKUP_EVERY, AlexNetConfig
from keras_alexnet.contract import MEAN_MODES, InputContract
from keras_alexnet.distribute import is_chief, keras_multi_worker_fixes, select_strategy
from keras_alexnet.model import build_model, model_topology, topology
from keras_alexnet.optimizer import PaperSGD
from keras_alexnet.preprocessing import load_stats
from tfrecords_tools.schema import LABELS, read_labels


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`: the state was saved, the message says how to resume."""


# --- the training log and the run file -----------------------------------------------------

def read_log(model_dir: str | Path) -> list[dict[str, str]]:
    """The rows of `training_log.csv` (empty when there is none)."""
    path = Path(model_dir) / checkpoints.LOG_NAME
    if not path.exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _truncate_log(model_dir: Path, epochs_done: int) -> list[dict[str, str]]:
    """Drops rows of epochs newer than the checkpoint (a kill between log and save, or
    an epoch a callback cut short)."""
    path = model_dir / checkpoints.LOG_NAME
    rows = read_log(model_dir)
    kept = [row for row in rows if int(row["epoch"]) < epochs_done]
    if len(kept) != len(rows):
        with open(path, newline="") as file:
            header = next(csv.reader(file))
        with open(path, "w", newline="") as file:
            writer = csv.DictWriter(file, header)
            writer.writeheader()
            writer.writerows(kept)
    return kept


def _run_seed(model_dir: Path, seed: int | None, chief: bool) -> tuple[int, bool]:
    """The run's seed and whether it was drawn now; recorded in `run.json`.

    A resumed run takes the seed it started with; another seed would change the
    images' order and augmentation, so it is refused.
    """
    path = model_dir / checkpoints.RUN_NAME
    recorded = json.loads(path.read_text())["seed"] if path.exists() else None
    if recorded is not None and seed is not None and seed != recorded:
        raise ValueError(f"seed {seed} differs from the seed {recorded} that {model_dir} was "
                         f"started with ({path}); leave seed out to resume, or use another "
                         f"model_dir")
    drawn = seed is None and recorded is None
    seed = recorded if seed is None and recorded is not None else seed
    seed = random.randrange(2**20) if seed is None else seed
    if chief and recorded is None:
        model_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seed": seed}) + "\n")
    return seed, drawn


# --- checks -------------------------------------------------------------------------------

def _check_arguments(**values) -> None:
    """A ValueError naming the first argument outside its range."""
    rules = {"epochs": (1, None), "batch_size": (1, None), "learning_rate": (0, None),
             "momentum": (0, 1), "weight_decay": (0, None), "patience": (0, None),
             "max_lr_reductions": (0, None), "steps_per_epoch": (1, None),
             "validation_steps": (1, None), "lighting_stddev": (0, None),
             "backup_every": (0, None), "keep_checkpoints": (1, None)}
    strict = {"learning_rate"}  # zero is not allowed either
    for name, value in values.items():
        if value is None:
            continue
        low, high = rules[name]
        if (value <= low if name in strict else value < low) or \
                (high is not None and value >= high):
            bound = (f"more than {low}" if name in strict else f"at least {low}") + \
                (f" and less than {high}" if high is not None else "")
            raise ValueError(f"{name} must be {bound}, got {value!r}")


def _num_classes(data_dir: Path, config: AlexNetConfig | None) -> int:
    labels = data_dir / LABELS
    if labels.exists():
        count = len(read_labels(labels))
        if config is not None and config.num_classes != count:
            raise ValueError(f"config.num_classes is {config.num_classes} but {labels} "
                             f"lists {count} classes")
        return count
    if config is None:
        raise ValueError(f"{data_dir}: no labels.txt; pass a config with num_classes")
    return config.num_classes


def _check_compatible(model: keras.Model, path: Path, num_classes: int,
                      config: AlexNetConfig | None) -> None:
    """A checkpoint must match the data (classes) and any config asked for."""
    classes = model.output_shape[-1]
    if classes != num_classes:
        raise ValueError(f"{path}: the checkpoint classifies {classes} classes but the data "
                         f"has {num_classes}; use another model_dir")
    if config is None:
        return
    found, wanted = model_topology(model), topology(config)
    for name, value in wanted.items():
        if found[name] != value:
            raise ValueError(f"{path}: the checkpoint has {name} {found[name]} but the config "
                             f"gives {value}; use another model_dir")


# --- fit ----------------------------------------------------------------------------------

def _build(config: AlexNetConfig, devices, mixed_precision: str | None, seed: int
           ) -> keras.Model:
    """The model, its layers computing in `mixed_precision` (they keep the policy when
    saved, so a resumed run keeps it too) without changing the global policy."""
    previous = keras.mixed_precision.dtype_policy()
    if mixed_precision:
        keras.mixed_precision.set_dtype_policy(mixed_precision)
    try:
        return build_model(config, devices=devices, seed=seed)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _continue_dropout_streams(model: keras.Model, seed: int, steps_done: int) -> None:
    """Puts each dropout layer's random stream where `steps_done` training steps leave it.

    A `.keras` file does not keep the dropout seed state (Keras draws a new seed on
    load), and each step advances it by one: seeded from `seed`, a resumed run drops
    the same units as a run that never stopped.
    """
    states = [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]
    for index, state in enumerate(states):
        state.assign(np.array([seed * 1_000 + index, steps_done], state.dtype))


def _resume_point(model_dir: Path) -> tuple[Path | None, dict]:
    """The newest saved state and its metadata: the step backup when it is newer than
    the last epoch checkpoint, else that checkpoint (None and {} for a new run)."""
    latest = checkpoints.latest_checkpoint(model_dir)
    epochs_done = checkpoints.checkpoint_epoch(latest) if latest else 0
    backup = checkpoints.backup_path(model_dir)
    if backup.exists():
        metadata = checkpoints.read_metadata(backup)
        if (metadata.get("epoch", -1), metadata.get("step", 0)) > (epochs_done, 0):
            return backup, metadata
    if latest is None:
        return None, {}
    return latest, {**checkpoints.read_metadata(latest), "epoch": epochs_done, "step": 0}


def _resume_or_build(model_dir: Path, strategy: tf.distribute.Strategy, num_classes: int,
                     config: AlexNetConfig | None, *, devices, mixed_precision: str | None,
                     make_optimizer: Callable[[], keras.optimizers.Optimizer], xla: bool,
                     seed: int) -> tuple[keras.Model, Path | None, dict]:
    """The newest saved state's model, path and metadata, else a new model; compiled.

    Everything is created in the strategy's scope (the optimizer too: its slots must
    be variables of the same strategy as the weights)."""
    path, metadata = _resume_point(model_dir)
    with strategy.scope():
        if path is not None:
            model = checkpoints.load_model(path)
            optimizer = getattr(model, "optimizer", None)  # momentum, iterations, rate
            if optimizer is None:  # imported weights (`keras_alexnet.bvlc`): fine-tuning
                optimizer = make_optimizer()
                optimizer.build(model.trainable_variables)
        else:
            config = dataclasses.replace(config or AlexNetConfig(), num_classes=num_classes)
            model = _build(config, devices, mixed_precision, seed)
            optimizer = make_optimizer()
            optimizer.build(model.trainable_variables)
        model.compile(
            optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                     keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")],
            jit_compile=xla)
    if path is not None:
        _check_compatible(model, path, num_classes, config)
    return model, path, metadata


def _contract(model: keras.Model, resumed_from: Path | None, data_dir: Path, mean: str | None,
              num_classes: int, stats) -> InputContract:
    """The model's input contract, recorded on it for its checkpoints: a resumed model's
    own (the data must have its classes, `mean` must agree), else the data's."""
    recorded = getattr(model, "input_contract", None)
    data_contract = InputContract.from_data(data_dir, model.input_shape[1],
                                            mean or (recorded.mean if recorded else "channel"),
                                            num_classes=num_classes, stats=stats)
    if recorded is None:  # a new model, or a checkpoint from before contracts
        model.input_contract = data_contract
        return data_contract
    if mean is not None and mean != recorded.mean:
        raise ValueError(f"mean {mean!r} contradicts {resumed_from}, trained with mean "
                         f"{recorded.mean!r}; leave mean out to resume, or use another "
                         f"model_dir")
    if data_contract.wnids != recorded.wnids:
        raise ValueError(f"{data_dir}: its classes (labels.txt) are not those {resumed_from} "
                         f"was trained on; use the same data or another model_dir")
    return recorded


def _placement(model: keras.Model, strategy: tf.distribute.Strategy) -> str:
    """Where the towers or replicas run, in a line."""
    name = type(strategy).__name__
    if strategy.num_replicas_in_sync > 1:
        replicas = ", ".join(strategy.extended.worker_devices)
        return f"{name}, {strategy.num_replicas_in_sync} replicas ({replicas})"
    towers = [model.get_layer(f"{tower}_conv1").device or "default device"
              for tower in ("tower_a", "tower_b")]
    return f"towers (model parallel): tower_a on {towers[0]}, tower_b on {towers[1]}"


def _best_validation(rows: Sequence[dict[str, str]]) -> str:
    scores = []
    for row in rows:
        try:
            scores.append((float(row.get("val_top1", "")), int(row["epoch"])))
        except ValueError:  # no validation split: no column, or CSVLogger's "NA"
            continue
    if not scores:
        return "no validation split"
    accuracy, epoch = max(scores)
    return f"best validation top-1 error {1 - accuracy:.4f} (epoch {epoch + 1})"


def _finish_epoch(model: keras.Model, run: RunCallbacks, epoch: int, steps: int,
                  train, validation, validation_steps: int | None) -> None:
    """The `steps` left of an interrupted epoch, then its end (validation, callbacks).

    With no step left (the run stopped in the epoch's validation), the epoch's end is
    done here: Keras's `fit` would run a step on an empty dataset.
    """
    run.phase(steps or None)
    if steps:
        model.fit(train, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps,
                  validation_data=validation, validation_steps=validation_steps,
                  callbacks=run, shuffle=False)
        return
    run.on_train_begin()
    run.on_epoch_begin(epoch)
    logs = {}
    if validation is not None:
        scores = model.evaluate(validation, steps=validation_steps, callbacks=run,
                                return_dict=True)
        logs = {f"val_{name}": value for name, value in scores.items()}
    run.on_epoch_end(epoch, logs)


def _callbacks(model_dir: Path, chief: bool, tensorboard: bool,
               say: Callable[[str], None]) -> list[keras.callbacks.Callback]:
    """The CSV and TensorBoard logs (chief only)."""
    if not chief:
        return []
    logs = [keras.callbacks.CSVLogger(str(model_dir / checkpoints.LOG_NAME), append=True)]
    if tensorboard and importlib.util.find_spec("tensorboard"):
        logs.append(keras.callbacks.TensorBoard(str(model_dir / "tensorboard")))
    elif tensorboard:
        say("TensorBoard logs skipped: `pip install tensorboard` to write them")
    return logs


def fit(data_dir: str | Path, model_dir: str | Path, *, config: AlexNetConfig | None = None,
        epochs: int = 90, batch_size: int = 128, learning_rate: float = 0.01,
        momentum: float = 0.9, weight_decay: float = 0.0005, patience: int = 5,
        max_lr_reductions: int = 3, min_delta: float = 0.0,
        steps_per_epoch: int | None = None, validation_steps: int | None = None,
        mean: str | None = None, lighting_stddev: float = data.LIGHTING_STDDEV,
        seed: int | None = None, deterministic: bool = True,
        mixed_precision: str | None = None, xla: bool = False,
        strategy: str | tf.distribute.Strategy = "auto",
        devices: tuple[str, str] | None = None, keep_checkpoints: int | None = 5,
        backup_every: int = BACKUP_EVERY,
        callbacks: Sequence[keras.callbacks.Callback] = (), tensorboard: bool = True,
        verbose: int | str = "auto") -> keras.callbacks.History:
    """Trains AlexNet on `data_dir`'s shards, checkpointing into `model_dir` each epoch.

    Defaults are the paper's [paper §5]: batch 128, momentum 0.9, weight decay 0.0005
    inside the momentum (`PaperSGD`), learning rate 0.01 divided by 10 when the
    validation error stops improving (at most three times), 90 epochs, with random
    crops, reflections and PCA lighting [paper §4.1].

    Args:
        data_dir: the converter's output: `train-*` shards (and `validation-*` for the
            learning-rate schedule; without them it watches the training error),
            `labels.txt`, optional `stats.json` / `mean_image.npy`.
        model_dir: where checkpoints and logs go; resumed from if it has checkpoints.
        config: the network (`AlexNetConfig()` with the class count of `labels.txt`
            by default); must match a checkpoint being resumed.
        epochs: total epochs, counting those already done in `model_dir`.
        patience: epochs without a better validation error before dividing the rate.
        min_delta: the smallest accuracy gain counted as an improvement.
        steps_per_epoch: batches per epoch; default one pass over the training split.
        validation_steps: batches of validation per epoch; default the whole split.
        mean: "channel" (per-channel mean) or "pixel" (the paper's mean image) for a new
            model (default "channel"); a resumed one keeps its contract's (another is
            refused).
        seed: seeds the initial weights, dropout, the data order and augmentation;
            None draws one, prints it and records it in `run.json` (a resumed run
            reuses the recorded one).
        deterministic: the input order independent of thread timing, so that a seed
            reproduces a run bit for bit (False may be faster with many cores).
        mixed_precision: a Keras dtype policy such as "mixed_float16" (GPUs) or
            "mixed_bfloat16" for a new model; None trains in float32.  A resumed model
            keeps the policy it was saved with.
        xla: compile the training step with XLA (one device per tower or replica).
        strategy: "auto", "towers", "mirrored", "multi-worker" (`keras_alexnet.distribute`)
            or a `tf.distribute.Strategy`.
        devices: the two towers' devices for `build_model` (model parallel).
        keep_checkpoints: how many newest epoch checkpoints to keep (None keeps all).
        backup_every: save the whole training state every this many steps (0: only at
            epoch ends and on Ctrl-C), so a killed run loses at most that many steps.
        callbacks: Keras callbacks run beside the built-in ones (schedule, NaN stop,
            logs, checkpoints); one that sets `model.stop_training` ends the run with
            its state saved (mid-epoch: in the step backup).
        tensorboard: write TensorBoard logs (when the tensorboard package is installed).
        verbose: Keras's progress output; 0 also silences this function's own lines.

    Returns: the Keras History of this call's epochs.
    Raises: ValueError for an argument out of range or data that does not fit the
        model; FloatingPointError when the loss becomes NaN or infinite (the last good
        checkpoint stays the latest); OSError naming the directory when a checkpoint
        cannot be written; TrainingInterrupted (a KeyboardInterrupt) on Ctrl-C, after
        saving the state.
    """
    _check_arguments(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                     momentum=momentum, weight_decay=weight_decay, patience=patience,
                     max_lr_reductions=max_lr_reductions, steps_per_epoch=steps_per_epoch,
                     validation_steps=validation_steps, lighting_stddev=lighting_stddev,
                     backup_every=backup_every, keep_checkpoints=keep_checkpoints)
    if mean is not None and mean not in MEAN_MODES:
        raise ValueError(f"mean must be one of {MEAN_MODES}, got {mean!r}")
    # Multi-worker collectives must be configured before TensorFlow starts up.
    if isinstance(strategy, str):
        strategy = select_strategy(strategy)
    data_dir, model_dir = Path(data_dir), Path(model_dir)
    chief = is_chief(strategy)
    quiet = verbose == 0 or not chief

    def say(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    num_classes = _num_classes(data_dir, config)
    data.check_shards(data.list_shards(data_dir, "train"), num_classes)
    has_validation = any(data_dir.glob("validation-?????-of-?????"))
    if has_validation:
        data.check_shards(data.list_shards(data_dir, "validation"), num_classes)
    records = data.count_records(data_dir, "train")
    if batch_size > records:
        raise ValueError(f"batch_size {batch_size} is more than the {records} training "
                         f"images of {data_dir}; use a batch size of at most {records}")
    steps_per_epoch = steps_per_epoch or records // batch_size
    seed, drawn = _run_seed(model_dir, seed, chief)
    model, resumed_from, position = _resume_or_build(
        model_dir, strategy, num_classes, config, devices=devices,
        mixed_precision=mixed_precision,
        make_optimizer=functools.partial(PaperSGD, learning_rate, momentum, weight_decay),
        xla=xla, seed=seed)
    epoch, step = position.get("epoch", 0), position.get("step", 0)
    if step and position.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch:
        raise ValueError(f"{resumed_from} was saved at step {step} of an epoch of "
                         f"{position['steps_per_epoch']} steps; resume with steps_per_epoch="
                         f"{position['steps_per_epoch']}")
    if epoch >= epochs:
        say(f"{model_dir}: already trained for {epoch} epochs (asked for {epochs}); the "
            f"final checkpoint is {checkpoints.latest_checkpoint(model_dir)}")
        return keras.callbacks.History()

    image_size = model.input_shape[1]
    stats = load_stats(data_dir)
    contract = _contract(model, resumed_from, data_dir, mean, num_classes, stats)
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    _continue_dropout_streams(model, seed, iterations)

    def training_input(first_batch: int):
        def per_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return data.training_dataset(
                data_dir, image_size, context.get_per_replica_batch_size(batch_size),
                num_classes=num_classes, stats=stats, contract=contract,
                lighting_stddev=lighting_stddev, seed=seed, first_batch=first_batch,
                # (per pipeline: a 1/n share of the images in 1/n-size batches)
                batches_per_epoch=records // batch_size, deterministic=deterministic,
                input_context=context)
        return strategy.distribute_datasets_from_function(per_pipeline)

    validation = None
    validation_records = 0
    if has_validation:
        validation_records = data.count_records(data_dir, "validation")
        validation = data.evaluation_dataset(data_dir, image_size, batch_size,
                                             num_classes=num_classes, contract=contract,
                                             records=validation_records)

    model_dir.mkdir(parents=True, exist_ok=True)
    if chief and resumed_from is not None and resumed_from != checkpoints.backup_path(model_dir):
        checkpoints.backup_path(model_dir).unlink(missing_ok=True)  # older than the epoch's
    trained = (_truncate_log(model_dir, epoch) if chief else read_log(model_dir)[:epoch])
    progress = Progress(steps_per_epoch, (epoch, step), position.get("metrics"))
    schedule = DivideLearningRateOnPlateau(
        learning_rate, monitor="val_top1" if has_validation else "top1", patience=patience,
        max_reductions=max_lr_reductions, min_delta=min_delta, trained=trained,
        progress=progress, say=say)
    nan = StopOnNaN()
    saver = Checkpoints(
        model_dir, progress=progress, backup_every=backup_every, keep=keep_checkpoints,
        chief=chief, nan=nan, metadata=lambda: {"seed": seed,
                                                "steps_per_epoch": steps_per_epoch})
    run = RunCallbacks([progress, schedule, nan, *_callbacks(model_dir, chief, tensorboard,
                                                             say),
                        saver, *callbacks], model=model, verbose=verbose if chief else 0,
                       epochs=epochs)

    say(f"keras_alexnet.fit: {model_dir}\n"
        f"  devices     {_placement(model, strategy)}\n"
        f"  data        {data_dir}: {records:,} training images, {validation_records:,} "
        f"validation, {num_classes} classes\n"
        f"  schedule    {epochs} epochs of {steps_per_epoch:,} steps, batch {batch_size} "
        f"(global), seed {seed}{' (drawn; pass it to repeat this run)' if drawn else ''}"
        f"{', deterministic input' if deterministic else ''}\n"
        f"  state       " + (f"resumes {resumed_from} at epoch {epoch + 1}, step "
                             f"{step + 1} of {steps_per_epoch:,}" if resumed_from else
                             "a new model") +
        (f"; backup every {backup_every:,} steps" if backup_every else "; no step backups"))

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        keras_multi_worker_fixes(model)
    try:
        with strategy.scope():
            if step:  # first the rest of the interrupted epoch
                _finish_epoch(model, run, epoch, steps_per_epoch - step,
                              training_input(iterations), validation, validation_steps)
                iterations += steps_per_epoch - step
                epoch += 1
            if epoch < epochs and not model.stop_training:
                run.phase(steps_per_epoch)
                model.fit(training_input(iterations), epochs=epochs, initial_epoch=epoch,
                          steps_per_epoch=steps_per_epoch, validation_data=validation,
                          validation_steps=validation_steps, callbacks=run, shuffle=False)
    except KeyboardInterrupt:
        saved = saver.save_backup() or checkpoints.latest_checkpoint(model_dir)
        run.close()  # the run ends here: the CSV and TensorBoard logs are closed
        where = (f"epoch {progress.epoch + 1}, step {progress.steps_done()} of "
                 f"{steps_per_epoch:,}" if progress.epoch is not None else "start-up")
        raise TrainingInterrupted(
            f"interrupted at {where}; " + (f"the training state is in {saved}; "
                                           if saved else "nothing was trained yet; ") +
            "rerun the same command to resume") from None
    run.close()
    if nan.failed_at is not None:
        failed_epoch, batch = nan.failed_at
        last, _ = _resume_point(model_dir)
        raise FloatingPointError(
            f"training loss became NaN or infinite at epoch {failed_epoch + 1}, batch "
            f"{batch + 1} (learning rate {schedule.current_learning_rate():g}); the last good "
            f"checkpoint is {last or 'none'}; try a lower learning rate")
    stopped = "" if progress.complete() and progress.epoch + 1 >= epochs else \
        " (stopped by a callback: rerun to continue)"
    final = saver.last_saved or checkpoints.latest_checkpoint(model_dir)
    say(f"keras_alexnet.fit: done{stopped}; final checkpoint {final}; "
        f"{_best_validation(read_log(model_dir))}")
    return model.history
