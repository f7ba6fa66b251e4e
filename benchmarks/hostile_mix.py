"""Good requests timed while a bounded hostile mix runs against the same server.

For --seconds, against one `python -m serving serve --rest_api_port=...` child:

- --idle connections (200) opened to the REST port and left silent, reopened when the
  server drops them;
- --stalls connections (20) sending a request's headers one byte a second;
- --hostile threads (2) sending, in a loop, every malformed request of
  tests/serving/test_hostile.py's table and the 50-byte gRPC Predict that declares 16M
  strings, each answer checked;

while one client sends good requests, REST and gRPC Predict of one image in turn, and
times them.  The same client runs alone first, for the baseline.  Goal: no good request
fails; the p99 of good requests and the server's peak RSS are reported.

    python benchmarks/hostile_mix.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.client
import json
import os
import socket
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
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="duration of the baseline and of the mix (default 30)")
    parser.add_argument("--idle", type=int, default=200, help="idle connections (default 200)")
    parser.add_argument("--stalls", type=int, default=20,
                        help="connections sending a byte a second (default 20)")
    parser.add_argument("--hostile", type=int, default=2,
                        help="threads sending malformed requests (default 2)")
    return parser.parse_args(argv)


@dataclasses.dataclass
class MixResult:
    latencies: list[float]  # seconds, good requests
    failures: list[str]  # good requests that failed, and hostile ones answered wrongly
    hostile_requests: int = 0
    peak_rss: int = 0  # bytes, the server's
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def row(self, name: str) -> str:
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return (f"| {name} | {len(ordered)} | {len(self.failures)} | "
                f"{statistics.median(ordered) * 1e3:.1f} | {p99 * 1e3:.1f} | "
                f"{self.hostile_requests} | {self.peak_rss / 2**20:.0f} |")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _idle(port: int, count: int, stop: threading.Event) -> None:
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    while not stop.wait(1.0):
        for index, sock in enumerate(sockets):
            try:
                dropped = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                dropped = False
            if dropped:
                sock.close()
                sockets[index] = socket.create_connection(("127.0.0.1", port))
    for sock in sockets:
        sock.close()


def _stall(port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(f"POST /v1/models/{MODEL_NAME}:predict HTTP/1.1\r\nX-Slow: ".encode())
            try:
                while not stop.wait(1.0):
                    sock.sendall(b"a")
            except OSError:  # the server's timeout closed it: open another
                pass


def _hostile(server, stop: threading.Event, result: MixResult) -> None:
    import grpc
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tests.serving.test_hostile import HOSTILE, exchange

    huge = predict_pb2.PredictRequest()
    huge.model_spec.name = MODEL_NAME
    huge.inputs["image_bytes"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[b"x"],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": 16_777_216}])))
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        sent = 0
        while not stop.is_set():
            for name, (data, status, _) in HOSTILE.items():
                try:
                    got = exchange(server.rest_port, data)[0]
                except (OSError, http.client.HTTPException) as error:
                    got = repr(error)
                if got != status:
                    result.failures.append(f"hostile {name}: {got}")
                sent += 1
            try:
                stub.Predict(huge, timeout=30)
                result.failures.append("hostile 16M strings: served")
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    result.failures.append(f"hostile 16M strings: {error.code()}")
            sent += 1
    with result.lock:
        result.hostile_requests += sent


def _good(server, image: bytes, seconds: float, result: MixResult) -> None:
    import numpy as np

    from serving.client import Client

    body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]})
    rest = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    with Client(server.address, MODEL_NAME, timeout=60, retries=0) as client:
        end = time.monotonic() + seconds
        turn = 0
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                if turn % 2:
                    client.predict({"image_bytes": np.array([image], dtype=object)})
                else:
                    rest.request("POST", f"/v1/models/{MODEL_NAME}:predict", body)
                    response = rest.getresponse()
                    response.read()
                    if response.status != 200:
                        raise RuntimeError(f"REST status {response.status}")
                result.latencies.append(time.perf_counter() - start)
            except Exception as error:  # every failure of a good request is the result
                result.failures.append(f"good {'gRPC' if turn % 2 else 'REST'}: {error!r}")
                rest.close()
            turn += 1
    rest.close()


def run_mix(server, image: bytes, seconds: float, idle: int = 200, stalls: int = 20,
            hostile: int = 2) -> MixResult:
    """Good requests for `seconds` to `server` (a ServerProcess with `rest_port`),
    under the hostile mix (none with `idle=stalls=hostile=0`)."""
    result = MixResult([], [])
    stop = threading.Event()
    threads = [threading.Thread(target=_idle, args=(server.rest_port, idle, stop))] \
        if idle else []
    threads += [threading.Thread(target=_stall, args=(server.rest_port, stop))
                for _ in range(stalls)]
    threads += [threading.Thread(target=_hostile, args=(server, stop, result))
                for _ in range(hostile)]
    for thread in threads:
        thread.start()

    def sample_rss():
        while not stop.wait(0.1):
            result.peak_rss = max(result.peak_rss, _rss(server.process.pid))

    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    try:
        time.sleep(1.0 if threads else 0)  # the mix under way first
        _good(server, image, seconds, result)
    finally:
        stop.set()
        for thread in [*threads, sampler]:
            thread.join()
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    from serving.server import ServerProcess
    from tests.serving.exported_model import make_exported_model
    from tests.serving.test_rest import free_port

    with tempfile.TemporaryDirectory() as workdir:
        exported = make_exported_model(Path(workdir))
        image = next(iter(exported.images.values()))
        port = free_port()
        with ServerProcess(exported.model_dir, MODEL_NAME, f"--rest_api_port={port}") as server:
            server.rest_port = port
            run_mix(server, image, 2.0, 0, 0, 0)  # warm up
            alone = run_mix(server, image, args.seconds, 0, 0, 0)
            mixed = run_mix(server, image, args.seconds, args.idle, args.stalls, args.hostile)
            tail = list(server.output)
    print("| good requests | count | failed | p50 ms | p99 ms | hostile requests | "
          "server peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(alone.row("alone"))
    print(mixed.row(f"under the mix ({args.idle} idle, {args.stalls} stalling, "
                    f"{args.hostile} hostile threads)"))
    for failure in (alone.failures + mixed.failures)[:20]:
        print("FAILED:", failure)
    logged = [line for line in tail if "Traceback" in line or "Error" in line]
    print(f"server log lines about errors: {len(logged)}")
    return 1 if alone.failures or mixed.failures or logged else 0


if __name__ == "__main__":
    sys.exit(main())
