"""Images/s of one AlexNet training step: keras_alexnet vs the same network in PyTorch.

Also measures, in the same run, a large float32 matmul as the machine's attainable
GFLOP/s, and reports the training step's achieved GFLOP/s as a fraction of it.

    python benchmarks/train_step.py --batch-size 128 --steps 5 --repeats 3

Needs the `bench` extra (`pip install -e ".[bench]"`) for PyTorch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)  # [paper §5]
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians are quoted")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--skip-torch", action="store_true")
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


def time_steps(step, steps: int, repeats: int) -> list[float]:
    """Seconds per step for each repeat, after one warm-up step (tracing, allocation)."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return times


def keras_step(batch_size: int, jit_compile: bool):
    import numpy as np

    from keras_alexnet import PaperSGD, build_model

    model = build_model()
    model.compile(PaperSGD(), "sparse_categorical_crossentropy", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    images = rng.normal(0, 60, (batch_size, 224, 224, 3)).astype("float32")
    labels = rng.integers(0, 1000, batch_size)
    return model, lambda: model.train_on_batch(images, labels)


def matmul_gflops(size: int, repeats: int) -> float:
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    times = time_steps(lambda: matmul().numpy(), 3, repeats)
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


def main() -> None:
    args = parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    peak = matmul_gflops(args.matmul_size, args.repeats)
    rows = []
    for label, jit in (("keras_alexnet (graph)", False), ("keras_alexnet (XLA)", True)):
        model, step = keras_step(args.batch_size, jit)
        flops = training_flops(model, args.batch_size)
        rows.append((label, time_steps(step, args.steps, args.repeats), flops))
    if not args.skip_torch:
        rows.append(("PyTorch (same network)", time_steps(
            torch_step(args.batch_size, args.threads), args.steps, args.repeats), flops))
    print(f"batch {args.batch_size}, {args.threads} threads, {args.steps} steps x "
          f"{args.repeats} repeats; float32 matmul {args.matmul_size}^2: {peak:.1f} GFLOP/s")
    torch_rate = args.batch_size / statistics.median(rows[-1][1]) if not args.skip_torch \
        else None
    print(f"{'implementation':26} {'s/step':>8} {'images/s':>9} {'GFLOP/s':>8} "
          f"{'of matmul':>9} {'vs PyTorch':>10}")
    for label, times, flops in rows:
        seconds = statistics.median(times)
        rate = args.batch_size / seconds
        versus = f"{rate / torch_rate:.2f}x" if torch_rate else "-"
        print(f"{label:26} {seconds:8.3f} {rate:9.1f} {flops / seconds / 1e9:8.1f} "
              f"{flops / seconds / 1e9 / peak:9.0%} {versus:>10}")


if __name__ == "__main__":
    main()
