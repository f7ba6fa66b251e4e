"""`keras_alexnet.fit`: train AlexNet on the converter's shards the paper's way [paper §5].

A run writes into `model_dir` (the layout is `keras_alexnet.checkpoints`'s):
    checkpoints/epoch-NNNN.keras   the whole model with optimiser state, every epoch
    checkpoints/backup.keras       the whole training state every `backup_every` steps
    training_log.csv               one row per epoch (Keras CSVLogger)
    run.json                       the seed and the options, so that the run can be repeated
    tensorboard/                   TensorBoard event files
and a rerun with the same `model_dir` resumes from the newest of them
(`keras_alexnet.resume`): the weights end bit-identical to those of a run that never
stopped.  The data directory and `model_dir` may be `tf.io.gfile` URLs (`gs://...`,
`tfrecords_tools.base.storage`).

`fit` is four steps: plan (the options, the data and the seed), build or resume the
model, run Keras's `fit` with the schedule and checkpoint callbacks, report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from keras_alexnet import checkpoints, data, finetune, hardware, health, resume
from keras_alexnet.callbacks import DivideLearningRateOnPlateau, RunCallbacks, StopOnNaN
from keras_alexnet.config import AlexNetConfig, TrainingOptions
from keras_alexnet.contract import InputContract
from keras_alexnet.distribute import is_chief, keras_multi_worker_fixes, select_strategy
from keras_alexnet.errors import AlexNetError, CheckpointError, DivergedError
from keras_alexnet.model import build_network, check_topology, config_of
from keras_alexnet.optimizer import PaperSGD
from tfrecords_tools.base import storage
from tfrecords_tools.base.words import count
from tfrecords_tools.dataset import DatasetInfo


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`: the state was saved, the message says how to resume."""


# --- 1. plan ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Plan:
    """What a call of `fit` will do, settled before any model is built."""

    data: DatasetInfo
    model_dir: storage.PathOrUrl
    options: TrainingOptions
    config: AlexNetConfig | None  # the network asked for, its class count the data's
    strategy: tf.distribute.Strategy
    chief: bool
    num_classes: int
    records: int  # training images
    validation_records: int  # 0: no validation split
    steps_per_epoch: int
    seed: int
    seed_drawn: bool
    say: Callable[[str], None]
    xla_reason: str  # why the step is (not) compiled with XLA


def _num_classes(info: DatasetInfo, config: AlexNetConfig | None) -> int:
    if info.classes is not None:
        if config is not None and config.num_classes != len(info.classes):
            raise AlexNetError(f"config.num_classes is {config.num_classes} but "
                               f"{info.labels_path} lists {len(info.classes)} classes")
        return len(info.classes)
    if config is None:
        raise AlexNetError(f"{info.path}: no labels.txt; pass a config with num_classes")
    return config.num_classes


#: Planned steps from which XLA's compile time, paid again by every process (resumes
#: too), is won back by its faster steps; both networks break even far below it
#: (`benchmarks/RESULTS.md`, "XLA as the default").
XLA_MIN_STEPS = 1000


def _xla_choice(options: TrainingOptions, strategy: tf.distribute.Strategy,
                steps: int) -> tuple[bool, str]:
    """`options.xla`, or where it is None the faster step on this machine as measured by
    `benchmarks/train_step.py`; and why, for the start report."""
    if options.xla is not None:
        return options.xla, "asked for" if options.xla else "turned off"
    if strategy is not tf.distribute.get_strategy() or options.devices or hardware.gpus():
        return False, "the default on GPUs and across devices (XLA not measured there)"
    if options.mixed_precision:
        return False, "the default with mixed precision (XLA not measured with it)"
    avx512 = hardware.cpu_has_avx512()
    if avx512 is None:
        return False, "the default on a CPU of unknown features"
    if avx512:
        return False, "the default on an AVX-512 CPU, where the graph step is the faster"
    if steps < XLA_MIN_STEPS:
        return False, (f"the default for fewer than {XLA_MIN_STEPS:,} steps: XLA's compile "
                       f"time is not won back")
    return True, "the default on a CPU without AVX-512, where its step is the faster"


