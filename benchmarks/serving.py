"""Predict over gRPC against the same SavedModel called in-process, and server batching.

Two measurements, each against a baseline from the same run:

1. Latency and throughput of `serving_default` for batches of 1 and 32 encoded
   256x256 JPEGs (the converter's image size): `serving.Client.predict` to a
   `python -m serving serve` child process on loopback, against calling the loaded
   SavedModel's signature in this process.  Rounds alternate between the two so that
   drifting machine load hits both.  Goal: gRPC at most 1.15x in-process at batch 32.
2. Throughput of 16 concurrent clients sending one image per request, to a server with
   `--enable_batching` against the same server without.  Goal: at least 2x.
3. The wall time of `python -m serving query` for one image, the command a user types,
   against `python -c "import tensorflow"` (what the client paid at start-up when it
   loaded TensorFlow).  Goal: under 1 s.

    python benchmarks/serving.py                  # reduced model (the tests' and demo's)
    python benchmarks/serving.py --paper          # the paper's 60.9M-parameter network
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL_NAME = "alexnet"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true",
                        help="the paper's network (224 input, 1000 classes), not the reduced one")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--calls", type=int, nargs=2, default=(40, 8), metavar=("B1", "B32"),
                        help="calls per round at batch 1 and 32 (default 40 8)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="duration of each concurrent-clients run (default 8)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="concurrent-clients runs per server, alternating (default 3)")
    return parser.parse_args(argv)


def make_images(count: int) -> list[bytes]:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((256, 256), Image.BICUBIC), np.float32)
        pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def export_model(workdir: Path, paper: bool) -> Path:
    import keras_alexnet

    config = keras_alexnet.AlexNetConfig() if paper else keras_alexnet.reduced_config()
    model = keras_alexnet.build_model(config)
    (workdir / "labels.txt").write_text(
        "".join(f"n{i:08d}\tclass {i}\n" for i in range(config.num_classes)))
    # The classes above and ImageNet's per-channel mean (no stats.json).
    model.input_contract = keras_alexnet.InputContract.from_data(workdir, config.image_size)
    keras_alexnet.export(model, workdir / "export", MODEL_NAME)
    return workdir / "export" / MODEL_NAME


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_calls(call, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    return latencies


def grpc_vs_in_process(model_dir: Path, images: list[bytes], args) -> list[tuple]:
    import numpy as np
    import tensorflow as tf

    from serving.client import Client
    from serving.server import ServerProcess

    signature = tf.saved_model.load(str(model_dir / "1")).signatures["serving_default"]
    rows = []
    with ServerProcess(model_dir, MODEL_NAME, "--file_system_poll_wait_seconds=0") as server, \
            Client(server.address, MODEL_NAME, timeout=300, retries=0) as client:
        for batch, calls in zip((1, 32), args.calls, strict=True):
            encoded = images[:batch]

            def in_process(encoded=encoded):
                outputs = signature(image_bytes=tf.constant(encoded))
                return {alias: tensor.numpy() for alias, tensor in outputs.items()}

            def over_grpc(encoded=encoded):
                return client.predict({"image_bytes": np.array(encoded, dtype=object)}).outputs

            in_process(), over_grpc()  # warm up both
            local, remote = [], []
            for _ in range(args.rounds):
                local += time_calls(in_process, calls)
                remote += time_calls(over_grpc, calls)
            for name, values in (("in-process", local), ("gRPC", remote)):
                rows.append((batch, name, statistics.median(values) * 1e3,
                             percentile(values, 0.99) * 1e3, batch / statistics.median(values)))
    return rows


def concurrent_throughput(address: str, image: bytes, clients: int, seconds: float) -> float:
    """Images/s from `clients` threads, each with its own channel, one image a request."""
    import numpy as np

    from serving.client import Client

    array = np.array([image], dtype=object)
    counts, errors = [0] * clients, []
    start_line, stop = threading.Barrier(clients + 1), threading.Event()

    def worker(index: int):
        with Client(address, MODEL_NAME, timeout=300, retries=10, backoff_seconds=0.01) as c:
            c.predict({"image_bytes": array})  # connect and warm up before the clock
            start_line.wait()
            while not stop.is_set():
                try:
                    c.predict({"image_bytes": array})
                    counts[index] += 1
                except Exception as error:  # counted, not fatal: reported below
                    errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        print(f"  {len(errors)} failed requests, first: {errors[0]}", file=sys.stderr)
    return sum(counts) / elapsed


def batching_on_vs_off(model_dir: Path, workdir: Path, image: bytes, args) -> dict[str, list]:
    from serving.server import ServerProcess

    params = workdir / "batching_parameters.txt"
    # Batches up to the number of clients, formed while the one batch thread is busy (no
    # timeout): on a few CPU cores this beat longer timeouts and more threads.
    params.write_text(f"max_batch_size {{ value: {args.clients} }}\n"
                      f"batch_timeout_micros {{ value: 0 }}\n"
                      f"max_enqueued_batches {{ value: {args.clients} }}\n"
                      f"num_batch_threads {{ value: 1 }}\n")
    configs = {"batching off": [], "batching on": ["--enable_batching=true",
                                                   f"--batching_parameters_file={params}"]}
    results = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, flags in configs.items():
            with ServerProcess(model_dir, MODEL_NAME, "--file_system_poll_wait_seconds=0",
                               *flags) as server:
                results[name].append(
                    concurrent_throughput(server.address, image, args.clients, args.seconds))
    return results


def query_command(model_dir: Path, workdir: Path, image: bytes, repeats: int) -> dict:
    """Median wall seconds of the query command and of importing TensorFlow, alternating."""
    import subprocess

    from serving.server import ServerProcess

    path = workdir / "photo.jpg"
    path.write_bytes(image)
    times = {"python -m serving query (1 image)": [], "python -c 'import tensorflow'": []}
    with ServerProcess(model_dir, MODEL_NAME, "--file_system_poll_wait_seconds=0") as server:
        commands = [[sys.executable, "-m", "serving", "query", "--server", server.address,
                     str(path)], [sys.executable, "-c", "import tensorflow"]]
        for _ in range(repeats):
            for name, command in zip(times, commands, strict=True):
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        workdir = Path(tmp)
        model_dir = export_model(workdir, args.paper)
        images = make_images(32)
        rows = grpc_vs_in_process(model_dir, images, args)
        batching = batching_on_vs_off(model_dir, workdir, images[0], args)
        start_up = query_command(model_dir, workdir, images[0], args.repeats)

    model = "paper AlexNet (224, 1000 classes)" if args.paper else "reduced AlexNet (64, 10)"
    print(f"\n{model}, {os.cpu_count()} CPU cores, 256x256 JPEG inputs\n")
    print("| batch | path | p50 ms | p99 ms | images/s | p50 vs in-process |")
    print("|---:|---|---:|---:|---:|---:|")
    baseline = {}
    for batch, name, p50, p99, rate in rows:
        baseline.setdefault(batch, p50)
        print(f"| {batch} | {name} | {p50:.2f} | {p99:.2f} | {rate:.0f} | "
              f"{p50 / baseline[batch]:.2f}x |")
    off = statistics.median(batching["batching off"])
    on = statistics.median(batching["batching on"])
    print(f"\n{args.clients} concurrent clients, 1 image a request, median of {args.repeats} "
          f"runs of {args.seconds:.0f} s\n")
    print("| server | images/s | vs batching off |")
    print("|---|---:|---:|")
    print(f"| batching off | {off:.0f} | 1.00x |")
    print(f"| batching on | {on:.0f} | {on / off:.2f}x |")
    print(f"\nwall seconds, median of {args.repeats}\n")
    print("| command | seconds |")
    print("|---|---:|")
    for name, seconds in start_up.items():
        print(f"| `{name}` | {seconds:.2f} |")
    query_seconds = next(iter(start_up.values()))
    ratio32 = rows[3][2] / rows[2][2]
    # One stream's gain from batching in-process bounds what server batching can add when
    # unbatched requests already keep every core busy.
    print(f"\nin-process images/s, batch 32 over batch 1: {rows[2][4] / rows[0][4]:.2f}x "
          f"(a bound on the gain from batching on this machine)")
    print(f"\ngoals: gRPC/in-process at batch 32 = {ratio32:.2f}x (goal <= 1.15x: "
          f"{'met' if ratio32 <= 1.15 else 'NOT met'}); batching on/off = {on / off:.2f}x "
          f"(goal >= 2x: {'met' if on / off >= 2 else 'NOT met'}); query command = "
          f"{query_seconds:.2f} s (goal < 1 s: {'met' if query_seconds < 1 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
