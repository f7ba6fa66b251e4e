"""Images/s of one AlexNet training step: keras_alexnet vs the same network in PyTorch.

Also measures, in the same run:
  - a large float32 matmul as the machine's attainable GFLOP/s, and the training
    step's achieved GFLOP/s as a fraction of it;
  - the step with the `mixed_bfloat16` policy against float32 (worth it on CPUs with
    AVX512_BF16 or AMX, which the run reports from /proc/cpuinfo);
  - `keras_alexnet.fit` end to end on real JPEG shards (the input pipeline with the
    paper's augmentation feeding the step) against the bare step on fixed tensors;
  - the first step's seconds (tracing, and XLA's compilation), so that XLA's faster
    steps can be set against its compile time: the steps after which XLA is ahead.
    `--reduced` measures the reduced network of the tests and the demo instead.

    python benchmarks/train_step.py --batch-size 128 --steps 5 --repeats 3

Needs the `bench` extra (`pip install -e ".[bench]"`) for PyTorch.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)  # [paper §5]
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians are quoted")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--fit-steps", type=int, default=6,
                        help="steps of the fit run (the first is not timed); 0 skips it")
    parser.add_argument("--reduced", action="store_true",
                        help="the reduced network (64x64, width 1/8, 10 classes)")
    return parser.parse_args()


def training_flops(model, batch_size: int) -> float:
    """Multiply-adds x2 of the forward pass, x3 for forward + both backward products."""
    import keras

    forward = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        if isinstance(inner, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            k_h, k_w, c_in, _ = inner.kernel.shape
            forward += 2 * h * w * k_h * k_w * c_in * c_out
        elif isinstance(inner, keras.layers.Dense):
            forward += 2 * inner.kernel.shape[0] * inner.kernel.shape[1]
    return 3.0 * forward * batch_size


def time_steps(step, steps: int, repeats: int) -> tuple[float, list[float]]:
    """Seconds of the first step (tracing, compilation, allocation), and seconds per step
    for each repeat after it."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return first, times