def plan(data_dir: str | Path | DatasetInfo, model_dir: str | Path,
         config: AlexNetConfig | None, options: TrainingOptions,
         verbose: int | str = "auto") -> Plan:
    """Checks the data against the options, and settles the seed and the step count."""
    # Multi-worker collectives must be configured before TensorFlow starts up.
    strategy = (select_strategy(options.strategy) if isinstance(options.strategy, str)
                else options.strategy)
    info, model_dir = DatasetInfo.of(data_dir), storage.path(model_dir)
    chief = is_chief(strategy)
    recorded_source = None if options.init_from else resume.recorded_source(model_dir)
    if recorded_source:
        # A fine-tuning run resumed without its flag: same source, same learning rates.
        options = options.replace(init_from=recorded_source)
    num_classes = _num_classes(info, config)
    data.check_shards(info, "train", num_classes)
    validation_records = 0
    if info.has_split("validation"):
        data.check_shards(info, "validation", num_classes)
        validation_records = info.records("validation")
    records = info.records("train")
    if options.batch_size > records:
        raise AlexNetError(f"batch_size {options.batch_size} is more than the {records} "
                           f"training images of {info.path}; use a batch size of at most "
                           f"{records}")
    seed, drawn = resume.run_seed(model_dir, options.seed)
    steps_per_epoch = options.steps_per_epoch or records // options.batch_size
    xla, xla_reason = _xla_choice(options, strategy, options.epochs * steps_per_epoch)
    quiet = verbose == 0 or not chief
    return Plan(info, model_dir, options.replace(xla=xla), config, strategy, chief,
                num_classes, records, validation_records, steps_per_epoch, seed, drawn,
                say=(lambda line: None) if quiet else functools.partial(print, flush=True),
                xla_reason=xla_reason)


# --- 2. build or resume ---------------------------------------------------------------------

def _check_compatible(model: keras.Model, path: storage.PathOrUrl, num_classes: int,
                      config: AlexNetConfig | None) -> None:
    """A checkpoint must match the data (classes) and any config asked for."""
    classes = model.output_shape[-1]
    if classes != num_classes:
        raise CheckpointError(f"{path}: the checkpoint classifies {classes} classes but the "
                              f"data has {num_classes}; use another model_dir")
    if config is not None:
        check_topology(model, config, path, "use another model_dir")


