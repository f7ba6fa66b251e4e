"""CPU inference speed of the paper's network in each runtime a user could serve it with.

The same weights (one seeded paper network, exported once per format by
`keras_alexnet.export` and `keras_alexnet.portable.export_portable`) run on 0-255 RGB
crops in:
  - TensorFlow: the SavedModel's `predict_images` signature (what TF Serving runs);
  - ONNX Runtime, OpenVINO and LiteRT (the interpreter, with its XNNPACK delegate);
  - the Keras model itself in a `tf.function`, plain and with XLA (what TensorFlow
    could do without the SavedModel's signature);
each with every core.  Per runtime: batch-1 latency (p50, p99) and batch-32 images/s
(medians), timed in rounds over the runtimes in turn, beside large float32 matmuls
(`tf.matmul` and numpy's BLAS, before and after the runtimes, the largest quoted)
measured in the same run as the machine's attainable GFLOP/s, and the network's
forward FLOPs per image.  Before timing, each runtime's probabilities are checked
against the SavedModel's.

    python benchmarks/inference.py --latency-runs 100 --rounds 5

Needs the `onnx`, `openvino` and `litert` extras (`pip install -e ".[onnx,openvino,litert]"`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# The repository first: this directory's serving.py must not hide the serving package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_step import matmul_gflops, time_steps, training_flops

FORMATS = ("onnx", "openvino", "litert")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-runs", type=int, default=100, help="timed batch-1 calls")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds over the runtimes in turn; each times latency-runs / "
                             "rounds batch-1 calls and one batch call (medians quoted)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the exports here and reuse them on the next run "
                             "(the network is seeded, so the weights are the same)")
    return parser.parse_args()


def paper_network():
    import keras_alexnet
    from keras_alexnet.contract import InputContract

    # Zero biases and a wider spread than the paper's N(0, 0.01) with biases of 1, whose
    # untrained output hardly depends on the input: the check of each runtime against the
    # SavedModel (max diff) then means something.  The speed is the same.
    model = keras_alexnet.build_model(devices=("", ""), seed=0, biases_one=(),
                                      init_stddev=0.03)
    classes = tuple((f"n{i:08d}", f"class {i}") for i in range(1000))
    model.input_contract = InputContract(classes, 224, 256, "channel", (124.0, 116.0, 104.0))
    return model


def export_all(model, workdir: Path) -> dict[str, Path]:
    """Each format's artifact (version 1 under `workdir/<format>`), written unless there."""
    import keras_alexnet
    from keras_alexnet.portable import FORMATS as PORTABLE
    from keras_alexnet.portable import export_portable

    paths = {"saved_model": workdir / "saved_model" / "alexnet" / "1"}
    paths.update({name: workdir / name / "alexnet" / "1" / PORTABLE[name].file
                  for name in FORMATS})
    for name, path in paths.items():
        if path.exists():
            continue
        start = time.perf_counter()
        if name == "saved_model":
            keras_alexnet.export(model, workdir / name, version=1)
        else:
            export_portable(model, workdir / name, version=1, format=name)
        print(f"exported {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return paths


def keras_runners(model) -> dict[str, Callable]:
    """The Keras model itself in a `tf.function`, plain and XLA-compiled: where the
    SavedModel's time goes (its signature's extras, or TensorFlow's kernels)."""
    import tensorflow as tf

    from keras_alexnet.portable import pixels_model

    network = pixels_model(model, model.input_contract)
    plain = tf.function(lambda images: network(images, training=False))
    xla = tf.function(lambda images: network(images, training=False), jit_compile=True)
    return {"TensorFlow, Keras model (tf.function)": lambda images: plain(images).numpy(),
            "TensorFlow, Keras model (XLA)": lambda images: xla(images).numpy()}


def runners(paths: dict[str, Path], threads: int) -> dict[str, Callable]:
    """Runtime name -> a function of a float32 NHWC batch giving its probabilities."""
    import numpy as np
    import onnxruntime
    import openvino
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    signature = tf.saved_model.load(str(paths["saved_model"])).signatures["predict_images"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(paths["onnx"]), options,
                                           providers=["CPUExecutionProvider"])
    # float32, as every other runtime here: on a CPU with AVX512_BF16 or AMX, OpenVINO
    # computes in bfloat16 unless told.
    compiled = openvino.Core().compile_model(
        str(paths["openvino"]), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                        "INFERENCE_PRECISION_HINT": "f32"})
    interpreters = {}

    def litert(images):
        # One interpreter per batch size: resizing reallocates every tensor.
        if len(images) not in interpreters:
            interpreter = Interpreter(model_path=str(paths["litert"]), num_threads=threads)
            interpreter.resize_tensor_input(0, images.shape)
            interpreter.allocate_tensors()
            interpreters[len(images)] = interpreter
        interpreter = interpreters[len(images)]
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return {
        f"TensorFlow {tf.__version__} SavedModel": lambda images: signature(
            images=tf.constant(images))["probabilities"].numpy(),
        f"ONNX Runtime {onnxruntime.__version__}": lambda images: session.run(
            None, {"images": images})[0],
        f"OpenVINO {openvino.__version__.split('-')[0]}": lambda images: np.asarray(
            compiled(images)[0]),
        "LiteRT (ai-edge-litert)": litert,
    }