def keras_step(config, batch_size: int, jit_compile: bool, policy: str | None = None):
    import keras
    import numpy as np

    from keras_alexnet import PaperSGD, build_model

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy or "float32")
    try:
        model = build_model(config)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    model.compile(PaperSGD(), "sparse_categorical_crossentropy", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    size = config.image_size
    images = rng.normal(0, 60, (batch_size, size, size, 3)).astype("float32")
    labels = rng.integers(0, config.num_classes, batch_size)
    return model, lambda: model.train_on_batch(images, labels)


def matmul_gflops(size: int, repeats: int) -> float:
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    _, times = time_steps(lambda: matmul().numpy(), 3, repeats)
    return 2 * size**3 / statistics.median(times) / 1e9


def torch_step(batch_size: int, threads: int):
    import torch
    from torch import nn

    torch.set_num_threads(threads)

    class AlexNet(nn.Module):
        """[paper §3.5]: towers as grouped convolutions; conv3 and the fc layers read both."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.ZeroPad2d((0, 3, 0, 3)), nn.Conv2d(3, 96, 11, 4), nn.ReLU(),
                # PyTorch divides alpha by the size n, the paper does not [paper §3.3].
                nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0), nn.MaxPool2d(3, 2),
                nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(),
                nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0), nn.MaxPool2d(3, 2),
                nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
                nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
                nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2))
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 1000))

        def forward(self, x):
            return self.classifier(self.features(x))

    model = AlexNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                weight_decay=0.0005)
    images = torch.randn(batch_size, 3, 224, 224) * 60
    labels = torch.randint(0, 1000, (batch_size,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    return step


def cpu_bf16_support() -> str:
    """The bfloat16 matrix features this CPU advertises (Linux), or "none"."""
    from keras_alexnet import hardware

    features = hardware.cpu_bf16_features()
    return "unknown" if features is None else ", ".join(features) or "none"


def fit_step_seconds(batch_size: int, steps: int) -> list[float]:
    """Seconds of each step of `keras_alexnet.fit` on 256x256 JPEG shards, after the first
    (tracing), with the paper's input pipeline feeding the step."""
    import keras
    from input_pipeline import write_shards

    import keras_alexnet

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "data"
        data_dir.mkdir()
        write_shards(data_dir, batch_size * (steps + 1), shards=8)
        (data_dir / "labels.txt").write_text(
            "".join(f"n{i:08d}\tclass {i}\n" for i in range(1000)))
        times = StepTimes()
        keras_alexnet.fit(data_dir, Path(scratch) / "model", epochs=1, batch_size=batch_size,
                          steps_per_epoch=steps, backup_every=0, keep_checkpoints=1,
                          tensorboard=False, verbose=0, seed=0, callbacks=[times])
    return [b - a for a, b in itertools.pairwise(times.ends)]


def main() -> None:
    args = parse_args()
    import tensorflow as tf

    from keras_alexnet import hardware, training
    from keras_alexnet.config import AlexNetConfig, reduced_config

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    config = reduced_config(num_classes=10) if args.reduced else AlexNetConfig()
    peak = matmul_gflops(args.matmul_size, args.repeats)
    rows = []
    for label, jit, policy in (("keras_alexnet (graph)", False, None),
                               ("keras_alexnet (XLA)", True, None),
                               ("keras_alexnet (mixed_bfloat16)", False, "mixed_bfloat16")):
        model, step = keras_step(config, args.batch_size, jit, policy)
        flops = training_flops(model, args.batch_size)
        rows.append((label, *time_steps(step, args.steps, args.repeats), flops))
    # The PyTorch twin is of the paper's network only.
    with_torch = not (args.skip_torch or args.reduced)
    if with_torch:
        rows.append(("PyTorch (same network)", *time_steps(
            torch_step(args.batch_size, args.threads), args.steps, args.repeats), flops))
    print(f"{'reduced' if args.reduced else 'paper'} network, batch {args.batch_size}, "
          f"{args.threads} threads, {args.steps} steps x {args.repeats} repeats; "
          f"{hardware.cpu_model()}; float32 matmul {args.matmul_size}^2: {peak:.1f} GFLOP/s")
    torch_rate = args.batch_size / statistics.median(rows[-1][2]) if with_torch else None
    print(f"{'implementation':31} {'s/step':>8} {'images/s':>9} {'GFLOP/s':>8} "
          f"{'of matmul':>9} {'vs PyTorch':>10} {'first step s':>12}")
    for label, first, times, flops in rows:
        seconds = statistics.median(times)
        rate = args.batch_size / seconds
        versus = f"{rate / torch_rate:.2f}x" if torch_rate else "-"
        print(f"{label:31} {seconds:8.3f} {rate:9.1f} {flops / seconds / 1e9:8.1f} "
              f"{flops / seconds / 1e9 / peak:9.0%} {versus:>10} {first:12.2f}")
    graph_first, xla_first = rows[0][1], rows[1][1]
    float32, xla, bfloat16 = (statistics.median(rows[i][2]) for i in (0, 1, 2))
    saved = float32 - xla
    print(f"\nXLA vs graph step: {float32 / xla:.2f}x (AVX-512: "
          f"{hardware.cpu_has_avx512()}); XLA's first step costs "
          f"{xla_first - graph_first:.2f} s more, " +
          (f"won back after {(xla_first - graph_first) / saved:.0f} steps" if saved > 0 else
           "never won back") +
          f" (fit's default compiles with XLA from {training.XLA_MIN_STEPS:,} planned steps "
          f"on a CPU without AVX-512)")
    print(f"mixed_bfloat16 vs float32 step: {float32 / bfloat16:.2f}x (CPU bfloat16 "
          f"features: {cpu_bf16_support()})")
    if args.fit_steps and not args.reduced:
        fit_times = fit_step_seconds(args.batch_size, args.fit_steps)
        fit_seconds = statistics.median(fit_times)
        print(f"fit end to end on JPEG shards: {args.batch_size / fit_seconds:.1f} images/s "
              f"(median of {len(fit_times)} steps) vs the bare step "
              f"{args.batch_size / float32:.1f} images/s: {float32 / fit_seconds:.0%} "
              f"(goal >= 95%: {'met' if float32 / fit_seconds >= 0.95 else 'not met'})")

if __name__ == "__main__":
    main()