@contextlib.contextmanager
def _layer_policy(options: TrainingOptions) -> Iterator[None]:
    """New layers compute in the options' mixed precision (they keep the policy when
    saved, so a resumed run keeps it too), the global policy unchanged after."""
    previous = keras.mixed_precision.dtype_policy()
    if options.mixed_precision:
        keras.mixed_precision.set_dtype_policy(options.mixed_precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _new_model(plan: Plan) -> tuple[keras.Model, finetune.FineTuning | None]:
    """The model of `plan.config` with fresh weights, or with those of
    `options.init_from` (then also the fine-tuning's source and head)."""
    options = plan.options
    with _layer_policy(options):
        if not options.init_from:
            config = dataclasses.replace(plan.config or AlexNetConfig(),
                                         num_classes=plan.num_classes)
            return build_network(config, devices=options.devices, seed=plan.seed), None
        source = finetune.read_source(options.init_from)
        classes = plan.data.classes or tuple(("", f"class {i}")
                                             for i in range(plan.num_classes))
        model = finetune.initialise_from(source, classes, devices=options.devices,
                                         seed=plan.seed, config=plan.config)
    if options.freeze:
        finetune.freeze(model, options.freeze)
    images = data.evaluation_dataset(plan.data, model.input_shape[1], options.batch_size,
                                     num_classes=plan.num_classes, split="train",
                                     contract=model.input_contract)
    return model, finetune.start_head(model, source, classes, images, recipe=options.recipe,
                                      freeze=options.freeze)


def _contract(plan: Plan, model: keras.Model, resumed_from: storage.PathOrUrl | None
              ) -> InputContract:
    """The model's input contract, recorded on it for its checkpoints: a resumed model's
    own (the data must have its classes, `mean` must agree), else the data's."""
    mean = plan.options.mean
    recorded = getattr(model, "input_contract", None)
    data_contract = InputContract.from_data(plan.data, model.input_shape[1],
                                            mean or (recorded.mean if recorded else "channel"),
                                            num_classes=plan.num_classes)
    if recorded is None:  # a new model, or a checkpoint from before contracts
        model.input_contract = data_contract
        return data_contract
    if mean is not None and mean != recorded.mean:
        raise AlexNetError(f"mean {mean!r} contradicts {resumed_from}, trained with mean "
                           f"{recorded.mean!r}; leave mean out to resume, or use another "
                           f"model_dir")
    if data_contract.wnids != recorded.wnids:
        raise AlexNetError(f"{plan.data.labels_path}: its classes are not those "
                           f"{resumed_from} was trained on; use the same data or another "
                           f"model_dir")
    return recorded


@dataclasses.dataclass(frozen=True)
class Start:
    """Where `fit` starts: the model (compiled, with its input contract), the saved state
    it resumes, and for a new fine-tuning run its source and what became of fc8."""

    model: keras.Model
    point: resume.ResumePoint
    fine_tuning: finetune.FineTuning | None = None


def build_or_resume(plan: Plan) -> Start:
    """The newest saved state's model and where it stopped, else a new model (and the
    fine-tuning source it started from); compiled, with its input contract, its dropout
    streams where its steps left them.

    Everything is created in the strategy's scope (the optimizer too: its slots must
    be variables of the same strategy as the weights)."""
    options, point = plan.options, resume.find_resume_point(plan.model_dir)
    if point.step and (point.steps_per_epoch or plan.steps_per_epoch) != plan.steps_per_epoch:
        raise CheckpointError(f"{point.path} was saved at step {point.step} of an epoch of "
                              f"{point.steps_per_epoch} steps; resume with steps_per_epoch="
                              f"{point.steps_per_epoch}")
    tuning = None
    with plan.strategy.scope():
        if point.path:
            model = checkpoints.load_model(point.path)
        else:
            model, tuning = _new_model(plan)
        optimizer = getattr(model, "optimizer", None)  # momentum, iterations, rate
        if optimizer is None:  # a new model, or imported weights (`keras_alexnet.bvlc`)
            caffe = tuning is not None and tuning.new_head and options.recipe == "caffe"
            optimizer = PaperSGD(options.initial_learning_rate, options.momentum,
                                 options.weight_decay, learning_rate_multipliers=(
                                     finetune.new_layer_multipliers(model) if caffe
                                     else None))
            optimizer.build(model.trainable_variables)
        model.compile(
            optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                     keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")],
            jit_compile=options.xla)
    if point.path is not None:
        _check_compatible(model, point.path, plan.num_classes, plan.config)
    _contract(plan, model, point.path or (tuning.source.path if tuning else None))
    resume.continue_dropout_streams(
        model, plan.seed, int(keras.ops.convert_to_numpy(model.optimizer.iterations)))
    return Start(model, point, tuning)


# --- 3. run -----------------------------------------------------------------------------------

def _inputs(plan: Plan, model: keras.Model):
    """The training input from a given batch on (distributed), and the validation set."""
    options, image_size = plan.options, model.input_shape[1]
    contract = model.input_contract

    def training(first_batch: int):
        def per_pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return data.training_dataset(
                plan.data, image_size, context.get_per_replica_batch_size(options.batch_size),
                num_classes=plan.num_classes, contract=contract,
                lighting_stddev=options.lighting_stddev, seed=plan.seed,
                first_batch=first_batch,
                # (per pipeline: a 1/n share of the images in 1/n-size batches)
                batches_per_epoch=plan.records // options.batch_size,
                deterministic=options.deterministic, input_context=context)
        return plan.strategy.distribute_datasets_from_function(per_pipeline)

    validation = None
    if plan.validation_records:
        validation = data.evaluation_dataset(plan.data, image_size, options.batch_size,
                                             num_classes=plan.num_classes, contract=contract)
    return training, validation


def _monitor(plan: Plan, model: keras.Model, bias_advice: bool
             ) -> health.LearningMonitor | None:
    """The learning monitor, while the run is in its first steps: on a few of the
    first training images, centre-cropped (`keras_alexnet.health`)."""
    if int(keras.ops.convert_to_numpy(model.optimizer.iterations)) >= health.WINDOW:
        return None
    images = data.evaluation_dataset(plan.data, model.input_shape[1], health.PROBE_IMAGES,
                                     num_classes=plan.num_classes, split="train",
                                     contract=model.input_contract)
    probe = next(iter(images.take(1)))[0]
    return health.LearningMonitor(plan.num_classes, probe, bias_advice=bias_advice)


def _unit_health(plan: Plan, model: keras.Model, bias_advice: bool,
                 monitor: health.LearningMonitor | None) -> health.UnitHealth:
    """The per-epoch unit health, on the first validation images (training images
    where there is no validation split), centre-cropped."""
    split = "validation" if plan.validation_records else "train"
    images = data.evaluation_dataset(
        plan.data, model.input_shape[1], health.HEALTH_IMAGES, num_classes=plan.num_classes,
        split=split, contract=model.input_contract)
    batch, labels = next(iter(images.take(1)))
    return health.UnitHealth(batch, labels, bias_advice=bias_advice, monitor=monitor,
                             split="training" if split == "train" else split)


def _bias_advice(plan: Plan, model: keras.Model) -> bool:
    """Whether "start again with --bias-init 0.1" is advice for this run: a network
    trained from fresh weights whose biases started above Caffe's 0.1."""
    return not plan.options.init_from and config_of(model).bias_init > health.CAFFE_BIAS


def _logs(plan: Plan) -> list[keras.callbacks.Callback]:
    """The CSV and TensorBoard logs (chief only)."""
    if not plan.chief:
        return []
    logs = [resume.training_log(plan.model_dir)]
    if plan.options.tensorboard and importlib.util.find_spec("tensorboard"):
        logs.append(keras.callbacks.TensorBoard(str(plan.model_dir / "tensorboard")))
    elif plan.options.tensorboard:
        plan.say("TensorBoard logs skipped: `pip install tensorboard` to write them")
    return logs


@dataclasses.dataclass
class Run:
    """The callbacks of one call of `fit`, and what it reports from them."""

    callbacks: RunCallbacks
    progress: resume.Progress
    schedule: DivideLearningRateOnPlateau
    nan: StopOnNaN
    saver: resume.Checkpoints
    bias_advice: bool  # `_bias_advice`


def _callbacks(plan: Plan, start: Start, user: Sequence[keras.callbacks.Callback],
               verbose: int | str) -> Run:
    options, model_dir, model, point = plan.options, plan.model_dir, start.model, start.point
    model_dir.mkdir(parents=True, exist_ok=True)
    if plan.chief:
        resume.write_run_file(model_dir, plan.seed, options, source=(
            start.fine_tuning.to_json() if start.fine_tuning else None))
        if point.path is not None and not point.is_backup:
            checkpoints.backup_path(model_dir).unlink(missing_ok=True)  # older than the epoch's
    trained = (resume.truncate_log(model_dir, point.epoch) if plan.chief
               else resume.read_log(model_dir)[:point.epoch])
    progress = resume.Progress(plan.steps_per_epoch, (point.epoch, point.step), point.metrics)
    schedule = DivideLearningRateOnPlateau(
        options.initial_learning_rate,
        monitor="val_top1" if plan.validation_records else "top1",
        patience=options.patience, max_reductions=options.max_lr_reductions,
        min_delta=options.min_delta, trained=trained, progress=progress, say=plan.say)
    nan = StopOnNaN()
    saver = resume.Checkpoints(
        model_dir, progress=progress, backup_every=options.backup_every,
        keep=options.keep_checkpoints, chief=plan.chief,
        diverged=lambda: nan.failed_at is not None,
        metadata=lambda: {"seed": plan.seed, "steps_per_epoch": plan.steps_per_epoch})
    bias_advice = _bias_advice(plan, model)
    monitor = _monitor(plan, model, bias_advice)
    callbacks = RunCallbacks([progress, schedule, nan, *filter(None, [monitor]),
                              _unit_health(plan, model, bias_advice, monitor), *_logs(plan),
                              saver, *user],
                             model=model, verbose=verbose if plan.chief else 0,
                             epochs=options.epochs)
    return Run(callbacks, progress, schedule, nan, saver, bias_advice)


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


def _train(plan: Plan, model: keras.Model, point: resume.ResumePoint, run: Run) -> None:
    """The rest of an interrupted epoch, then the epochs left; Ctrl-C saves the state."""
    options, steps = plan.options, plan.steps_per_epoch
    training, validation = _inputs(plan, model)
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    epoch = point.epoch
    if isinstance(plan.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        keras_multi_worker_fixes(model)
    try:
        with plan.strategy.scope():
            if point.step:  # first the rest of the interrupted epoch
                _finish_epoch(model, run.callbacks, epoch, steps - point.step,
                              training(iterations), validation, options.validation_steps)
                iterations += steps - point.step
                epoch += 1
            if epoch < options.epochs and not model.stop_training:
                run.callbacks.phase(steps)
                model.fit(training(iterations), epochs=options.epochs, initial_epoch=epoch,
                          steps_per_epoch=steps, validation_data=validation,
                          validation_steps=options.validation_steps,
                          callbacks=run.callbacks, shuffle=False)
    except KeyboardInterrupt as interrupt:
        saved = run.saver.save_backup() or checkpoints.latest_checkpoint(plan.model_dir)
        run.callbacks.close()  # the run ends here: the CSV and TensorBoard logs are closed
        where = (f"epoch {run.progress.epoch + 1}, step {run.progress.steps_done()} of "
                 f"{steps:,}" if run.progress.epoch is not None else "start-up")
        raise TrainingInterrupted(
            f"interrupted at {where}; " + (f"the training state is in {saved}; "
                                           if saved else "nothing was trained yet; ") +
            "rerun the same command to resume") from interrupt
    run.callbacks.close()


# --- 4. report --------------------------------------------------------------------------------

def _placement(model: keras.Model, strategy: tf.distribute.Strategy) -> str:
    """Where the towers or replicas run, in a line."""
    name = type(strategy).__name__
    if strategy.num_replicas_in_sync > 1:
        replicas = ", ".join(strategy.extended.worker_devices)
        return f"{name}, {strategy.num_replicas_in_sync} replicas ({replicas})"
    towers = [model.get_layer(f"{tower}_conv1").device or "default device"
              for tower in ("tower_a", "tower_b")]
    return f"towers (model parallel): tower_a on {towers[0]}, tower_b on {towers[1]}"


def _report_start(plan: Plan, start: Start) -> None:
    options, steps, model, point = plan.options, plan.steps_per_epoch, start.model, start.point
    tuning = start.fine_tuning
    plan.say(
        f"keras_alexnet.fit: {plan.model_dir}\n"
        f"  devices     {_placement(model, plan.strategy)}\n"
        f"  data        {plan.data.path}: {plan.records:,} training images, "
        f"{plan.validation_records:,} validation, {plan.num_classes} classes\n"
        f"  schedule    {count(options.epochs, 'epoch')} of {count(steps, 'step')}, batch "
        f"{options.batch_size} (global), seed {plan.seed}"
        f"{' (drawn; pass it to repeat this run)' if plan.seed_drawn else ''}"
        f"{', deterministic input' if options.deterministic else ''}\n"
        f"  step        {'XLA' if options.xla else 'graph (no XLA)'}, {plan.xla_reason}\n"
        f"  state       " + (f"resumes {point.path} at epoch {point.epoch + 1}, step "
                             f"{point.step + 1} of {steps:,}" if point.path else
                             f"a new model from {tuning.source.path} (fine-tuning, learning "
                             f"rate {options.initial_learning_rate:g})" if tuning else
                             "a new model") +
        (f"; backup every {options.backup_every:,} steps" if options.backup_every
         else "; no step backups") +
        (f"\n  recipe      {tuning.head}" if tuning else ""))


def _warn_slow_bfloat16(plan: Plan, model: keras.Model) -> None:
    """bfloat16 on a CPU without bfloat16 units is emulated, far slower than float32."""
    on_cpu = not hardware.gpus() or all("CPU" in device.upper()
                                        for device in plan.options.devices or ("GPU",))
    if not on_cpu or "bfloat16" not in {layer.compute_dtype for layer in model.layers} \
            or hardware.cpu_has_fast_bfloat16() is not False:
        return
    warnings.warn(f"mixed_bfloat16 on a CPU without AVX512_BF16 or AMX (no avx512_bf16 or "
                  f"amx_bf16 in {hardware.CPUINFO}): bfloat16 is emulated there, 0.12x the "
                  f"float32 step on an AVX2-only CPU; train in float32 (leave "
                  f"--mixed-precision out)", health.TrainingWarning, stacklevel=3)  # fit's caller


def _best_validation(plan: Plan, run: Run) -> str:
    """The best validation error (the epoch whose checkpoint is kept as the best), and
    whether it is no better than a guess."""
    found = checkpoints.best_epoch(plan.model_dir)
    if found is None or found.metric != "val_top1":
        return "no validation split"
    accuracy = found.accuracy
    best = f"best validation top-1 error {1 - accuracy:.4f} (epoch {found.epoch})"
    steps, images = plan.options.validation_steps, plan.validation_records
    images = min(images, steps * plan.options.batch_size) if steps else images
    chance, guess = _chance(plan)
    verdict = health.chance_verdict(accuracy, images, chance, guess)
    if verdict is None:
        return best
    if verdict.endswith(health.NOT_LEARNED):
        verdict += f"; {health.remedy(plan.options.initial_learning_rate, run.bias_advice)}"
    return f"{best}, {verdict}"


def _chance(plan: Plan) -> tuple[float, str]:
    """The validation accuracy of a guess, and the guess: always the most frequent class
    where the manifest counts them, else one of the classes at random."""
    counts = plan.data.class_counts("validation")
    if not counts or len(set(counts.values())) == 1:
        return 1 / plan.num_classes, f"a guess among {plan.num_classes} classes"
    majority = max(counts, key=counts.get)
    names = dict(plan.data.classes or ())
    name = names.get(majority, majority)
    return (counts[majority] / sum(counts.values()),
            f"always naming {name}, the most frequent class")


def _report_end(plan: Plan, run: Run) -> None:
    """The closing line, or the NaN stop as an error naming the last good state."""
    if run.nan.failed_at is not None:
        failed_epoch, batch = run.nan.failed_at
        last = resume.find_resume_point(plan.model_dir).path
        raise DivergedError(
            f"training loss became NaN or infinite at epoch {failed_epoch + 1}, batch "
            f"{batch + 1} (learning rate {run.schedule.current_learning_rate():g}); the last "
            f"good checkpoint is {last or 'none'}; try a lower learning rate")
    progress = run.progress
    stopped = "" if progress.complete() and progress.epoch + 1 >= plan.options.epochs else \
        " (stopped by a callback: rerun to continue)"
    final = run.saver.last_saved or checkpoints.latest_checkpoint(plan.model_dir)
    plan.say(f"keras_alexnet.fit: done{stopped}; final checkpoint {final}; "
             f"{_best_validation(plan, run)}")


# --- fit ---------------------------------------------------------------------------------------

def fit(data_dir: str | Path | DatasetInfo, model_dir: str | Path, *,
        config: AlexNetConfig | None = None, options: TrainingOptions | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (), verbose: int | str = "auto",
        **option_values) -> keras.callbacks.History:
    """Trains AlexNet on `data_dir`'s shards, checkpointing into `model_dir` each epoch.

    The training's knobs are `TrainingOptions`, with the paper's values as defaults
    [paper §5]: batch 128, momentum 0.9, weight decay 0.0005 inside the momentum
    (`PaperSGD`), learning rate 0.01 divided by 10 when the validation error stops
    improving (at most three times), 90 epochs, with random crops, reflections and PCA
    lighting [paper §4.1].  Give them as `options`, or one by one as keywords
    (`fit(data, run, epochs=10, batch_size=64)`), or both (the keywords win).

    Args:
        data_dir: the converter's output (or its `DatasetInfo`): `train-*` shards (and
            `validation-*` for the learning-rate schedule; without them it watches the
            training error), `labels.txt`, optional `stats.json` / `mean_image.npy`.
        model_dir: where checkpoints and logs go (a local path or a `tf.io.gfile`
            URL); resumed from if it has checkpoints (with the seed in its `run.json`).
        config: the network (`AlexNetConfig()` with the class count of `labels.txt`
            by default); must match a checkpoint being resumed.
        options, **option_values: the `TrainingOptions`.
        callbacks: Keras callbacks run beside the built-in ones (schedule, NaN stop,
            logs, checkpoints); one that sets `model.stop_training` ends the run with
            its state saved (mid-epoch: in the step backup).
        verbose: Keras's progress output; 0 also silences this function's own lines.

    Returns: the Keras History of this call's epochs.
    Raises: AlexNetError (a ValueError) for an option out of range or data that does
        not fit the model; DivergedError (a FloatingPointError) when the loss becomes
        NaN or infinite (the last good checkpoint stays the latest); OSError naming the
        directory when a checkpoint cannot be written; TrainingInterrupted (a
        KeyboardInterrupt) on Ctrl-C, after saving the state.
    """
    options = (options or TrainingOptions()).replace(**option_values)
    the_plan = plan(data_dir, model_dir, config, options, verbose)
    start = build_or_resume(the_plan)
    model, point = start.model, start.point
    if point.epoch >= options.epochs:
        the_plan.say(f"{the_plan.model_dir}: already trained for {point.epoch} epochs (asked "
                     f"for {options.epochs}); the final checkpoint is "
                     f"{checkpoints.latest_checkpoint(the_plan.model_dir)}")
        return keras.callbacks.History()
    run = _callbacks(the_plan, start, callbacks, verbose)
    _report_start(the_plan, start)
    _warn_slow_bfloat16(the_plan, model)
    _train(the_plan, model, point, run)
    _report_end(the_plan, run)
    return model.history