def numpy_matmul_gflops(size: int, repeats: int) -> float:
    """numpy's float32 matmul (its BLAS): on CPUs without AVX-512 it beats TensorFlow's."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((size, size), np.float32)
    return 2 * size**3 / statistics.median(time_steps(lambda: a @ a, 1, repeats)) / 1e9


def attainable_gflops(size: int) -> dict[str, float]:
    return {"tf.matmul": matmul_gflops(size, 3), "numpy": numpy_matmul_gflops(size, 3)}


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    # Before the runtimes start their thread pools, and again after: the larger is the
    # attainable rate (others' work on a shared machine only lowers it).
    peaks = [attainable_gflops(args.matmul_size)]
    model = paper_network()
    flops = training_flops(model, 1) / 3  # the forward pass alone
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        run = {**runners(export_all(model, workdir), args.threads), **keras_runners(model)}

        rng = np.random.default_rng(0)
        batch = rng.uniform(0, 255, (args.batch_size, 224, 224, 3)).astype(np.float32)
        reference = next(iter(run.values()))(batch[:4])
        differences = {name: float(np.abs(infer(batch[:4]) - reference).max())
                       for name, infer in run.items()}
        # Rounds in turn, so that a burst of other work on the machine falls on every
        # runtime alike; each round warms up first (time_steps).
        latencies = {name: [] for name in run}
        batch_seconds = {name: [] for name in run}
        for round_ in range(args.rounds):
            for name, infer in run.items():
                latencies[name] += time_steps(lambda infer=infer: infer(batch[:1]), 1,
                                              args.latency_runs // args.rounds)
                batch_seconds[name] += time_steps(lambda infer=infer: infer(batch), 1, 1)
            print(f"round {round_ + 1} of {args.rounds}", flush=True)
        rows = [(name, differences[name], statistics.median(latencies[name]),
                 statistics.quantiles(latencies[name], n=100)[98],
                 args.batch_size / statistics.median(batch_seconds[name])) for name in run]
        peaks.append(attainable_gflops(args.matmul_size))
    peak = max(max(rates.values()) for rates in peaks)

    from keras_alexnet.hardware import cpu_model

    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores, {args.threads} threads; "
          f"load average at the end: {os.getloadavg()[0]:.1f}")
    measured = ", ".join(f"{name} {peaks[0][name]:.1f} / {peaks[1][name]:.1f}"
                         for name in peaks[0])
    print(f"float32 matmul {args.matmul_size}^2, GFLOP/s before / after the runtimes: "
          f"{measured}; the limit quoted: {peak:.1f}.  The network: {flops / 1e9:.2f} "
          f"GFLOP per image (forward multiply-adds x2)\n")
    fastest = max(row[4] for row in rows)
    print(f"| runtime | max diff vs SavedModel | batch 1 p50 ms | p99 ms | "
          f"batch {args.batch_size} images/s | GFLOP/s | of matmul | vs fastest |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, difference, p50, p99, rate in rows:
        print(f"| {name} | {difference:.1e} | {p50 * 1e3:.1f} | {p99 * 1e3:.1f} | "
              f"{rate:.1f} | {rate * flops / 1e9:.1f} | {rate * flops / 1e9 / peak:.0%} | "
              f"{rate / fastest:.2f}x |")


if __name__ == "__main__":
    main()
